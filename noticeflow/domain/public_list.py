"""The public sub-processor list, derived only from the events (docs/public.md).

Pure: the events come in as plain records (:class:`PublicEvent`: global position, stream, type,
data as JSON values, occurrence instant, stored hash), in the store's global order
``(tx_id, position)``; :class:`Fold` applies them one at a time, so the same derivation serves a
full read (:func:`derive`) and a reader that keeps its state and applies only what is new (the
web). Nothing here reads a clock: the list is a function of the events alone.

What it says (every rule is in docs/public.md, for a trust-center reader):

* **In use.** A sub-processor is listed while it is in use for at least one customer (its last
  ``subprocessor_enabled`` / ``subprocessor_disabled`` for that customer, in a notice's stream, is
  a switch-on), or while it is in the **baseline** (``subprocessors_baselined``, the list in use
  when noticeflow was adopted) and no notice has retired it there: a **removal** retires it when
  the removal takes effect (its ``phase_changed`` to ``active``); a **replacement** retires it
  once every recipient of the replacement is settled switched over (verdict ``activate``), since
  a customer who refused keeps the old one. Only a notice to **every** customer (an audience
  without filters) retires a baseline entry: the baseline is every customer's, so a removal sent
  to the US customers leaves it in use for the others, and listed. A replacement and a removal of
  a sub-processor switched on by notices take it off customer by customer through their own
  switch-offs.
* **In use since**: the start of the current unbroken period in which it was listed (the first
  switch-on, or the baseline's declared date, whichever is earlier).
* **Details** (purpose, location, data categories, transfer mechanism, services) come from the
  latest source still in force: the notice whose switch-on is the latest among the customers it
  is on for (so an accepted material change shows the new terms), or the baseline.
* **Changes**: every notice whose mailing began (``audience_snapshotted``) is a change, upcoming
  until it takes effect (``phase_changed`` ``active``) or is cancelled, then past. Drafts and
  notices cancelled before sending are not public.

Nothing about customers is published: customer ids are read (a switch names one) but only
counted in the fold's state, never put in the list.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Annotated, Any, NamedTuple

from pydantic import BaseModel, ConfigDict, ValidationError

from noticeflow.domain.errors import InputError, describe_problems, problems_of
from noticeflow.domain.events import BaselineEntry, SubprocessorsBaselined
from noticeflow.domain.files import read_toml
from noticeflow.domain.notice import NonEmptyList
from noticeflow.domain.text import SingleLine, single_line

BASELINE_STREAM = "subprocessors"
NOTICE_STREAM_PREFIX = "notice-"

CREATED = "notice_created"
PHASE = "phase_changed"
SNAPSHOT = "audience_snapshotted"
POSTPONED = "notice_postponed"
CANCELLED = "notice_cancelled"
ENABLED = "subprocessor_enabled"
DISABLED = "subprocessor_disabled"
SETTLED = "customer_settled"
BASELINED = SubprocessorsBaselined.type
NOTICE_EVENT_TYPES = (CREATED, PHASE, SNAPSHOT, POSTPONED, CANCELLED, ENABLED, DISABLED, SETTLED)
EVENT_TYPES = (*NOTICE_EVENT_TYPES, BASELINED)  # the events the public list follows from

GENESIS = bytes(32)
ATOM_NAMESPACE = uuid.UUID("0b7f4a52-4c1e-5f7e-9a55-6a1f2e0d4c31")


class PublicEvent(NamedTuple):
    """One event as stored: ``data`` holds JSON values (upcast), ``hash`` its chain hash."""

    position: int
    stream_id: str
    event_type: str
    data: Mapping[str, Any]
    occurred_at: datetime
    hash: bytes


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _instant(value: Any) -> datetime:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC)


def _day_start(value: date) -> datetime:
    return datetime.combine(value, time.min, tzinfo=UTC)


# --- the chain head -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainHead:
    """What a list was derived from: the global position of the last event it follows from, and
    ``sha256(previous digest || event hash)`` folded over every such event in global order (each
    event's hash covers its stream's chain before it). Opaque: it says no more than the list."""

    position: int = 0
    digest: bytes = GENESIS

    def after(self, event: PublicEvent) -> ChainHead:
        return ChainHead(event.position, hashlib.sha256(self.digest + event.hash).digest())

    @property
    def token(self) -> str:
        """The header's form: ``<position>:sha256:<hex digest>``."""
        return f"{self.position}:sha256:{self.digest.hex()}"

    def as_json(self) -> dict[str, Any]:
        return {"position": self.position, "digest": f"sha256:{self.digest.hex()}"}


POSITION_MAX = 2**63 - 1  # an event's global position is a PostgreSQL bigint
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")


def parse_head(token: str) -> ChainHead:
    """A chain head in its header form (``<position>:sha256:<64 hex digits>``); InputError with
    what is wrong. The position is ASCII digits within an event position's range (a bigint):
    anything else could not name an event, and is said so here, not by the database."""
    position, _, rest = token.strip().partition(":")
    algorithm, _, digest = rest.partition(":")
    shown = repr(token[:100])
    expected = (
        "expected <position>:sha256:<64 hex digits>, as the X-Noticeflow-Chain-Head header gives it"
    )
    if not (position.isascii() and position.isdigit()) or algorithm != "sha256":
        raise InputError(f"not a chain head: {shown}; {expected}")
    if not _HEX_DIGEST.fullmatch(digest):
        raise InputError(f"not a chain head: {shown}: the digest is not 64 hex digits; {expected}")
    if len(position) > 19 or int(position) > POSITION_MAX:
        raise InputError(
            f"not a chain head: {shown}: position {position[:30]}{'…' if len(position) > 30 else ''}"
            f" is beyond any event's (at most {POSITION_MAX})"
        )
    return ChainHead(int(position), bytes.fromhex(digest))


# --- what the list holds -------------------------------------------------------------------------


@dataclass(frozen=True)
class Details:
    """A sub-processor's terms as a notice or the baseline states them."""

    purpose: str | None
    location: str | None
    data_categories: tuple[str, ...]
    transfer_mechanism: str | None
    services: tuple[str, ...]

    @classmethod
    def of(cls, spec: Mapping[str, Any]) -> Details:
        def text(name: str) -> str | None:
            value = spec.get(name)
            return None if value is None or value == "" else str(value)

        def texts(name: str) -> tuple[str, ...]:
            value = spec.get(name)
            return tuple(str(v) for v in value) if isinstance(value, list | tuple) else ()

        return cls(
            purpose=text("purpose"),
            location=text("subprocessor_location"),
            data_categories=texts("data_categories"),
            transfer_mechanism=text("transfer_mechanism"),
            services=texts("services"),
        )


NO_DETAILS = Details(None, None, (), None, ())


@dataclass(frozen=True)
class InUse:
    name: str
    since: datetime
    details: Details
    source: str  # "baseline" or "notice"
    notice_id: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "purpose": self.details.purpose,
            "location": self.details.location,
            "data_categories": list(self.details.data_categories),
            "transfer_mechanism": self.details.transfer_mechanism,
            "services": list(self.details.services),
            "in_use_since": iso(self.since),
            "source": self.source,
            "notice_id": self.notice_id,
        }


@dataclass(frozen=True)
class Change:
    """A notice as the public sees it: what it changes, when, and what became of it."""

    notice_id: str
    kind: str
    subprocessor: str
    replaces: str | None
    details: Details
    previous: Mapping[str, Any]
    opt_in: bool
    effective_at: datetime
    first_effective_at: datetime
    sent_at: datetime
    postponements: tuple[tuple[datetime, datetime, datetime], ...]  # (at, from, to)
    status: str  # upcoming, in_effect, cancelled
    in_effect_at: datetime | None
    cancelled_at: datetime | None

    @property
    def updated_at(self) -> datetime:
        """When the public entry last changed: sent, postponed or cancelled."""
        moments = [self.sent_at, *(at for at, _, _ in self.postponements)]
        if self.cancelled_at is not None:
            moments.append(self.cancelled_at)
        return max(moments)

    @property
    def atom_id(self) -> str:
        return f"urn:uuid:{uuid.uuid5(ATOM_NAMESPACE, f'notice/{self.notice_id}')}"

    def as_json(self) -> dict[str, Any]:
        previous = {
            ("location" if name == "subprocessor_location" else name): value
            for name, value in sorted(self.previous.items())
        }
        return {
            "notice_id": self.notice_id,
            "kind": self.kind,
            "subprocessor": self.subprocessor,
            "replaces": self.replaces,
            "purpose": self.details.purpose,
            "location": self.details.location,
            "data_categories": list(self.details.data_categories),
            "transfer_mechanism": self.details.transfer_mechanism,
            "services": list(self.details.services),
            "previous": previous,
            "opt_in": self.opt_in,
            "effective_at": iso(self.effective_at),
            "first_effective_at": iso(self.first_effective_at),
            "postponements": [
                {"at": iso(at), "from": iso(old), "to": iso(new)}
                for at, old, new in self.postponements
            ],
            "status": self.status,
            "sent_at": iso(self.sent_at),
            "in_effect_at": iso(self.in_effect_at) if self.in_effect_at else None,
            "cancelled_at": iso(self.cancelled_at) if self.cancelled_at else None,
            "updated_at": iso(self.updated_at),
            "atom_id": self.atom_id,
        }


# The words for a change, one place for every channel: the page, the Atom feed and the subscribers'
# copies (an addition and a removal must not read alike anywhere).
KIND_WORDS = {
    "addition": "New sub-processor",
    "replacement": "Sub-processor replacement",
    "removal": "Sub-processor removal",
    "material_change": "Change to a sub-processor",
}


def change_words(change: Change) -> str:
    """What the change is, by kind: "Sub-processor removal: X", "... replacement: X (replacing
    Y)"."""
    words = f"{KIND_WORDS.get(change.kind, change.kind)}: {change.subprocessor}"
    if change.kind == "replacement" and change.replaces:
        words += f" (replacing {change.replaces})"
    return words


def entry_title(change: Change) -> str:
    """The change's title as the feed gives it: its words, and its state (effective, postponed
    to, cancelled)."""
    day = change.effective_at.astimezone(UTC).date().isoformat()
    words = change_words(change)
    if change.status == "cancelled":
        return f"Cancelled — {words}"
    if change.postponements:
        return f"{words}, postponed to {day}"
    return f"{words}, effective {day}"


@dataclass(frozen=True)
class PublicList:
    head: ChainHead
    subprocessors: list[InUse]
    upcoming: list[Change]
    past: list[Change]
    baseline_recorded_at: datetime | None
    baseline_names: tuple[str, ...]

    @property
    def updated_at(self) -> datetime | None:
        """The latest moment the list or a change changed (None: nothing public yet)."""
        moments = [change.updated_at for change in (*self.upcoming, *self.past)]
        moments += [change.in_effect_at for change in self.past if change.in_effect_at]
        moments += [entry.since for entry in self.subprocessors]
        if self.baseline_recorded_at is not None:
            moments.append(self.baseline_recorded_at)
        return max(moments) if moments else None

    def as_json(self) -> dict[str, Any]:
        updated = self.updated_at
        return {
            "chain_head": self.head.as_json(),
            "updated_at": iso(updated) if updated else None,
            "subprocessors": [entry.as_json() for entry in self.subprocessors],
            "upcoming_changes": [change.as_json() for change in self.upcoming],
            "past_changes": [change.as_json() for change in self.past],
            "baseline": (
                {
                    "recorded_at": iso(self.baseline_recorded_at),
                    "subprocessors": list(self.baseline_names),
                }
                if self.baseline_recorded_at is not None
                else None
            ),
        }


# --- the fold ------------------------------------------------------------------------------------


@dataclass
class _Notice:
    spec: Mapping[str, Any]
    created_at: datetime
    effective_at: datetime
    sent_at: datetime | None = None
    audience: int | None = None
    postponements: list[tuple[datetime, datetime, datetime]] = field(default_factory=list)
    in_effect_at: datetime | None = None
    cancelled_at: datetime | None = None
    settled: dict[str, str] = field(default_factory=dict)  # customer -> verdict (never published)

    @property
    def kind(self) -> str:
        return str(self.spec.get("kind") or "addition")

    @property
    def name(self) -> str:
        return str(self.spec.get("subprocessor"))

    @property
    def to_everyone(self) -> bool:
        """Whether the notice went to every customer (its audience filters nothing): only then
        can it retire a baseline entry, which every customer has (docs/public.md)."""
        return audience_is_everyone(self.spec.get("audience"))


def audience_is_everyone(audience: Any) -> bool:
    """A notice's ``audience`` (as its spec stores it) selects every customer: no filter set."""
    if audience is None:
        return True
    if not isinstance(audience, Mapping):
        return False
    return not any(value for value in audience.values())


@dataclass
class _Baseline:
    details: Details
    since: datetime
    order: int  # the fold's step that recorded it


def _notice_of(stream_id: str) -> str | None:
    if not stream_id.startswith(NOTICE_STREAM_PREFIX) or stream_id == NOTICE_STREAM_PREFIX:
        return None
    return stream_id[len(NOTICE_STREAM_PREFIX) :]


class Fold:
    """The list's state, one event at a time, in global order. Per sub-processor it keeps which
    customers it is on for (ids stay here, only ever counted)."""

    def __init__(self) -> None:
        self.head = ChainHead()
        self.step = 0
        self.notices: dict[str, _Notice] = {}
        self.on: dict[str, dict[str, tuple[int, str]]] = {}  # name -> customer -> (step, notice)
        self.baseline: dict[str, _Baseline] = {}  # alive baseline entries
        self.baseline_names: tuple[str, ...] = ()
        self.baseline_at: datetime | None = None
        self.retired: set[str] = set()  # baseline names retired by a notice
        self.since: dict[str, datetime] = {}  # listed name -> start of its listed period

    # the whole list is listed names: baseline alive, or on for a customer
    def _listed(self, name: str) -> bool:
        return name in self.baseline or bool(self.on.get(name))

    def _relist(self, name: str, at: datetime) -> None:
        if self._listed(name):
            self.since.setdefault(name, at)
        else:
            self.since.pop(name, None)

    def apply(self, event: PublicEvent) -> None:
        if event.event_type not in EVENT_TYPES:
            return
        if event.event_type == BASELINED:
            if event.stream_id != BASELINE_STREAM:
                return
            self._baseline(event)
        else:
            notice_id = _notice_of(event.stream_id)
            if notice_id is None:
                return
            self._notice_event(notice_id, event)
        self.step += 1
        self.head = self.head.after(event)

    def _baseline(self, event: PublicEvent) -> None:
        entries = event.data.get("subprocessors") or []
        before = set(self.baseline)
        self.baseline = {}
        names = []
        for entry in entries:
            name = str(entry.get("subprocessor"))
            names.append(name)
            if name in self.retired:
                continue
            since = _day_start(date.fromisoformat(str(entry.get("in_use_since"))))
            self.baseline[name] = _Baseline(Details.of(entry), since, self.step)
        self.baseline_names = tuple(names)
        self.baseline_at = event.occurred_at
        for name in before | set(self.baseline):
            self._relist(name, event.occurred_at)
            if name in self.baseline and name in self.since:
                self.since[name] = min(self.since[name], self.baseline[name].since)

    def _notice_event(self, notice_id: str, event: PublicEvent) -> None:
        data, at = event.data, event.occurred_at
        kind = event.event_type
        if kind == CREATED:
            spec = data.get("spec")
            if isinstance(spec, Mapping) and notice_id not in self.notices:
                self.notices[notice_id] = _Notice(spec, at, _instant(spec.get("effective_at")))
            return
        notice = self.notices.get(notice_id)
        if kind in (ENABLED, DISABLED):
            name, customer = str(data.get("subprocessor")), str(data.get("customer_id"))
            customers = self.on.setdefault(name, {})
            if kind == ENABLED:
                customers[customer] = (self.step, notice_id)
            else:
                customers.pop(customer, None)
                if not customers:
                    del self.on[name]
            self._relist(name, at)
            return
        if notice is None:
            return
        if kind == SNAPSHOT:
            if notice.sent_at is None:
                notice.sent_at = at
                customers_count = data.get("customers")
                notice.audience = int(customers_count) if customers_count is not None else None
        elif kind == POSTPONED:
            old, new = _instant(data.get("from")), _instant(data.get("to"))
            notice.effective_at = new
            if notice.sent_at is not None:
                notice.postponements.append((at, old, new))
        elif kind == CANCELLED:
            if notice.cancelled_at is None:
                notice.cancelled_at = at
        elif kind == PHASE:
            if data.get("phase") == "active" and notice.in_effect_at is None:
                notice.in_effect_at = at
                if notice.kind == "removal" and notice.cancelled_at is None and notice.to_everyone:
                    self._retire(notice.name, at)
        elif kind == SETTLED and notice.kind == "replacement":
            notice.settled[str(data.get("customer_id"))] = str(data.get("verdict"))
            self._maybe_replaced(notice, at)

    def _retire(self, name: str, at: datetime) -> None:
        if name in self.baseline:
            self.retired.add(name)
            del self.baseline[name]
            self._relist(name, at)

    def _maybe_replaced(self, notice: _Notice, at: datetime) -> None:
        replaces = notice.spec.get("replaces")
        if notice.kind != "replacement" or not replaces or replaces not in self.baseline:
            return
        if notice.cancelled_at is not None or notice.audience is None or not notice.to_everyone:
            return  # sent to part of the customers: the others still have the baseline entry
        if len(notice.settled) >= notice.audience and all(
            verdict == "activate" for verdict in notice.settled.values()
        ):
            self._retire(str(replaces), at)

    # --- the list as it stands --------------------------------------------------------------

    def result(self) -> PublicList:
        entries = []
        for name in self.since:
            entries.append(self._entry(name))
        entries.sort(key=lambda entry: (entry.name.casefold(), entry.name))
        changes = [
            self._change(notice_id, notice)
            for notice_id, notice in self.notices.items()
            if notice.sent_at is not None
        ]
        upcoming = sorted(
            (c for c in changes if c.status == "upcoming"),
            key=lambda c: (c.effective_at, c.notice_id),
        )
        past = sorted(
            (c for c in changes if c.status != "upcoming"),
            key=lambda c: (c.cancelled_at or c.in_effect_at or c.effective_at, c.notice_id),
            reverse=True,
        )
        return PublicList(
            head=self.head,
            subprocessors=entries,
            upcoming=upcoming,
            past=past,
            baseline_recorded_at=self.baseline_at,
            baseline_names=self.baseline_names,
        )

    def _entry(self, name: str) -> InUse:
        on = self.on.get(name) or {}
        latest: tuple[int, str] | None = max(on.values()) if on else None
        base = self.baseline.get(name)
        if latest is not None and (base is None or latest[0] > base.order):
            notice = self.notices.get(latest[1])
            details = Details.of(notice.spec) if notice is not None else NO_DETAILS
            return InUse(name, self.since[name], details, "notice", latest[1])
        assert base is not None  # listed: on for a customer, or in the baseline
        return InUse(name, self.since[name], base.details, "baseline", None)

    def _change(self, notice_id: str, notice: _Notice) -> Change:
        spec = notice.spec
        first = notice.postponements[0][1] if notice.postponements else notice.effective_at
        if notice.cancelled_at is not None:
            status = "cancelled"
        elif notice.in_effect_at is not None:
            status = "in_effect"
        else:
            status = "upcoming"
        previous = spec.get("previous")
        assert notice.sent_at is not None
        return Change(
            notice_id=notice_id,
            kind=notice.kind,
            subprocessor=notice.name,
            replaces=str(spec["replaces"]) if spec.get("replaces") else None,
            details=Details.of(spec),
            previous=previous if isinstance(previous, Mapping) else {},
            opt_in=bool(spec.get("opt_in")),
            effective_at=notice.effective_at,
            first_effective_at=first,
            sent_at=notice.sent_at,
            postponements=tuple(notice.postponements),
            status=status,
            in_effect_at=notice.in_effect_at,
            cancelled_at=notice.cancelled_at,
        )


def derive(events: Iterable[PublicEvent]) -> PublicList:
    """The public list from these events (every event it follows from, in global order)."""
    fold = Fold()
    for event in events:
        fold.apply(event)
    return fold.result()


# --- the baseline file ---------------------------------------------------------------------------


class _BaselineItem(BaseModel):
    """One ``[[subprocessors]]`` table of a baseline file: the fields a notice gives it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subprocessor: SingleLine
    subprocessor_location: Annotated[str, single_line(500)]
    purpose: Annotated[str, single_line(2000)]
    data_categories: NonEmptyList
    services: NonEmptyList
    transfer_mechanism: Annotated[str, single_line(1000)]
    in_use_since: date


def _same_name(name: str) -> str:
    return " ".join(name.split()).casefold()


def _list_problems(values: Any) -> list[str]:
    """A list's entries that the schema lets through: a blank entry (dropped silently in a
    notice's list, refused here: it is a mistake in a file written once) and the same entry twice
    (in another case or spacing)."""
    if not isinstance(values, list):
        return []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for index, value in enumerate(values, start=1):
        if not isinstance(value, str):
            continue
        if not value.strip():
            problems.append(f" item {index}: must not be empty")
            continue
        key = _same_name(value)
        if key in seen:
            problems.append(
                f" item {index}: {' '.join(value.split())[:60]!r} is listed already"
                f" (item {seen[key]}); list each once"
            )
        else:
            seen[key] = index
    return problems


def parse_baseline(data: Any, source: str, today: date) -> list[BaselineEntry]:
    """Validate a baseline (a TOML file's tables): every problem at once, one line each, named
    by the table's number and sub-processor (InputError)."""
    if not isinstance(data, dict):
        raise InputError(f"{source}: expected a table")
    problems = [f"{key}: unknown field (a baseline has [[subprocessors]] tables only)"
                for key in data if key != "subprocessors"]  # fmt: skip
    tables = data.get("subprocessors")
    if tables is None:
        problems.append(
            "subprocessors: missing; list each sub-processor in use as a [[subprocessors]] table"
        )
        tables = []
    elif not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        problems.append("subprocessors: must be [[subprocessors]] tables")
        tables = []
    elif not tables:
        problems.append("subprocessors: lists no sub-processor")
    entries: list[BaselineEntry] = []
    seen: dict[str, tuple[int, str]] = {}
    for number, table in enumerate(tables, start=1):
        name = table.get("subprocessor")
        where = f"subprocessors item {number}" + (
            f" ({' '.join(name.split())[:60]})" if isinstance(name, str) and name.strip() else ""
        )
        # Every check runs whether or not the table passed the schema: one failing field never
        # hides another problem of the same table, nor a duplicate of it.
        found: list[str] = []
        item: _BaselineItem | None = None
        try:
            item = _BaselineItem.model_validate(table)
        except ValidationError as error:
            found += [f"{where}.{problem}" for problem in problems_of(error)]
        since = table.get("in_use_since")
        if isinstance(since, date) and not isinstance(since, datetime) and since > today:
            found.append(
                f"{where}.in_use_since: {since.isoformat()} is in the future;"
                " a baseline lists what is in use already (a new one needs a notice)"
            )
        for field_name in ("data_categories", "services"):
            found += [f"{where}.{field_name}{p}" for p in _list_problems(table.get(field_name))]
        if isinstance(name, str) and name.strip():
            key = _same_name(name)
            if key in seen:
                first, spelled = seen[key]
                found.append(
                    f"{where}.subprocessor: the same sub-processor as item {first} ({spelled!r});"
                    " list each once"
                )
            else:
                seen[key] = (number, " ".join(name.split()))
        problems += found
        if item is not None and not found:
            entries.append(BaselineEntry.model_validate(item.model_dump()))
    if problems:
        raise InputError(describe_problems(f"{source} is not a valid baseline", problems))
    return sorted(entries, key=lambda entry: (entry.subprocessor.casefold(), entry.subprocessor))


BASELINE_MAX_BYTES = 1_000_000  # a baseline lists tens of sub-processors: a few kB


def load_baseline_file(path: Path, today: date) -> list[BaselineEntry]:
    """Read and validate a baseline file (TOML, UTF-8 with or without a byte order mark)."""
    data = read_toml(
        path,
        "baseline",
        BASELINE_MAX_BYTES,
        "a baseline file lists the sub-processors in use (a few kB): is this the right file?",
    )
    return parse_baseline(data, str(path), today)


def baseline_event(entries: list[BaselineEntry], by: str | None) -> SubprocessorsBaselined:
    """The baseline's event; ``content_sha256`` names its content, so the same list is the same
    baseline whatever the file's order or layout."""
    entries = sorted(entries, key=lambda entry: (entry.subprocessor.casefold(), entry.subprocessor))
    content = [entry.model_dump(mode="json") for entry in entries]
    digest = hashlib.sha256(
        json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    ).hexdigest()
    return SubprocessorsBaselined(subprocessors=entries, content_sha256=digest, by=by)
