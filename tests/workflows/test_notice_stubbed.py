"""NoticeWorkflow alone: the real workflow code in the time-skipping test server, its activities
replaced by in-memory stubs registered under the same names (no PostgreSQL, no SMTP). The tests
assert on what the workflow asked the stubs to do — which activities, in which order, with which
arguments — and on its query results. Fast (seconds) and deterministic: time moves only when a
test lets it (``env.sleep``, or waiting for the result)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from noticeflow.contracts import (
    BY,
    ActionFacts,
    ActivationRequest,
    ActivationRound,
    Activity,
    ApprovalCheck,
    AudienceRequest,
    ChangeMailRequest,
    EventRequest,
    IntakeRequest,
    IntakeRound,
    NoticeAction,
    NoticeActionKind,
    NoticeEventRequest,
    NoticeInput,
    NoticeRecord,
    NoticeState,
    NoticeStatus,
    NoticeTotals,
    PhaseChange,
    ReceiptOutcome,
    ReminderRequest,
    ReminderRound,
    SendRequest,
    SendResult,
    send_task_queue,
    workflow_id,
)
from noticeflow.domain import signals
from noticeflow.domain.events import NoticeApproved, NoticeCancelled, NoticePostponed
from noticeflow.domain.notice import NoticeSpec
from noticeflow.domain.rules import Phase
from tests import helpers
from workflows.notice import (
    PAYLOAD_HANDLERS,
    RECEIPT_HANDLERS,
    SEND_IN_SHARDS,
    TYPED_NOTICE_EVENTS,
    NoticeWorkflow,
)

WINDOW = timedelta(days=21)  # every stub customer's deadline: 21 days after the mailing


@dataclass
class Pending:
    receipt_id: str
    action: str
    notice_action: NoticeAction | None = None


@dataclass
class Stubs:
    """The records and the mail server, in memory: what the activities would read and write."""

    audience: int = 3
    calls: list[tuple[str, Any]] = field(default_factory=list)
    pending: list[Pending] = field(default_factory=list)
    settled: dict[str, ReceiptOutcome] = field(default_factory=dict)
    phase: Phase = Phase.draft
    effective_at: datetime | None = None
    totals: NoticeTotals = field(
        default_factory=lambda: NoticeTotals(
            audience_size=0,
            delivered=0,
            undelivered=0,
            open_objections=0,
            activated=0,
            unsettled=0,
            window_closes_at=None,
        )
    )

    def _call(self, name: str, arg: Any) -> None:
        self.calls.append((name, arg))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def args(self, name: str) -> list[Any]:
        return [arg for called, arg in self.calls if called == name]

    def phases(self) -> list[Phase]:
        return [change.phase for change in self.args(Activity.record_phase)]

    def _total(self, **changes: Any) -> NoticeTotals:
        self.totals = self.totals.model_copy(update=changes)
        return self.totals

    # --- the intake --------------------------------------------------------------------------

    @activity.defn(name=Activity.process_intake)
    async def process_intake(self, request: IntakeRequest) -> IntakeRound:
        """Customer actions are judged here, in receipt order, up to the first notice action,
        which goes back to the workflow (the rest wait for the next round)."""
        self._call(Activity.process_intake, request)
        handled = changed = 0
        while self.pending:
            item = self.pending.pop(0)
            handled += 1
            if item.notice_action is not None:
                return IntakeRound(
                    handled=handled, notice_action=item.notice_action, more=bool(self.pending)
                )
            changed += 1
            self.settled[item.receipt_id] = ReceiptOutcome(
                receipt_id=item.receipt_id, notice_id="", status="accepted"
            )
            if item.action == "object":
                self._total(open_objections=self.totals.open_objections + 1)
            elif item.action == "revoke_opt_in" and self.totals.activated:
                self._total(activated=self.totals.activated - 1)
        return IntakeRound(
            handled=handled,
            accepted=changed,
            changed=changed > 0,
            totals=self.totals if changed else None,
        )

    @activity.defn(name=Activity.settle_receipt)
    async def settle_receipt(self, outcome: ReceiptOutcome) -> None:
        self._call(Activity.settle_receipt, outcome)
        self.settled[outcome.receipt_id] = outcome

    # --- sending -----------------------------------------------------------------------------

    @activity.defn(name=Activity.check_approval)
    async def check_approval(self, request: AudienceRequest) -> ApprovalCheck:
        self._call(Activity.check_approval, request)
        return ApprovalCheck(
            audience_size=self.audience,
            latest_projected_deadline=request.at + WINDOW,
            latest_customer_id="c-1",
        )

    @activity.defn(name=Activity.snapshot_audience)
    async def snapshot_audience(self, request: AudienceRequest) -> int:
        self._call(Activity.snapshot_audience, request)
        self._total(audience_size=self.audience, unsettled=self.audience)
        return self.audience

    @activity.defn(name=Activity.send_notices)
    async def send_notices(self, request: SendRequest) -> SendResult:
        self._call(Activity.send_notices, request)
        self._total(delivered=self.audience, window_closes_at=request.at + WINDOW)
        return SendResult(processed=self.audience, delivered=self.audience, undelivered=0)

    @activity.defn(name=Activity.mail_change)
    async def mail_change(self, request: ChangeMailRequest) -> None:
        self._call(Activity.mail_change, request)

    # --- lifecycle ---------------------------------------------------------------------------

    @activity.defn(name=Activity.record_notice_event)
    async def record_notice_event(self, request: NoticeEventRequest) -> None:
        self._call(Activity.record_notice_event, request)

    @activity.defn(name=Activity.append_event)
    async def append_event(self, request: EventRequest) -> None:
        """Scheduled only by runs started before typed notice events (their histories)."""
        self._call(Activity.append_event, request)

    @activity.defn(name=Activity.record_phase)
    async def record_phase(self, change: PhaseChange) -> None:
        self._call(Activity.record_phase, change)
        self.phase, self.effective_at = change.phase, change.effective_at

    @activity.defn(name=Activity.load_notice_record)
    async def load_notice_record(self, notice_id: str) -> NoticeRecord:
        self._call(Activity.load_notice_record, notice_id)
        assert self.effective_at is not None
        return NoticeRecord(
            phase=self.phase,
            effective_at=self.effective_at,
            window_closes_at=self.totals.window_closes_at,
        )

    @activity.defn(name=Activity.read_totals)
    async def read_totals(self, notice_id: str) -> NoticeTotals:
        self._call(Activity.read_totals, notice_id)
        return self.totals

    @activity.defn(name=Activity.activate_due)
    async def activate_due(self, request: ActivationRequest) -> ActivationRound:
        """Every customer past its deadline without an open case is activated (or stays off
        after a revocation); the others wait for their deadline or for ops."""
        self._call(Activity.activate_due, request)
        closes = self.totals.window_closes_at
        assert closes is not None
        if request.now < closes:
            return ActivationRound(
                activated_now=0, deactivated_now=0, next_due=closes, totals=self.totals
            )
        held = self.totals.open_objections
        before = self.totals.activated
        activated = before if before else self.audience - held
        totals = self._total(activated=activated, unsettled=held)
        return ActivationRound(
            activated_now=activated - before, deactivated_now=0, next_due=None, totals=totals
        )

    @activity.defn(name=Activity.send_reminders)
    async def send_reminders(self, request: ReminderRequest) -> ReminderRound:
        self._call(Activity.send_reminders, request)
        return ReminderRound(sent=0, next_due=None)

    def activities(self) -> list[Callable[..., Any]]:
        return [
            self.process_intake,
            self.settle_receipt,
            self.check_approval,
            self.snapshot_audience,
            self.send_notices,
            self.mail_change,
            self.record_notice_event,
            self.append_event,
            self.record_phase,
            self.load_notice_record,
            self.read_totals,
            self.activate_due,
            self.send_reminders,
        ]


@dataclass
class Notice:
    env: WorkflowEnvironment
    stubs: Stubs
    spec: NoticeSpec
    handle: WorkflowHandle[Any, Any]
    task_queue: str

    async def status(self) -> NoticeStatus:
        return await self.handle.query(NoticeWorkflow.status)

    async def until(self, predicate: Callable[[], bool], what: str) -> None:
        """Wait (real time, the workflow's clock stands still) until the stubs show ``what``."""
        for _ in range(400):
            if predicate():
                return
            await asyncio.sleep(0.025)
        raise AssertionError(f"not reached: {what}; calls {self.stubs.names()}")

    async def act(
        self,
        action: NoticeActionKind,
        payload: dict[str, Any] | None = None,
        facts: ActionFacts | None = None,
    ) -> ReceiptOutcome:
        """A notice action through the intake: the receipt is pending, a signal wakes the
        workflow, the workflow settles it."""
        receipt_id = f"r-{uuid.uuid4().hex[:8]}"
        self.stubs.pending.append(
            Pending(
                receipt_id,
                action,
                NoticeAction(
                    receipt_id=receipt_id,
                    action=action,
                    payload=payload or {},
                    received_at=await self.env.get_current_time(),
                    facts=facts or ActionFacts(),
                ),
            )
        )
        await self.handle.signal(signals.WAKE_SIGNAL, {"receipt_id": receipt_id})
        await self.until(lambda: receipt_id in self.stubs.settled, f"{action} settled")
        return self.stubs.settled[receipt_id]

    async def customer(self, action: str) -> str:
        receipt_id = f"r-{uuid.uuid4().hex[:8]}"
        self.stubs.pending.append(Pending(receipt_id, action))
        await self.handle.signal(signals.WAKE_SIGNAL, {"receipt_id": receipt_id})
        await self.until(lambda: receipt_id in self.stubs.settled, f"{action} judged")
        return receipt_id

    async def result(self) -> NoticeStatus:
        return NoticeStatus.model_validate(await self.handle.result())


@pytest.fixture
async def own_clock() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of this test's own: these runs skip weeks and wait on results (the
    server then jumps to the next timer), which on the suite's shared server would push its clock
    decades ahead, past the dates later tests may give a notice."""
    # (imported here: this module defines a workflow, which the sandbox imports again)
    from noticeflow import codec, keyring
    from noticeflow.binaries import binary
    from noticeflow.temporal import register_search_attributes

    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=codec.data_converter(keyring.installed()),
        test_server_existing_path=binary("temporal-test-server"),
    )
    await register_search_attributes(env.client)
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
async def notice(own_clock: WorkflowEnvironment) -> Any:
    env = own_clock
    stubs = Stubs()
    task_queue = f"stub-{uuid.uuid4().hex[:8]}"
    now = await env.get_current_time()
    spec = helpers.notice(now, notice_id=f"stub-{uuid.uuid4().hex[:8]}")
    async with (
        Worker(
            env.client,
            task_queue=task_queue,
            workflows=[NoticeWorkflow, EagerToContinue],
            activities=stubs.activities(),
        ),
        Worker(  # the sending shards' own queue
            env.client, task_queue=send_task_queue(task_queue), activities=[stubs.send_notices]
        ),
    ):
        yield lambda workflow_class=NoticeWorkflow: _start(
            env, stubs, spec, task_queue, workflow_class
        )


async def _start(
    env: WorkflowEnvironment, stubs: Stubs, spec: NoticeSpec, task_queue: str, workflow_class: Any
) -> Notice:
    handle = await env.client.start_workflow(
        workflow_class.run,
        NoticeInput(spec=spec, author=""),
        id=workflow_id(spec.notice_id),
        task_queue=task_queue,
    )
    started = Notice(env, stubs, spec, handle, task_queue)
    await started.until(
        lambda: stubs.names() == [Activity.record_phase, Activity.process_intake], "draft"
    )
    return started


@workflow.defn(name="EagerToContinue")
class EagerToContinue(NoticeWorkflow):
    """NoticeWorkflow told to continue-as-new once, as soon as its window is open (the server
    suggests it only after thousands of events)."""

    @workflow.run
    async def run(self, notice: NoticeInput) -> NoticeStatus:
        return await super().run(notice)

    def _should_continue_as_new(self) -> bool:
        return self.state.phase is Phase.window_open and not workflow.info().continued_run_id


def _sequence(calls: list[tuple[str, Any]]) -> Iterator[str]:
    """Activity names, with the phase of each phase record."""
    for name, arg in calls:
        yield f"{name}:{arg.phase}" if name == Activity.record_phase else name


# --- the tests ---------------------------------------------------------------------------------


def test_every_notice_action_has_a_handler():
    assert {kind.value for kind in NoticeActionKind} == signals.NOTICE_ACTIONS
    assert set(RECEIPT_HANDLERS) == set(NoticeActionKind)
    assert set(PAYLOAD_HANDLERS) == set(NoticeActionKind)


async def test_draft_to_completion(notice):
    n: Notice = await notice()
    stubs, spec = n.stubs, n.spec
    assert (await n.status()).phase is Phase.draft

    outcome = await n.act(NoticeActionKind.approve)
    assert (outcome.status, outcome.reason) == ("accepted", None)
    await n.until(lambda: stubs.phase is Phase.window_open, "window open")
    status = await n.status()
    assert (status.phase, status.audience_size, status.delivered) == (Phase.window_open, 3, 3)
    assert status.window_closes_at == stubs.totals.window_closes_at

    done = await n.result()  # time skips: window closes, effective date, activation round
    assert (done.phase, done.activated, done.unsettled) == (Phase.active, 3, 0)
    assert list(_sequence(stubs.calls)) == [
        "record_phase:draft",
        "process_intake",
        "process_intake",  # the approval's receipt
        "check_approval",
        "record_notice_event",
        "record_phase:notifying",
        "settle_receipt",
        "snapshot_audience",
        "send_notices",
        "read_totals",
        "record_phase:window_open",
        "process_intake",  # woken by the window's close
        "record_phase:awaiting_effective_date",
        "process_intake",  # woken by the effective date
        "record_phase:active",
        "activate_due",
    ]
    (approved,) = stubs.args(Activity.record_notice_event)
    assert approved.event == NoticeApproved(audience_size=3)  # who: added from the receipt
    (settled,) = stubs.args(Activity.settle_receipt)
    assert approved.receipt_id == settled.receipt_id
    assert settled.notice_id == spec.notice_id
    # Every step has its own idempotency key, all of this run chain.
    keys = [arg.key for name, arg in stubs.calls if hasattr(arg, "key")]
    assert len(set(keys)) == len(keys) == 6
    assert all(key.startswith(f"{n.handle.first_execution_run_id}/") for key in keys)
    # Time moved only as far as the notice asked: the activation at the effective date.
    (activation,) = stubs.args(Activity.activate_due)
    assert activation.now >= spec.effective_at
    assert activation.now - spec.effective_at < timedelta(minutes=1)


async def test_four_eyes_and_a_repeat_are_settled_on_their_receipts(notice):
    n: Notice = await notice()
    stubs = n.stubs
    outcome = await n.act(NoticeActionKind.approve, facts=ActionFacts(by_is_author=True))
    assert outcome.status == "rejected"
    assert outcome.reason == f"{BY} wrote this notice and cannot also approve it (four eyes)"
    status = await n.status()
    assert (status.phase, status.rejected_signals) == (Phase.draft, 1)
    assert Activity.check_approval not in stubs.names()  # judged before asking the records

    assert (await n.act(NoticeActionKind.approve)).status == "accepted"
    again = await n.act(NoticeActionKind.approve, facts=ActionFacts(by_is_approver=True))
    assert (again.status, again.reason) == ("duplicate", f"already approved by {BY}")
    late = await n.act(NoticeActionKind.approve)
    assert late.status == "rejected" and "not draft" in (late.reason or "")
    assert len(stubs.args(Activity.check_approval)) == 1
    assert [o.status for o in stubs.args(Activity.settle_receipt)] == [
        "rejected",
        "accepted",
        "duplicate",
        "rejected",
    ]
    assert (await n.status()).rejected_signals == 2
    await n.handle.terminate("test over")


async def test_postpone_in_draft_then_while_the_window_is_open(notice):
    n: Notice = await notice()
    stubs, spec = n.stubs, n.spec
    first = spec.effective_at + timedelta(days=2)
    outcome = await n.act(NoticeActionKind.postpone, {"effective_at": first.isoformat()})
    assert outcome.status == "accepted"
    (event,) = stubs.args(Activity.record_notice_event)
    assert event.event == NoticePostponed.model_validate({"from": spec.effective_at, "to": first})
    assert event.receipt_id == outcome.receipt_id
    assert stubs.args(Activity.record_phase)[-1].effective_at == first
    assert (await n.status()).effective_at == first

    earlier = await n.act(NoticeActionKind.postpone, {"effective_at": spec.effective_at})
    assert earlier.status == "rejected"
    assert "later than the current effective date" in (earlier.reason or "")

    await n.act(NoticeActionKind.approve)
    await n.until(lambda: stubs.phase is Phase.window_open, "window open")
    second = first + timedelta(days=3)
    await n.act(NoticeActionKind.postpone, {"effective_at": second.isoformat()})
    (mail,) = stubs.args(Activity.mail_change)
    assert (mail.kind, mail.spec.effective_at) == ("postponement", second)
    assert _instants(mail.detail) == {"from": first, "to": second}
    assert len(stubs.args(Activity.record_notice_event)) == 2  # postponed (draft), approved

    done = await n.result()
    assert done.effective_at == second and done.activated == 3
    (activation,) = stubs.args(Activity.activate_due)
    assert activation.now >= second and activation.spec.effective_at == second


async def test_cancel_in_draft_records_an_event_and_completes(notice):
    n: Notice = await notice()
    outcome = await n.act(NoticeActionKind.cancel)
    assert outcome.status == "accepted"
    done = await n.result()
    assert done.phase is Phase.cancelled
    (event,) = n.stubs.args(Activity.record_notice_event)
    assert event.event == NoticeCancelled(phase="draft")
    assert Activity.mail_change not in n.stubs.names()
    assert n.stubs.phases() == [Phase.draft, Phase.cancelled]


async def test_cancel_while_the_window_is_open_mails_the_customers(notice):
    n: Notice = await notice()
    stubs = n.stubs
    await n.act(NoticeActionKind.approve)
    await n.until(lambda: stubs.phase is Phase.window_open, "window open")
    await n.act(NoticeActionKind.cancel)
    done = await n.result()
    assert (done.phase, done.activated) == (Phase.cancelled, 0)
    (mail,) = stubs.args(Activity.mail_change)
    assert (mail.kind, mail.detail) == ("cancellation", {"phase": "window_open"})
    assert Activity.activate_due not in stubs.names()
    again = await _late_action(n, "cancel")
    assert again.status == "duplicate"


async def _late_action(n: Notice, action: str) -> ReceiptOutcome:
    """A notice action after completion starts a new run from the records (control.wake)."""
    receipt_id = f"r-{uuid.uuid4().hex[:8]}"
    n.stubs.pending.append(
        Pending(
            receipt_id,
            action,
            NoticeAction(
                receipt_id=receipt_id,
                action=action,
                payload={},
                received_at=await n.env.get_current_time(),
                facts=ActionFacts(),
            ),
        )
    )
    await _restart(n, receipt_id)
    await n.until(lambda: receipt_id in n.stubs.settled, f"late {action} settled")
    return n.stubs.settled[receipt_id]


async def _restart(n: Notice, receipt_id: str) -> WorkflowHandle[Any, Any]:
    assert n.stubs.effective_at is not None
    state = NoticeState(
        phase=n.stubs.phase,
        effective_at=n.stubs.effective_at,
        event_seq=100,
        needs_activation_round=True,
        restarted=True,
    )
    n.handle = await n.env.client.start_workflow(
        NoticeWorkflow.run,
        NoticeInput(spec=n.spec, author="", state=state),
        id=workflow_id(n.spec.notice_id),
        task_queue=n.task_queue,
        start_signal=signals.WAKE_SIGNAL,
        start_signal_args=[{"receipt_id": receipt_id}],
    )
    return n.handle


async def test_a_receipt_after_completion_is_judged_by_a_new_run(notice):
    n: Notice = await notice()
    stubs = n.stubs
    await n.act(NoticeActionKind.approve)
    first = await n.result()
    assert (first.phase, first.activated) == (Phase.active, 3)
    first_run = (await n.handle.describe()).run_id
    before = len(stubs.calls)

    receipt_id = f"r-{uuid.uuid4().hex[:8]}"
    stubs.pending.append(Pending(receipt_id, "revoke_opt_in"))
    await _restart(n, receipt_id)
    again = await n.result()
    assert (await n.handle.describe()).run_id != first_run
    assert stubs.settled[receipt_id].status == "accepted"
    # The new run reads the records first, judges the receipt, then decides again: no phase
    # is recorded again and nothing is mailed.
    assert stubs.names()[before:] == [
        Activity.load_notice_record,
        Activity.process_intake,
        Activity.activate_due,
    ]
    assert (again.phase, again.activated, again.unsettled) == (Phase.active, 2, 0)
    assert again.signals_handled == 1


async def test_continue_as_new_carries_the_state(notice):
    n: Notice = await notice(EagerToContinue)
    stubs = n.stubs
    await n.act(NoticeActionKind.approve)
    await n.until(lambda: stubs.phase is Phase.window_open, "window open")
    first_run = n.handle.first_execution_run_id
    await n.customer("object")  # judged by the second run, on the first run's counts
    latest = n.env.client.get_workflow_handle(workflow_id(n.spec.notice_id))
    second_run = (await latest.describe()).run_id
    assert second_run != first_run

    status = await _status_when(latest, lambda s: s.signals_handled == 2)
    assert (status.phase, status.audience_size, status.delivered) == (Phase.window_open, 3, 3)
    assert status.open_objections == 1 and status.pending_signals == 0
    assert status.window_closes_at == stubs.totals.window_closes_at

    # Past the effective date: the objector is held (an open timely case), the others go on.
    await n.env.sleep(n.spec.effective_at - await n.env.get_current_time() + timedelta(hours=1))
    status = await _status_when(latest, lambda s: s.phase is Phase.active and s.activated > 0)
    assert (status.activated, status.unsettled) == (2, 1)
    assert (await latest.describe()).run_id == second_run  # continued once only
    # The second run neither records the draft again nor reuses a step key of the first.
    assert stubs.phases() == [
        Phase.draft,
        Phase.notifying,
        Phase.window_open,
        Phase.awaiting_effective_date,
        Phase.active,
    ]
    keys = [arg.key for _, arg in stubs.calls if hasattr(arg, "key")]
    assert len(set(keys)) == len(keys)
    assert all(key.startswith(f"{first_run}/") for key in keys)
    await latest.terminate("test over")


async def _status_when(
    handle: WorkflowHandle[Any, Any], predicate: Callable[[NoticeStatus], bool]
) -> NoticeStatus:
    for _ in range(400):
        status: NoticeStatus = await handle.query(NoticeWorkflow.status)
        if predicate(status):
            return status
        await asyncio.sleep(0.025)
    raise AssertionError(f"not reached; last status {status}")


def _instants(data: dict[str, Any]) -> dict[str, Any]:
    """An event's data as the activity gets it: instants are ISO strings in JSON."""
    return {key: datetime.fromisoformat(value) for key, value in data.items()}


async def notice_actions_story(n: Notice) -> NoticeStatus:
    """Every notice action the workflow records an event or a mail for, on one notice: postponed
    in draft, approval refused (four eyes) then given, postponed while the window is open, then
    cancelled. (tests/workflows/histories/notice_before_typed_events.json is this story.)"""
    stubs, spec = n.stubs, n.spec
    later = spec.effective_at + timedelta(days=2)
    assert (await n.act(NoticeActionKind.postpone, {"effective_at": later})).status == "accepted"
    refused = await n.act(NoticeActionKind.approve, facts=ActionFacts(by_is_author=True))
    assert refused.status == "rejected"
    assert (await n.act(NoticeActionKind.approve)).status == "accepted"
    await n.until(lambda: stubs.phase is Phase.window_open, "window open")
    later += timedelta(days=3)
    assert (await n.act(NoticeActionKind.postpone, {"effective_at": later})).status == "accepted"
    assert (await n.act(NoticeActionKind.cancel)).status == "accepted"
    return await n.result()


async def test_the_story_of_notice_actions(notice):
    n: Notice = await notice()
    done = await notice_actions_story(n)
    assert (done.phase, done.effective_at) == (
        Phase.cancelled,
        n.spec.effective_at + timedelta(days=5),
    )
    assert [
        (r.event_type, r.receipt_id is not None) for r in n.stubs.args(Activity.record_notice_event)
    ] == [
        ("notice_postponed", True),
        ("notice_approved", True),
    ]
    assert [m.kind for m in n.stubs.args(Activity.mail_change)] == ["postponement", "cancellation"]
    assert [o.status for o in n.stubs.args(Activity.settle_receipt)] == [
        "accepted",
        "rejected",
        "accepted",
        "accepted",
        "accepted",
    ]


async def test_a_new_run_records_typed_events_behind_a_patch_and_replays(notice):
    """Since the patch a run schedules ``record_notice_event``, never ``append_event`` (which
    runs started before it keep: tests/workflows/test_replay.py); its history carries the patch
    marker and replays."""
    n: Notice = await notice()
    await notice_actions_story(n)
    assert Activity.append_event not in n.stubs.names()
    history = await n.handle.fetch_history()
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert scheduled.count(Activity.record_notice_event) == 2
    assert Activity.append_event not in scheduled
    markers = [
        e.marker_recorded_event_attributes
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
    ]
    # One marker per patch, however often it is asked: typed events, and the shards of sending.
    patches = [str(m.details) for m in markers]  # the patch id is in the marker's details
    assert [m.marker_name for m in markers] == ["core_patch"] * 2, patches
    assert [TYPED_NOTICE_EVENTS in p for p in patches] == [True, False], patches
    assert [SEND_IN_SHARDS in p for p in patches] == [False, True], patches
    # (Imported here: the sandbox re-imports this module for EagerToContinue, and the codec's
    # cryptography may not be imported inside a workflow.)
    from noticeflow import codec, keyring

    replayer = Replayer(
        workflows=[NoticeWorkflow], data_converter=codec.data_converter(keyring.installed())
    )
    assert (await replayer.replay_workflow(history)).replay_failure is None
