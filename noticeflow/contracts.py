"""Payloads between the workflow and its activities, and the workflow's own input and status.

Everything here is plain pydantic, serialised as JSON by the pydantic data converter. Customer ids
only: no addresses or names ever travel through Temporal.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from noticeflow.domain.events import NoticeApproved, NoticeCancelled, NoticePostponed
from noticeflow.domain.notice import NoticeSpec
from noticeflow.domain.rules import Delivery, Phase
from noticeflow.domain.signals import WAKE_SIGNAL

TASK_QUEUE = "noticeflow"
WORKFLOW_TYPE = "NoticeWorkflow"
# A notice's audience is mailed in shards, each an activity any worker may run (on the send task
# queue, where each worker takes at most NOTICEFLOW_SEND_SLOTS at once): one shard per
# SEND_SHARD_SIZE customers, at most MAX_SEND_SHARDS, so the history stays flat.
# PART OF THE WORKFLOW'S COMMANDS: a notice replays its mailing with these numbers for weeks, so
# change them only behind a new workflow.patched (tests pin them; docs/operations.md).
SEND_SHARD_SIZE = 500
MAX_SEND_SHARDS = 32


def send_task_queue(task_queue: str) -> str:
    """The task queue of the sending shards of notices whose workflows run on ``task_queue``."""
    return f"{task_queue}.send"


def send_shards(audience: int) -> int:
    """How many shards mail an audience of this size (1 for up to SEND_SHARD_SIZE customers)."""
    return max(1, min(MAX_SEND_SHARDS, -(-audience // SEND_SHARD_SIZE)))


class Activity:
    """Activity type names: what a workflow history records, so never renamed. The workflow
    refers to activities through their typed interfaces (noticeflow/activity_interfaces.py),
    which take their names from here, as do the implementations in activities/."""

    append_event = "append_event"
    record_phase = "record_phase"
    check_approval = "check_approval"
    snapshot_audience = "snapshot_audience"
    send_notices = "send_notices"
    read_totals = "read_totals"
    record_objection = "record_objection"
    resolve_objection = "resolve_objection"
    record_opt_in = "record_opt_in"
    mail_change = "mail_change"
    resend_notice = "resend_notice"
    activate_due = "activate_due"
    send_reminders = "send_reminders"
    process_intake = "process_intake"
    settle_receipt = "settle_receipt"
    load_notice_record = "load_notice_record"
    record_notice_event = "record_notice_event"
    deliver_webhooks = "deliver_webhooks"  # workflows/webhooks.py (docs/webhooks.md)


# A notice's one name: the id of its workflow and the id of its event stream. Built here only.
NOTICE_PREFIX = "notice-"


def workflow_id(notice_id: str) -> str:
    """The notice's workflow id, which is also its event stream's id (``notice-<id>``)."""
    return NOTICE_PREFIX + notice_id


def notice_stream(notice_id: str) -> str:
    """The id of the notice's event stream: the same name as its workflow id."""
    return workflow_id(notice_id)


def notice_id_of(name: str) -> str | None:
    """The notice id in a workflow id or stream id (the inverse of ``workflow_id``); None for a
    name that is not a notice's."""
    if not name.startswith(NOTICE_PREFIX) or len(name) == len(NOTICE_PREFIX):
        return None
    return name[len(NOTICE_PREFIX) :]


class NoticeActionKind(StrEnum):
    """The actions about a notice as a whole, judged by the workflow itself."""

    approve = "approve"
    postpone = "postpone"
    cancel = "cancel"


class CustomerActionKind(StrEnum):
    """The actions about one customer that the intake judges (each by its own handler, a typed
    dispatch table in noticeflow/application/intake.py); a resend, which mails, is judged apart."""

    object = "object"
    request_changes = "request_changes"
    resolve_objection = "resolve_objection"
    opt_in = "opt_in"
    revoke_opt_in = "revoke_opt_in"
    exclude = "exclude"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class InboxItem(_Model):
    """A signal as received. One that names a receipt only wakes the workflow (the action is in
    the intake already); a raw one (the Temporal CLI) is written to the intake first, with the
    time the workflow received it as its receipt time."""

    name: str
    payload: Any = None
    received_at: datetime
    decode_error: str | None = None
    seq: int = 0

    def is_wake(self) -> bool:
        if self.decode_error is not None or not isinstance(self.payload, dict):
            return False
        return set(self.payload) == {"receipt_id"} or (
            self.name == WAKE_SIGNAL and not self.payload
        )


class NoticeState(BaseModel):
    """What the workflow carries across continue-as-new. Small, whatever the audience size."""

    phase: Phase = Phase.draft
    effective_at: datetime
    approved_by: str | None = None
    window_closes_at: datetime | None = None
    audience_size: int = 0
    delivered: int = 0
    undelivered: int = 0
    open_objections: int = 0
    activated: int = 0
    unsettled: int = 0
    opted_in: int = 0
    next_due: datetime | None = None
    needs_activation_round: bool = False
    event_seq: int = 0
    rejected_signals: int = 0
    signals_handled: int = 0
    cancel_reason: str | None = None
    reminders_scheduled: bool = False
    next_reminder_at: datetime | None = None
    inbox: list[InboxItem] = Field(default_factory=list)
    signal_seq: int = 0
    intake_more: bool = False
    intake_deferred: bool = False
    restarted: bool = False  # started after completion: refresh the state from the records


class NoticeInput(_Model):
    spec: NoticeSpec
    author: str
    state: NoticeState | None = None


class NoticeStatus(_Model):
    # author, approved_by and cancel_reason: empty for notices started since names left Temporal
    # (they are in the records); kept so that older runs' queries and histories still decode.
    notice_id: str
    phase: Phase
    subprocessor: str
    opt_in: bool
    author: str
    approved_by: str | None
    effective_at: datetime
    window_closes_at: datetime | None
    audience_size: int
    delivered: int
    undelivered: int
    open_objections: int
    activated: int
    unsettled: int
    rejected_signals: int
    signals_handled: int
    pending_signals: int
    cancel_reason: str | None
    next_reminder_at: datetime | None = None


# --- activity payloads -------------------------------------------------------------------------


class EventRequest(_Model):
    """The generic event of ``append_event``: runs started before typed notice events still
    schedule it (``NoticeEventRequest`` since)."""

    notice_id: str
    key: str
    event_type: str
    data: dict[str, Any] = Field(default_factory=dict)
    at: datetime
    # The receipt of the action behind the event: the activity adds who (and why) from it.
    receipt_id: str | None = None


# The events the workflow itself records about the notice as a whole (noticeflow/domain/events.py).
NoticeEvent = NoticeApproved | NoticePostponed | NoticeCancelled
NOTICE_EVENTS: dict[str, type[NoticeEvent]] = {
    model.type: model for model in (NoticeApproved, NoticePostponed, NoticeCancelled)
}


class NoticeEventRequest(_Model):
    """One typed event about the notice (``record_notice_event``). The workflow fills in what it
    knows (counts, dates, the phase); who and why are added by the activity from the receipt, so
    no name travels through Temporal. ``event_type`` says which model ``event`` is (the models
    carry their type as class data, not in their JSON)."""

    notice_id: str
    key: str
    at: datetime
    receipt_id: str | None = None
    event_type: Literal["notice_approved", "notice_postponed", "notice_cancelled"]
    event: NoticeEvent

    @model_validator(mode="before")
    @classmethod
    def _event_as_its_model(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("event"), dict):
            model = NOTICE_EVENTS.get(str(data.get("event_type")))
            if model is not None:
                data = {**data, "event": model.model_validate(data["event"])}
        return data

    @model_validator(mode="after")
    def _type_matches(self) -> NoticeEventRequest:
        if self.event.type != self.event_type:
            raise ValueError(f"event_type {self.event_type} but the event is {self.event.type}")
        return self

    @classmethod
    def of(
        cls,
        notice_id: str,
        key: str,
        at: datetime,
        event: NoticeEvent,
        receipt_id: str | None = None,
    ) -> NoticeEventRequest:
        return cls(
            notice_id=notice_id,
            key=key,
            at=at,
            receipt_id=receipt_id,
            event_type=event.type,
            event=event,
        )


class PhaseChange(_Model):
    notice_id: str
    phase: Phase
    at: datetime
    key: str
    effective_at: datetime
    window_closes_at: datetime | None = None
    approved_by: str | None = None


class AudienceRequest(_Model):
    spec: NoticeSpec
    at: datetime


class ApprovalCheck(_Model):
    audience_size: int
    latest_projected_deadline: datetime | None
    latest_customer_id: str | None = None


class SendRequest(_Model):
    """Mail one shard of the audience: the customers with ``send_shard(id, shards) = shard``
    (migration 018); one shard of one is everyone (a notice sent before shards existed)."""

    spec: NoticeSpec
    at: datetime
    shard: int = Field(default=0, ge=0)
    shards: int = Field(default=1, ge=1)  # (no upper bound: a shard scheduled stays readable)

    @model_validator(mode="after")
    def _shard_in_range(self) -> SendRequest:
        if self.shard >= self.shards:
            raise ValueError(f"shard {self.shard} is not one of {self.shards} shards")
        return self


class SendResult(_Model):
    """Counts of the customers this activity run mailed (a resumed run counts only its own)."""

    processed: int
    delivered: int
    undelivered: int


class NoticeTotals(_Model):
    """Counts read back from the records after a step, so the workflow never tracks customers."""

    audience_size: int
    delivered: int
    undelivered: int
    open_objections: int
    activated: int
    unsettled: int
    window_closes_at: datetime | None
    opted_in: int = 0


class ChangeMailRequest(_Model):
    spec: NoticeSpec
    kind: Literal["postponement", "cancellation"]
    key: str
    detail: dict[str, Any] = Field(default_factory=dict)
    at: datetime
    receipt_id: str | None = None  # who (and why): read from the receipt by the activity


class ResendRequest(_Model):
    spec: NoticeSpec
    customer_id: str
    key: str
    at: datetime


class ResendResult(_Model):
    outcome: Literal["sent", "rejected"]
    delivery: Delivery | None = None
    deadline: datetime | None = None
    reason: str = ""


class ReminderRequest(_Model):
    spec: NoticeSpec
    now: datetime


class ReminderRound(_Model):
    sent: int
    next_due: datetime | None


class ActivationRequest(_Model):
    spec: NoticeSpec
    now: datetime


class ActivationRound(_Model):
    activated_now: int
    deactivated_now: int
    next_due: datetime | None
    totals: NoticeTotals


# --- the intake ------------------------------------------------------------------------------


class RawAction(_Model):
    """A raw signal to write to the intake (receipt id derived from the run and its order)."""

    receipt_id: str
    action: str
    payload: Any = None
    received_at: datetime
    problem: str | None = None


class IntakeRequest(_Model):
    spec: NoticeSpec
    phase: Phase
    raw: list[RawAction] = Field(default_factory=list)
    limit: int = 500
    at: datetime


# What a payload that does not decrypt becomes in a worker (noticeflow/codec.py): a signal with it
# is a recorded rejection, not a workflow task that fails for ever.
UNDECODABLE_ENCODING = b"binary/noticeflow-undecodable"

# A rejection reason the workflow composes names the person as this marker; the activity that
# settles the receipt puts the name back from the receipt (noticeflow/notice_actions.py).
BY = "{by}"


class ActionFacts(_Model):
    """What the rules need to know about the person behind a notice action, without the name."""

    by_is_author: bool = False
    by_is_approver: bool = False


class NoticeAction(_Model):
    """The first pending action about the notice as a whole: the workflow judges it itself.

    ``payload`` holds no name and no free text (the new effective date of a postponement only):
    who and why stay in the receipt (noticeflow/notice_actions.py). A history recorded before
    ``facts`` existed carries the whole payload and no facts (the workflow judges it the old way).
    """

    receipt_id: str
    action: NoticeActionKind
    payload: dict[str, Any]
    received_at: datetime
    facts: ActionFacts | None = None


class IntakeRound(_Model):
    handled: int
    accepted: int = 0
    rejected: int = 0
    deferred: int = 0  # customer actions received before the audience was snapshotted
    notice_action: NoticeAction | None = None
    more: bool = False
    changed: bool = False  # a customer's state changed: an activation round is due
    deliveries_changed: bool = False
    totals: NoticeTotals | None = None


class ReceiptOutcome(_Model):
    receipt_id: str
    notice_id: str
    status: Literal["accepted", "rejected", "duplicate"]
    reason: str | None = None


class NoticeRecord(_Model):
    """The notice as its records stand: what a run started after completion resumes from."""

    phase: Phase
    effective_at: datetime
    approved_by: str | None = None
    window_closes_at: datetime | None = None


# --- webhooks (docs/webhooks.md) ------------------------------------------------------------------
# The delivery workflow's Temporal names: what histories record and what the outbox signals, so
# never renamed. Built here only; workflows/webhooks.py and noticeflow/webhooks.py both import them.
WEBHOOK_WORKFLOW_TYPE = "WebhookDelivery"
WEBHOOK_WAKE_SIGNAL = "wake"
WEBHOOK_PREFIX = "webhook-"


def webhook_workflow_id(subscription_id: str) -> str:
    """A webhook subscription's delivery workflow id (``webhook-<subscription id>``)."""
    return WEBHOOK_PREFIX + subscription_id


def webhook_task_queue(task_queue: str) -> str:
    """The webhooks' own task queue beside the notices' one: an endpoint that is slow or down
    never holds a slot a notice's activity needs."""
    return f"{task_queue}.webhooks"


class WebhookRequest(_Model):
    """Deliver one webhook subscription's pending deliveries (ids only: the URL and the secret
    stay in PostgreSQL)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    subscription_id: str
    batch: int = 100


class WebhookRound(_Model):
    model_config = ConfigDict(extra="forbid", frozen=True)
    delivered: int = 0
    failed: int = 0
    more: bool = False  # deliveries still pending after the batch
    stopped: bool = False  # the workflow ends: the subscription was removed, or cannot be signed
    reason: str | None = None  # why it stopped (our words, no URL): "removed", "secret unreadable"
