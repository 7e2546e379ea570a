"""Every event the product appends, one pydantic model each: the events are the truth.

Read this module top to bottom to know what a notice's stream (``notice-<id>``) and a customer's
stream (``customer-<id>``) can hold. Each model names its event type (:attr:`Event.type`) and its
schema version (:attr:`Event.version`) as class data; its docstring says when the event is
appended and what it proves; each field says what it holds, and a field marked :data:`Sealed`
holds text sealed with the customer's key for the place ``"<event type>.<field>"``
(``noticeflow.crypto.Field.event``): erasing the customer deletes the key, the text reads
``[erased]``, and the hash chain, which covers the ciphertext, still verifies.

* **Stored form.** :meth:`Event.data` is the JSON object stored as the event's ``data``, byte for
  byte what the product wrote before these models existed (the hash chain covers its canonical
  JSON, and an idempotent re-append compares it): instants as ISO 8601 in UTC with ``+00:00``
  (:data:`Instant`, the event store's form), except the instants that reached the event through a
  Temporal payload, which keep the form pydantic gave them there (:data:`WireInstant`, ``Z``); a
  field that may be absent (default ``None``) is left out when it is ``None``.
* **Strict and lenient.** Unknown fields and unknown types are refused (:class:`EventError`).
  Every payload an earlier version stored is accepted: a schema change that bumped the version has
  an upcaster (:data:`UPCASTERS`, applied by :func:`parse` and by the event store on read); a field
  added without a bump is optional, and its description says since when it is written.
* **Legacy types** (:attr:`Event.legacy`) are no longer appended; old streams still hold them.

``python -m noticeflow.domain.events`` prints ``docs/events.md`` (:func:`events_markdown`).
"""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import Enum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
)

from noticeflow.domain.errors import describe_validation_error
from noticeflow.domain.notice import NoticeSpec
from noticeflow.domain.rules import Authorisation, Delivery, Outcome, Phase, Verdict


class _SealedMarker:
    """The mark of a field sealed per customer (``Annotated[str, Sealed]``)."""

    def __repr__(self) -> str:
        return "Sealed"


Sealed = _SealedMarker()


def _utc_iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


# An instant as the event store writes a datetime: ISO 8601 in UTC, "+00:00" (eventstore.canonical).
Instant = Annotated[AwareDatetime, PlainSerializer(_utc_iso, return_type=str, when_used="json")]
# An instant that reached the event inside a Temporal payload, as pydantic wrote it there (UTC as
# "Z", another offset kept): the form the event has always stored for it.
WireInstant = AwareDatetime


class EventError(ValueError):
    """An event that no model accepts: the message names the type and every problem."""


class UnknownEventType(EventError):
    pass


class InvalidEvent(EventError):
    pass


class _Shape(BaseModel):
    """A stored JSON object: unknown fields refused; a field that may be absent is left out when
    ``None``."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_by_name=True, serialize_by_alias=True
    )

    @model_serializer(mode="wrap")
    def _leave_out_absent(self, handler: SerializerFunctionWrapHandler) -> Any:
        dumped = handler(self)
        if isinstance(dumped, dict):
            for name, info in type(self).model_fields.items():
                key = info.alias or name
                if not info.is_required() and info.default is None and dumped.get(key, 0) is None:
                    del dumped[key]
        return dumped

    @classmethod
    def sealed_fields(cls) -> tuple[str, ...]:
        """The stored names of the fields sealed per customer; nested ones as ``outer[].inner``."""
        found: list[str] = []
        for name, info in cls.model_fields.items():
            key = info.alias or name
            if any(meta is Sealed for meta in info.metadata):
                found.append(key)
            nested = _nested_shape(info.annotation)
            if nested is not None:
                found += [f"{key}[].{inner}" for inner in nested.sealed_fields()]
        return tuple(found)


def _nested_shape(annotation: Any) -> type[_Shape] | None:
    for arg in typing.get_args(annotation) or (annotation,):
        if isinstance(arg, type) and issubclass(arg, _Shape):
            return arg
        inner = _nested_shape(arg) if typing.get_args(arg) else None
        if inner is not None:
            return inner
    return None


class Event(_Shape):
    """One event's data. ``type`` and ``version`` are class data, never stored in ``data``."""

    type: ClassVar[str]
    version: ClassVar[int] = 1
    legacy: ClassVar[bool] = False  # no longer appended: only old streams hold it

    def data(self) -> dict[str, Any]:
        """The JSON object stored as the event's ``data``."""
        dumped: dict[str, Any] = self.model_dump(mode="json")
        return dumped


# --- fields used by many events -------------------------------------------------------------------

CustomerId = Annotated[str, Field(description="The customer's id.")]
ReceiptId = Annotated[str, Field(description="The receipt of the action in the intake.")]


# --- the notice ---------------------------------------------------------------------------------


class NoticeCreated(Event):
    """A notice was written (``notice create``, the web): the first event of its stream. Proves the
    notice's exact content and text (its SHA-256) from the start, and who wrote it (four eyes:
    the author may not approve)."""

    type: ClassVar[str] = "notice_created"
    spec: NoticeSpec = Field(description="The notice as written (its file's fields, validated).")
    author: str = Field(description="Who wrote the notice (a user name, not a customer's).")
    text_sha256: str = Field(description="SHA-256 of the exact notice text rendered from `spec`.")


class PhaseChanged(Event):
    """The notice entered a phase (or a postponement moved its dates within one): appended by the
    workflow at each step. Proves when the notice was where, and its dates at that moment."""

    type: ClassVar[str] = "phase_changed"
    phase: Phase = Field(description="The phase entered.")
    effective_at: Instant = Field(description="The effective date as it stands now.")
    window_closes_at: Instant | None = Field(
        description="The latest customer deadline once known (null before the mail went out)."
    )


class NoticeApproved(Event):
    """A second person approved the notice (four eyes, rule 6: every projected deadline falls
    before the effective date). Sending starts after it."""

    type: ClassVar[str] = "notice_approved"
    by: str | None = Field(
        default=None,
        description="Who approved (a user name; read from the receipt, absent if it names none).",
    )
    audience_size: int = Field(description="How many customers the audience selected.")
    receipt_id: str | None = Field(
        default=None, description="The approval's receipt (absent for an approval by a raw signal)."
    )


class NoticePostponed(Event):
    """The effective date moved later. In draft the workflow appends it; once the notice was mailed
    the change mail appends it (with the new text's hash) before every reached customer is told.
    Customers' deadlines do not move."""

    type: ClassVar[str] = "notice_postponed"
    by: str | None = Field(default=None, description="Who postponed (a user name).")
    reason: str | None = Field(default=None, description="Why, when the receipt gave a reason.")
    from_: WireInstant = Field(alias="from", description="The effective date before.")
    to: WireInstant = Field(description="The new effective date.")
    receipt_id: str | None = Field(default=None, description="The postponement's receipt.")
    text_sha256: str | None = Field(
        default=None,
        description="SHA-256 of the notice text as postponed (written by the change mail, since"
        " the intake of record).",
    )


class NoticeCancelled(Event):
    """The notice was cancelled: nobody is switched on under it any more (customers already
    switched on keep their verdict). In draft the workflow appends it; once mailed, the change mail
    appends it before every reached customer is told."""

    type: ClassVar[str] = "notice_cancelled"
    by: str | None = Field(default=None, description="Who cancelled (a user name).")
    reason: str | None = Field(default=None, description="Why (the operator's words).")
    phase: str = Field(description="The phase the notice was in when cancelled.")
    receipt_id: str | None = Field(default=None, description="The cancellation's receipt.")
    text_sha256: str | None = Field(
        default=None, description="SHA-256 of the notice text (written by the change mail)."
    )


class CustomerTerms(_Shape):
    """One frozen customer's terms in the audience snapshot (its timezone is in ``timezones``)."""

    region: str = Field(description="The customer's region.")
    services: list[str] = Field(description="The services the customer uses.")
    window_days: int | None = Field(description="The contract's objection window, if it sets one.")
    window_unit: str | None = Field(description="calendar or business days (null: calendar).")
    country: str | None = Field(description="The country whose public holidays count, if any.")
    authorisation: Authorisation | None = Field(
        default=None,
        description="What the customer's contract asks before a sub-processor is used for it:"
        " specific (silence is refusal) or dora (approve, object or request changes); absent:"
        " general (silence is deemed acceptance).",
    )
    language: str | None = Field(
        default=None,
        description="The language the customer is mailed in, a BCP 47 tag (de, de-AT); absent:"
        " en (English).",
    )


def frozen_terms_row(row: dict[str, Any]) -> dict[str, Any]:
    """One customer's terms as ``snapshot_sha256`` hashes them: a general authorisation and the
    English language (the defaults) left out, so an audience frozen before authorisation modes
    and languages hashes as it did. The snapshot (application/sending.py) and its check
    (evidence.py) both use this."""
    if row.get("authorisation") == "general":
        del row["authorisation"]
    if row.get("language") == "en":
        del row["language"]
    return row


AUDIENCE_PART_SIZE = 10_000
"""The most customers one ``audience_snapshotted`` event holds: a larger audience is frozen as
several parts, appended in one transaction, so no event grows with the audience (at a million
customers one event would be ~140 MB of JSON, near PostgreSQL's limit for a jsonb value)."""


class AudienceSnapshotted(Event):
    """The audience was frozen as sending started (rule 3): these customers, with their contacts and
    terms as they stood, are the notice's recipients, whatever changes later.

    An audience larger than 10,000 customers is frozen as ``parts`` events, appended together
    in one transaction, each holding the next customers in the database's id order (``part`` 1,
    2, ...; no customer in two parts); ``customers`` is the whole audience's size in every part,
    ``snapshot_sha256`` the hash of that part's own rows."""

    type: ClassVar[str] = "audience_snapshotted"
    customers: int = Field(description="How many customers were frozen (all parts together).")
    snapshot_sha256: str = Field(
        description="SHA-256 of the frozen rows (ids, regions, services, timezones, windows) this"
        " event holds (in a part: that part's rows)."
    )
    customer_ids: list[str] = Field(
        description="The frozen customers' ids, sorted (in a part: that part's customers)."
    )
    part: int | None = Field(
        default=None,
        ge=1,
        description="Which part of the audience this is, from 1 (absent: the whole audience in"
        " one event).",
    )
    parts: int | None = Field(
        default=None, ge=1, description="How many parts the audience was frozen in."
    )
    after: str | None = Field(
        default=None,
        description="In a part after the first: the last customer id of the part before (the"
        " part holds the customers after it, up to its own last).",
    )

    def data(self) -> dict[str, Any]:
        """Without the part fields when the audience is one event: stored as before parts."""
        dumped = super().data()
        for name in ("part", "parts", "after"):
            if dumped.get(name) is None:
                dumped.pop(name, None)
        return dumped

    timezones: dict[str, str] | None = Field(
        default=None,
        description="Each customer's timezone by id (written since the read models use it).",
    )
    terms: dict[str, CustomerTerms] | None = Field(
        default=None,
        description="Each customer's frozen terms by id (written since the audience is a"
        " projection of this event: the recipients' rows are built from it).",
    )


# --- delivery -----------------------------------------------------------------------------------


class ContactAttempt(_Shape):
    """One contact's outcome in a delivery event (schema version 2)."""

    position: int = Field(description="The contact's position in the customer's list.")
    message_id: str = Field(description="The message's Message-ID (keyed: identifies nobody).")
    status: str = Field(description="The ledger status: accepted, failed, ...")
    smtp_code: int | None = Field(description="The SMTP reply code (null: no reply).")
    smtp_status: str | None = Field(description="The enhanced status code (5.1.1), if any.")
    smtp_text: Annotated[str | None, Sealed] = Field(
        description="The reply's text, which may echo the address (null without the customer's"
        " key; an upcast version-1 event carries it as version 1 stored it, in clear)."
    )
    at: Instant = Field(description="When the outcome was known.")
    text_sha256: str | None = Field(description="SHA-256 of the notice text that message carried.")


class _Delivery(Event):
    version: ClassVar[int] = 2
    customer_id: CustomerId
    kind: str = Field(description='"notice" for the first mailing; a resend\'s step key otherwise.')
    delivered_at: Instant | None = Field(
        description="When the customer's clock started: the first accepted message, never before"
        " the workflow asked for the mail (null when undelivered)."
    )
    deadline: Instant | None = Field(
        description="The customer's objection deadline counted from `delivered_at` (null when"
        " undelivered, and for a removal, which has no window)."
    )
    clock_started: bool = Field(
        description="Whether this delivery started the customer's window (false for a resend to"
        " a customer already delivered, whose deadline does not move)."
    )
    text_sha256: str | None = Field(
        description="The notice text version the customer received (rule 12)."
    )
    contacts: list[ContactAttempt] = Field(description="Each contact's outcome.")


class NoticeDelivered(_Delivery):
    """At least one of the customer's contacts accepted the notice mail (rule 4): the customer's
    objection window runs from `delivered_at`. Appended per customer, a batch per transaction."""

    type: ClassVar[str] = "notice_delivered"


class NoticeUndelivered(_Delivery):
    """No contact of the customer accepted the notice mail (every one failed for good): the
    customer is never switched on by silence; ops may resend or exclude."""

    type: ClassVar[str] = "notice_undelivered"


class ReminderSent(Event):
    """A reminder mail went to a customer who had not acted, before its deadline."""

    type: ClassVar[str] = "reminder_sent"
    customer_id: CustomerId
    deadline: Instant = Field(description="The customer's deadline the reminder named.")


# --- customers' actions ---------------------------------------------------------------------------


class ObjectionReceived(Event):
    """A customer objected (rule 7), judged by its receipt time: a case is opened, and while a
    timely case is open the sub-processor is not used for the customer."""

    type: ClassVar[str] = "objection_received"
    customer_id: CustomerId
    idempotency_key: str = Field(description="The case's key (the receipt id since the intake).")
    receipt_id: str | None = Field(
        default=None, description="The objection's receipt (written since the intake of record)."
    )
    timely: bool = Field(description="Received before the customer's deadline (or delivery).")
    channel: str = Field(description="How it came: link, web, api, cli, reply, temporal, demo.")
    by: Annotated[str, Sealed] = Field(description="Who objected, in the customer's words.")
    reason: Annotated[str, Sealed] = Field(description="The objection's text.")
    received_at: Instant = Field(description="The receipt time, which decides timeliness.")
    deadline: Instant | None = Field(description="The customer's deadline then (null: none yet).")
    request: Literal["changes"] | None = Field(
        default=None,
        description="changes: a request for modifications (a DORA contract's third answer), a"
        " case like an objection that holds activation until ops resolve it; absent: an"
        " objection.",
    )


class ObjectionResolved(Event):
    """Ops closed every open case of one customer with an outcome (withdrawn: the customer may be
    switched on; terminated or excluded: it stays off). Also appended when an exclusion closes
    open cases (outcome ``excluded``)."""

    type: ClassVar[str] = "objection_resolved"
    customer_id: CustomerId
    receipt_id: str | None = Field(
        default=None, description="The resolution's receipt (written since the intake of record)."
    )
    outcome: Outcome = Field(description="How the cases ended.")
    by: Annotated[str, Sealed] = Field(description="Who resolved them.")
    note: Annotated[str, Sealed] = Field(description='The resolution note ("" when none).')
    objections: list[str] = Field(description="The idempotency keys of the cases closed.")


class _OptIn(Event):
    customer_id: CustomerId
    receipt_id: str | None = Field(
        default=None, description="The action's receipt (written since the intake of record)."
    )
    by: Annotated[str, Sealed] = Field(description="Who acted, in the customer's words.")
    channel: str = Field(description="How it came: link, web, api, cli, temporal, demo.")
    received_at: Instant | None = Field(
        default=None, description="The receipt time (written since the intake of record)."
    )


class OptInRecorded(_OptIn):
    """A customer opted in to an opt-in notice (rule 8): it may be switched on from the effective
    date. Only an opt-in switches a customer on under an opt-in notice."""

    type: ClassVar[str] = "opt_in_recorded"


class OptInRevoked(_OptIn):
    """A customer revoked its opt-in (rule 8), before or after activation: it is switched off."""

    type: ClassVar[str] = "opt_in_revoked"


class CustomerExcluded(Event):
    """Ops settled a customer without activation (e.g. undelivered for good): it is never switched
    on under this notice, and its open cases close with it."""

    type: ClassVar[str] = "customer_excluded"
    customer_id: CustomerId
    receipt_id: ReceiptId
    by: Annotated[str, Sealed] = Field(description="Who excluded the customer.")
    reason: Annotated[str, Sealed] = Field(description="Why.")
    delivery: Delivery = Field(description="The customer's delivery state when excluded.")


class ActionRejected(Event):
    """An action was refused (invalid, too late, unknown customer, a reused idempotency key...): the
    refusal is evidence too. Ids and our own words only: what was sent stays in the intake."""

    type: ClassVar[str] = "action_rejected"
    receipt_id: ReceiptId
    action: str = Field(description="The action asked for (object, opt_in, approve, ...).")
    customer_id: str | None = Field(
        description="The customer named, when it looked like an id (null otherwise)."
    )
    channel: str = Field(description="How it came.")
    reason: str = Field(description="Why it was refused, in our words.")
    received_at: Instant = Field(description="The receipt time.")


# --- activation -----------------------------------------------------------------------------------


class DeemedAcceptance(Event):
    """A customer's deadline passed without a timely objection on an objection notice: its silence
    counts as acceptance (occurred at the deadline), and it is switched on."""

    type: ClassVar[str] = "deemed_acceptance"
    customer_id: CustomerId
    deadline: Instant = Field(description="The deadline that passed.")


class _Switch(Event):
    customer_id: CustomerId
    subprocessor: str = Field(description="The sub-processor (as the notice names it).")


class SubprocessorEnabled(_Switch):
    """The sub-processor is now used for the customer (rule 9: effective date reached, window
    passed, no open timely case; where consent is required — an opt-in notice, a specific
    contract — opted in)."""

    type: ClassVar[str] = "subprocessor_enabled"
    because: str | None = Field(
        default=None,
        description="The ground: deemed_acceptance, opted_in (consent where it was required: an"
        " opt-in notice or a specific contract), approved (a dora contract's approval),"
        " objection_withdrawn (always written since switches had one helper).",
    )


class SubprocessorDisabled(_Switch):
    """The sub-processor is no longer used for a customer it was on for (a revoked opt-in, a case
    upheld or judged after the switch-on, an exclusion)."""

    type: ClassVar[str] = "subprocessor_disabled"
    because: str = Field(description="Why: the verdict, the case's outcome, opt_in_revoked, ...")


class CustomerSettled(Event):
    """The customer's outcome under the notice is final (switched on, or off for good): activation
    rounds no longer decide it, until an action about it unsettles it."""

    type: ClassVar[str] = "customer_settled"
    customer_id: CustomerId
    verdict: Verdict = Field(description="The verdict that settled it.")


# --- the customer's own stream ------------------------------------------------------------------


class CustomerErased(Event):
    """A customer was erased for good (stream ``customer-<id>``): its key was deleted, so every
    sealed value of it, in records and events, reads ``[erased]``; it is never imported again."""

    type: ClassVar[str] = "customer_erased"
    customer_id: CustomerId
    method: str | None = Field(
        default=None, description="How (written since crypto-shredding; absent before it)."
    )
    erased_records: int | None = Field(
        default=None, description="Legacy (before crypto-shredding): how many records were blanked."
    )


# --- the public list's baseline (stream ``subprocessors``) ---------------------------------------


class BaselineEntry(_Shape):
    """One sub-processor of a baseline, with the fields a notice gives it (no personal data)."""

    subprocessor: str = Field(description="The sub-processor's legal name, as notices name it.")
    subprocessor_location: str = Field(description="Where it processes the data.")
    purpose: str = Field(description="What it does for the vendor.")
    data_categories: list[str] = Field(description="The categories of personal data it gets.")
    services: list[str] = Field(description="The vendor's services it is used for.")
    transfer_mechanism: str = Field(description="The transfer mechanism (e.g. SCCs 2021).")
    in_use_since: date = Field(description="Since when it has been in use (a date, as declared).")


class SubprocessorsBaselined(Event):
    """The sub-processors already in use when the vendor adopted noticeflow
    (``noticeflow subprocessors import``), in stream ``subprocessors``: the public list's starting
    point (docs/public.md). A later one (allowed only before the first notice, ``--replace``)
    supersedes it."""

    type: ClassVar[str] = "subprocessors_baselined"
    subprocessors: list[BaselineEntry] = Field(description="Every sub-processor in use, by name.")
    content_sha256: str = Field(
        description="SHA-256 of the canonical JSON of `subprocessors` (the same list twice is"
        " the same baseline)."
    )
    by: str | None = Field(default=None, description="Who imported it (a user name), if given.")


# --- legacy: appended before the intake of record; old streams still hold them ------------------


class SignalRejected(Event):
    """Legacy (before the intake of record): the workflow refused a signal."""

    type: ClassVar[str] = "signal_rejected"
    legacy: ClassVar[bool] = True
    signal: str = Field(description="The signal's name.")
    reason: str = Field(description="Why it was refused.")
    payload: Any = Field(description="The payload as sent (in clear: from before sealing).")
    received_at: WireInstant = Field(description="When the workflow received it.")


class ObjectionRejected(Event):
    """Legacy (before the intake of record): an objection naming no recipient was refused."""

    type: ClassVar[str] = "objection_rejected"
    legacy: ClassVar[bool] = True
    customer_id: str = Field(description="The customer id as sent.")
    idempotency_key: str = Field(description="The objection's key.")
    reason: str = Field(description="Why it was refused.")
    channel: str = Field(description="How it came.")
    by: str | None = Field(default=None, description="Who, as sent (before sealing only).")
    received_at: Instant = Field(description="When it was received.")


EVENTS: tuple[type[Event], ...] = (
    NoticeCreated,
    PhaseChanged,
    NoticeApproved,
    NoticePostponed,
    NoticeCancelled,
    AudienceSnapshotted,
    NoticeDelivered,
    NoticeUndelivered,
    ReminderSent,
    ObjectionReceived,
    ObjectionResolved,
    OptInRecorded,
    OptInRevoked,
    CustomerExcluded,
    ActionRejected,
    DeemedAcceptance,
    SubprocessorEnabled,
    SubprocessorDisabled,
    CustomerSettled,
    CustomerErased,
    SubprocessorsBaselined,
    SignalRejected,
    ObjectionRejected,
)
EVENT_TYPES: dict[str, type[Event]] = {model.type: model for model in EVENTS}


# --- upcasters ----------------------------------------------------------------------------------

Upcaster = Callable[[Any], Any]


@dataclass
class Upcasters:
    """Upcasters keyed by (event type, from version); each lifts a payload one version. The event
    store applies them on read; :func:`parse` too (a no-op for data already read up to date)."""

    steps: dict[tuple[str, int], Upcaster] = field(default_factory=dict)

    def register(self, event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        def decorator(function: Upcaster) -> Upcaster:
            self.steps[(event_type, from_version)] = function
            return function

        return decorator

    def upcast(self, event_type: str, version: int, data: Any) -> tuple[int, Any]:
        while (event_type, version) in self.steps:
            data = self.steps[(event_type, version)](data)
            version += 1
        return version, data


UPCASTERS = Upcasters()

_REPLY_CODE = re.compile(r"^([2-5]\d\d)(?:[ -]|$)")
_ENHANCED_STATUS = re.compile(r"^([245])\.\d{1,3}\.\d{1,3}\b")


def split_reply(reply: str) -> tuple[int | None, str | None, str]:
    """A version-1 reply (``"550 5.1.1 mailbox unavailable"``) as code, enhanced status and text,
    the way ``noticeflow.mail.parse_reply`` reads a raw reply; not a reply: all text."""
    lines = [line.strip() for line in reply.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    lines = [line for line in lines if line]
    found = _REPLY_CODE.match(lines[0]) if lines else None
    if found is None:
        return None, None, " ".join(" ".join(lines).split())
    code = found.group(1)
    lines = [
        line[4:] if line.startswith(code) and (len(line) == 3 or line[3] in " -") else line
        for line in lines
    ]
    status: str | None = None
    texts = []
    for line in lines:
        enhanced = _ENHANCED_STATUS.match(line)
        if enhanced is not None and enhanced.group(1) == code[0]:
            status = status or enhanced.group(0)
            if enhanced.group(0) == status:
                line = line[enhanced.end() :]
        texts.append(line)
    return int(code), status, " ".join(" ".join(texts).split())


def _delivery_v1_to_v2(data: Any) -> Any:
    """Version 1 carried each contact's SMTP reply as one unsealed string (``reply``); version 2
    splits it into ``smtp_code``, ``smtp_status`` and ``smtp_text`` (sealed for new events; an
    upcast event keeps the text in clear, as it was stored). ``text_sha256`` (top level and per
    contact) became always present: null when an early version 1 event had none."""
    contacts = []
    for contact in data.get("contacts", []):
        lifted = {k: v for k, v in contact.items() if k != "reply"}
        if "reply" in contact:
            code, status, text = split_reply(str(contact["reply"] or ""))
            lifted.update(smtp_code=code, smtp_status=status, smtp_text=text)
        lifted.setdefault("text_sha256", None)
        contacts.append(lifted)
    return {**data, "text_sha256": data.get("text_sha256"), "contacts": contacts}


for _delivery_type in (NoticeDelivered.type, NoticeUndelivered.type):
    UPCASTERS.register(_delivery_type, 1)(_delivery_v1_to_v2)


# --- reading and building -------------------------------------------------------------------------


def model_of(event_type: str) -> type[Event]:
    model = EVENT_TYPES.get(event_type)
    if model is None:
        raise UnknownEventType(f"unknown event type {event_type!r}: no model in events.py")
    return model


def parse(event_type: str, schema_version: int, data: Any) -> Event:
    """An event's data as its model: upcast from ``schema_version``, then validated (JSON rules:
    the stored form). Raises :class:`EventError` naming every problem."""
    model = model_of(event_type)
    version, data = UPCASTERS.upcast(event_type, schema_version, data)
    if version != model.version:
        raise InvalidEvent(
            f"{event_type} schema version {version}: this code reads version {model.version}"
        )
    try:
        return model.model_validate_json(json.dumps(data))
    except ValidationError as error:
        raise InvalidEvent(describe_validation_error(error, f"{event_type} event")) from None
    except (TypeError, ValueError) as error:  # not JSON at all
        raise InvalidEvent(f"{event_type} event: not JSON data ({error})") from None


def build(event_type: str, data: Any) -> Event:
    """An event of the current version from data in its stored form (a generic caller's dict)."""
    return parse(event_type, model_of(event_type).version, data)


# --- docs/events.md -------------------------------------------------------------------------------


def _type_text(annotation: Any, metadata: Any = ()) -> str:
    if any(isinstance(meta, PlainSerializer) for meta in metadata):
        return "instant (UTC, `+00:00`)"
    if annotation is Any:
        return "any JSON"
    if annotation is type(None):
        return "null"
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Annotated:
        return _type_text(args[0], args[1:])
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_text(arg) for arg in args)
    if origin is list:
        return f"list of {_type_text(args[0])}"
    if origin is dict:
        return f"object of {_type_text(args[0])} to {_type_text(args[1])}"
    if origin is Literal:
        return " or ".join(f"`{arg}`" for arg in args)
    if annotation in (datetime, AwareDatetime):
        return "instant (as sent through Temporal: UTC as `Z`)"
    if annotation is date:
        return "date (ISO 8601, `YYYY-MM-DD`)"
    if isinstance(annotation, type):
        if issubclass(annotation, Enum):
            return "one of " + ", ".join(f"`{member.value}`" for member in annotation)
        if issubclass(annotation, NoticeSpec):
            return "notice (the notice file's fields)"
        if issubclass(annotation, _Shape):
            return f"{annotation.__name__} (below)"
        return {str: "text", int: "integer", bool: "true or false"}.get(
            annotation, annotation.__name__
        )
    return str(annotation)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _field_rows(model: type[_Shape], prefix: str = "") -> list[str]:
    rows = []
    sealed = set(model.sealed_fields())
    for name, info in model.model_fields.items():
        key = info.alias or name
        kind = _type_text(info.annotation, info.metadata)
        if not info.is_required():
            kind += " (absent when not set)"
        rows.append(
            f"| `{prefix}{key}` | {_cell(kind)} | {'sealed' if key in sealed else ''} |"
            f" {_cell(_prose(info.description))} |"
        )
        nested = _nested_shape(info.annotation)
        if nested is not None:
            rows += _field_rows(nested, f"{prefix}{key}[].")
    return rows


def _prose(text: str | None) -> str:
    return " ".join((text or "").split()).replace("``", "`")


def _section(model: type[Event]) -> str:
    doc = _prose(model.__doc__)
    lines = [
        f"### `{model.type}`",
        "",
        f"Schema version {model.version}{' · legacy: no longer appended' if model.legacy else ''}."
        f" Model `{model.__name__}`.",
        "",
        doc,
        "",
        "| field | type | sealed | meaning |",
        "|---|---|---|---|",
        *_field_rows(model),
        "",
    ]
    return "\n".join(lines)


PREFACE = """\
# Events

<!-- Generated from noticeflow/domain/events.py by `python -m noticeflow.domain.events >
docs/events.md`; tests/domain/test_events.py fails when this file is not current. -->

The events are the truth: every outcome of a notice is an event in the notice's stream
(`notice-<notice id>`), appended by the step that decided it; a customer's erasure is in the
customer's stream (`customer-<customer id>`). Each event has a type, a schema version and a JSON
object, its `data`, described below field by field.

* **Hash chain.** Each event's hash is `sha256(previous hash || header || "\\n" || canonical
  data)`; the canonical form is JSON with sorted keys, no whitespace, UTF-8, instants as ISO 8601
  (see `noticeflow/eventstore.py`). The stream's head is signed (Ed25519).
* **Instants** are ISO 8601 strings: in UTC with `+00:00` as the event store writes them; those
  that came through a Temporal payload (a postponement's dates) in the form pydantic wrote them,
  UTC as `Z`.
* **Sealed** fields hold text sealed with the customer's key for the place
  `<event type>.<field>` (AES-256-GCM, `enc2:` prefix): erasing the customer deletes the key and
  the text reads `[erased]`; the chain, which covers the ciphertext, still verifies. A sealed
  field may also read `[erased]` when it was written after the customer's erasure.
* A field marked *absent when not set* is left out of `data` rather than written as null.
  Unknown fields are refused.
* **Legacy** types are no longer appended; streams from before the intake of record hold them.
"""


def events_markdown() -> str:
    """``docs/events.md``: a preface, one section per event, then the upcasters."""
    sections = [PREFACE, "## Event types", ""]
    sections += [_section(model) for model in EVENTS]
    sections += [
        "## Upcasters",
        "",
        "An event is stored with the schema version it was written with and lifted to the current"
        " one on read, one version at a time:",
        "",
    ]
    for (event_type, version), function in sorted(UPCASTERS.steps.items()):
        doc = _prose(function.__doc__)
        sections.append(f"* `{event_type}` {version} → {version + 1}: {doc}")
    return "\n".join(sections).rstrip("\n") + "\n"


if __name__ == "__main__":
    print(events_markdown(), end="")
