"""Payloads between the workflow and its activities, and the workflow's own input and status.

Everything here is plain pydantic, serialised as JSON by the pydantic data converter. Customer ids
only: no addresses or names ever travel through Temporal.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from noticeflow.domain.notice import NoticeSpec
from noticeflow.domain.rules import Delivery, Phase
from noticeflow.domain.signals import Objection, ResolveObjection

TASK_QUEUE = "noticeflow"
WORKFLOW_TYPE = "NoticeWorkflow"


def workflow_id(notice_id: str) -> str:
    return f"notice-{notice_id}"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class InboxItem(_Model):
    """A signal as received: validated later, in order, by the workflow's main loop."""

    name: str
    payload: Any = None
    received_at: datetime
    decode_error: str | None = None


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
    next_due: datetime | None = None
    needs_activation_round: bool = False
    event_seq: int = 0
    rejected_signals: int = 0
    signals_handled: int = 0
    cancel_reason: str | None = None
    reminders_scheduled: bool = False
    next_reminder_at: datetime | None = None
    inbox: list[InboxItem] = Field(default_factory=list)


class NoticeInput(_Model):
    spec: NoticeSpec
    author: str
    state: NoticeState | None = None


class NoticeStatus(_Model):
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
    notice_id: str
    key: str
    event_type: str
    data: dict[str, Any] = Field(default_factory=dict)
    at: datetime


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
    spec: NoticeSpec
    at: datetime


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


class ObjectionRequest(_Model):
    notice_id: str
    objection: Objection
    received_at: datetime
    phase: Phase


class ObjectionResult(_Model):
    outcome: Literal["accepted", "duplicate", "rejected"]
    timely: bool = False
    reason: str = ""
    open_objections: int = 0


class ResolutionRequest(_Model):
    spec: NoticeSpec
    resolution: ResolveObjection
    at: datetime


class ResolutionResult(_Model):
    outcome: Literal["resolved", "duplicate", "rejected"]
    reason: str = ""
    open_objections: int = 0


class OptInRequest(_Model):
    spec: NoticeSpec
    customer_id: str
    opted_in: bool
    by: str
    channel: str
    key: str
    at: datetime


class OptInResult(_Model):
    outcome: Literal["recorded", "unchanged", "rejected"]
    reason: str = ""


class ChangeMailRequest(_Model):
    spec: NoticeSpec
    kind: Literal["postponement", "cancellation"]
    key: str
    detail: dict[str, Any] = Field(default_factory=dict)
    at: datetime


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
