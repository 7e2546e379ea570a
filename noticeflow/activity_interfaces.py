"""The activities' typed interfaces: what the workflow calls, by method, never by a name string.

The workflow may import only the contracts and the domain, never activities/; so each activity
group has an interface here — one class per group the worker registers (sending, intake,
lifecycle, reminders, the notice's typed events) — whose methods carry the activity's type name
(``noticeflow.contracts.Activity``: what histories record, so never renamed) and its request and
result types. The workflow calls
``workflow.execute_activity_method(Sending.check_approval, request, ...)``: the name comes from
the definition and the result is decoded as the declared type, with no ``result_type`` to get
wrong. The bodies are never run; the implementations in activities/ are registered under the same
names with the same annotations (tests/workflows/test_activity_interfaces.py keeps them in step).
"""

from __future__ import annotations

from typing import NoReturn

from temporalio import activity

from noticeflow.contracts import (
    ActivationRequest,
    ActivationRound,
    Activity,
    ApprovalCheck,
    AudienceRequest,
    ChangeMailRequest,
    EventRequest,
    IntakeRequest,
    IntakeRound,
    NoticeEventRequest,
    NoticeRecord,
    NoticeTotals,
    PhaseChange,
    ReceiptOutcome,
    ReminderRequest,
    ReminderRound,
    ResendRequest,
    ResendResult,
    SendRequest,
    SendResult,
    WebhookRequest,
    WebhookRound,
)


def _interface_only(name: str) -> NoReturn:
    raise NotImplementedError(f"{name} is an interface: the worker registers its implementation")


class Sending:
    """The audience, the notice mail, resends and change mails (activities/sending.py)."""

    @activity.defn(name=Activity.check_approval)
    async def check_approval(self, request: AudienceRequest) -> ApprovalCheck:
        _interface_only(Activity.check_approval)

    @activity.defn(name=Activity.snapshot_audience)
    async def snapshot_audience(self, request: AudienceRequest) -> int:
        _interface_only(Activity.snapshot_audience)

    @activity.defn(name=Activity.send_notices)
    async def send_notices(self, request: SendRequest) -> SendResult:
        _interface_only(Activity.send_notices)

    @activity.defn(name=Activity.resend_notice)
    async def resend_notice(self, request: ResendRequest) -> ResendResult:
        _interface_only(Activity.resend_notice)

    @activity.defn(name=Activity.mail_change)
    async def mail_change(self, request: ChangeMailRequest) -> None:
        _interface_only(Activity.mail_change)


class Intake:
    """Judging pending receipts and settling the workflow's own (activities/intake.py)."""

    @activity.defn(name=Activity.process_intake)
    async def process_intake(self, request: IntakeRequest) -> IntakeRound:
        _interface_only(Activity.process_intake)

    @activity.defn(name=Activity.settle_receipt)
    async def settle_receipt(self, outcome: ReceiptOutcome) -> None:
        _interface_only(Activity.settle_receipt)


class Lifecycle:
    """Phase records, totals, the notice's record, activation (activities/lifecycle.py)."""

    @activity.defn(name=Activity.append_event)
    async def append_event(self, request: EventRequest) -> None:
        """The generic event of runs recorded before typed notice events (kept for replay)."""
        _interface_only(Activity.append_event)

    @activity.defn(name=Activity.record_phase)
    async def record_phase(self, change: PhaseChange) -> None:
        _interface_only(Activity.record_phase)

    @activity.defn(name=Activity.load_notice_record)
    async def load_notice_record(self, notice_id: str) -> NoticeRecord:
        _interface_only(Activity.load_notice_record)

    @activity.defn(name=Activity.read_totals)
    async def read_totals(self, notice_id: str) -> NoticeTotals:
        _interface_only(Activity.read_totals)

    @activity.defn(name=Activity.activate_due)
    async def activate_due(self, request: ActivationRequest) -> ActivationRound:
        _interface_only(Activity.activate_due)


class Reminders:
    """Reminder mail before customer deadlines (activities/reminders.py)."""

    @activity.defn(name=Activity.send_reminders)
    async def send_reminders(self, request: ReminderRequest) -> ReminderRound:
        _interface_only(Activity.send_reminders)


class NoticeEvents:
    """The notice's own typed events: approved, postponed, cancelled (activities/notice_events.py)."""

    @activity.defn(name=Activity.record_notice_event)
    async def record_notice_event(self, request: NoticeEventRequest) -> None:
        _interface_only(Activity.record_notice_event)


class Webhooks:
    """Signed webhook delivery (activities/webhooks.py, workflows/webhooks.py)."""

    @activity.defn(name=Activity.deliver_webhooks)
    async def deliver_webhooks(self, request: WebhookRequest) -> WebhookRound:
        _interface_only(Activity.deliver_webhooks)


INTERFACES: tuple[type, ...] = (Sending, Intake, Lifecycle, Reminders, NoticeEvents, Webhooks)
