"""NoticeWorkflow: one durable workflow per notice.

    draft -> (approval) -> notifying -> window_open -> awaiting_effective_date -> active
                                                                         (or -> cancelled)

Signal handlers only append to an inbox (no awaits, so they can never fail a workflow task); the main
loop takes inbox items one at a time, in order, and acts through activities. Per-customer state lives
in PostgreSQL; the workflow keeps counts and instants, so its history does not grow with the audience.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pydantic import ValidationError
from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from noticeflow import search_attributes as sa
    from noticeflow.activity_interfaces import Intake, Lifecycle, NoticeEvents, Reminders, Sending
    from noticeflow.contracts import (
        BY,
        UNDECODABLE_ENCODING,
        ActionFacts,
        ActivationRequest,
        ApprovalCheck,
        AudienceRequest,
        ChangeMailRequest,
        EventRequest,
        InboxItem,
        IntakeRequest,
        NoticeAction,
        NoticeActionKind,
        NoticeEvent,
        NoticeEventRequest,
        NoticeInput,
        NoticeState,
        NoticeStatus,
        NoticeTotals,
        PhaseChange,
        RawAction,
        ReceiptOutcome,
        ReminderRequest,
        SendRequest,
        send_shards,
        send_task_queue,
    )
    from noticeflow.domain import signals
    from noticeflow.domain.events import NoticeApproved, NoticeCancelled, NoticePostponed
    from noticeflow.domain.rules import ChangeKind, Phase, effective_date_problem
    from noticeflow.domain.summaries import md, utc

SHORT = timedelta(minutes=2)
HEARTBEAT = timedelta(minutes=1)
# Mailing a whole audience in one activity: liveness is the one-minute heartbeat, not this bound.
MAILING = timedelta(hours=24)
# Freezing the audience: a million customers take a minute or two; liveness is the heartbeat the
# activity sends while it runs (activities/deps.py beating), this the bound for a stuck database.
# (Activity options are not compared on replay: a running notice replays as before.)
SNAPSHOT = timedelta(hours=1)
# Transient faults retry with bounded backoff (at most a minute apart); lasting ones never reach
# here as retries: activities turn them into recorded rejections (see noticeflow/application/intake.py).
RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))
MAX_SIGNAL_BYTES = 64 * 1024
# Events about the notice are recorded by the typed record_notice_event activity (runs started
# before this patch keep the generic append_event).
TYPED_NOTICE_EVENTS = "typed-notice-events"
# A removal that has taken effect (phase active) can no longer be cancelled. Only removals reach
# the check (none existed before it), but it is marked all the same.
REMOVAL_KEEPS_EFFECT = "removal-keeps-effect"
# The audience is mailed in shards on the send task queue, spread over every worker (a notice
# whose mailing started before keeps its one activity on the workflow's own queue).
SEND_IN_SHARDS = "send-in-shards"
SENT_PHASES = {Phase.notifying, Phase.window_open, Phase.awaiting_effective_date, Phase.active}
POSTPONABLE_PHASES = {
    Phase.draft,
    Phase.notifying,
    Phase.window_open,
    Phase.awaiting_effective_date,
}
# Cancelling an active notice stops every activation still to come; customers already switched
# on keep the sub-processor (switching it off again takes a removal notice).
CANCELLABLE_PHASES = POSTPONABLE_PHASES | {Phase.active}
# The Temporal Web UI's "current details" headline for each phase.
PHASE_WORDS = {
    Phase.draft: "Draft: waiting for approval",
    Phase.notifying: "Notifying: mailing the audience",
    Phase.window_open: "Window open: customers may object or opt in",
    Phase.awaiting_effective_date: "Every window closed: waiting for the effective date",
    Phase.active: "Active: customers are activated as their windows pass",
    Phase.cancelled: "Cancelled",
}


_Arg = TypeVar("_Arg")
_Result = TypeVar("_Result")


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


class Rejected(Exception):
    """An action that is well-formed but not acceptable now; recorded on its receipt."""


class Repeated(Exception):
    """An action that repeats one already in effect (e.g. a second approval by the approver)."""


@workflow.defn(name="NoticeWorkflow")
class NoticeWorkflow:
    @workflow.init
    def __init__(self, notice: NoticeInput) -> None:
        # State is built here, not in run(): signals that arrive with the start are delivered
        # before run() begins, and must land in this state's inbox.
        self.spec = notice.spec
        self.author = notice.author
        self.state = notice.state or NoticeState(effective_at=notice.spec.effective_at)
        self._fresh = notice.state is None

    # --- entry point -------------------------------------------------------------------------

    @workflow.run
    async def run(self, notice: NoticeInput) -> NoticeStatus:
        self._show()
        if self._fresh:
            await self._record_phase(Phase.draft)
        if self.state.restarted:
            # Started after completion: the records, read now the earlier run has closed, are
            # the truth (the caller's snapshot may predate that run's last step).
            record = await self._activity(
                Lifecycle.load_notice_record,
                self.spec.notice_id,
                summary="read the notice from the records (a run after completion)",
            )
            self.state.phase = record.phase
            self.state.effective_at = record.effective_at
            self.state.approved_by = record.approved_by
            self.state.window_closes_at = record.window_closes_at
            self.spec = self.spec.model_copy(update={"effective_at": record.effective_at})
            self.state.restarted = False
        self._publish_search_attributes()
        while True:
            await self._take_intake()
            if self.state.phase is Phase.cancelled:
                break
            finished = await self._advance()
            if finished and not self.state.inbox:
                break  # every customer settled; a later action starts a new run (control.py)
            await self._remind_if_due()
            if self.state.intake_deferred and self.state.phase is not Phase.notifying:
                continue  # actions that waited for the audience snapshot: judge them now
            if self._should_continue_as_new():
                await workflow.wait_condition(workflow.all_handlers_finished)
                # No names carried on: a notice started before names left Temporal drops them
                # here (its actions are judged from receipts and facts from now on).
                carried = self.state.model_copy(update={"approved_by": None, "cancel_reason": None})
                workflow.continue_as_new(NoticeInput(spec=self.spec, author="", state=carried))
            await self._sleep_until_next_event()
        self._show(finished=True)
        return self.status()

    # --- signals and query -------------------------------------------------------------------

    @workflow.signal(dynamic=True)
    def on_signal(self, name: str, args: Sequence[RawValue]) -> None:
        """Every signal lands here; nothing is decoded strictly, so nothing can be dropped."""
        payload: Any = None
        decode_error = None
        if len(args) != 1:
            decode_error = f"expected exactly one JSON argument, got {len(args)}"
        elif args[0].payload.metadata.get("encoding") == UNDECODABLE_ENCODING:
            decode_error = "payload could not be decrypted (an unknown codec key, or altered)"
        elif len(args[0].payload.data) > MAX_SIGNAL_BYTES:
            # Kept out of the inbox: it would travel in every activity input and continue-as-new.
            decode_error = f"payload too large ({len(args[0].payload.data)} bytes)"
        else:
            try:
                payload = workflow.payload_converter().from_payload(args[0].payload)
            except Exception as error:  # any undecodable payload is recorded, not raised
                decode_error = f"payload is not JSON: {error}"
        self.state.signal_seq += 1
        self.state.inbox.append(
            InboxItem(
                name=name,
                payload=payload,
                received_at=workflow.now(),
                decode_error=decode_error,
                seq=self.state.signal_seq,
            )
        )

    @workflow.query(name="status")
    def status(self) -> NoticeStatus:
        state = self.state
        return NoticeStatus(
            notice_id=self.spec.notice_id,
            phase=state.phase,
            subprocessor=self.spec.subprocessor,
            opt_in=self.spec.opt_in,
            author=self.author,
            approved_by=state.approved_by,
            effective_at=state.effective_at,
            window_closes_at=state.window_closes_at,
            audience_size=state.audience_size,
            delivered=state.delivered,
            undelivered=state.undelivered,
            open_objections=state.open_objections,
            activated=state.activated,
            unsettled=state.unsettled,
            rejected_signals=state.rejected_signals,
            signals_handled=state.signals_handled,
            pending_signals=len(state.inbox),
            cancel_reason=state.cancel_reason,
            next_reminder_at=state.next_reminder_at,
        )

    # --- the intake ------------------------------------------------------------------------

    async def _take_intake(self) -> None:
        """Judge everything pending in the intake, in receipt order, many receipts per activity.

        Signals only wake this: a receipt's signal names a receipt already in the database, and a
        raw signal (the Temporal CLI) is written there first, with the time this workflow received
        it as its receipt time. Customer actions are judged by the activity; the first pending
        action about the notice as a whole comes back to be judged here, against this state.
        """
        state = self.state
        first = True
        while first or state.inbox or state.intake_more:
            first = False
            taken = list(state.inbox)
            raw = [self._raw_action(item) for item in taken if not item.is_wake()]
            result = await self._activity(
                Intake.process_intake,
                IntakeRequest(spec=self.spec, phase=state.phase, raw=raw, at=workflow.now()),
                timeout=MAILING,
                summary="judge pending receipts in receipt order"
                + (f" ({len(raw):,} raw signals first)" if raw else ""),
            )
            del state.inbox[: len(taken)]
            state.signals_handled += len(taken)
            state.rejected_signals += result.rejected
            state.intake_more = result.more
            state.intake_deferred = result.deferred > 0
            if result.changed:
                state.needs_activation_round = True
            if result.deliveries_changed:
                state.reminders_scheduled = False  # a new deadline may need a reminder
            if result.totals is not None:
                self._apply_totals(result.totals)
            if result.notice_action is not None:
                await self._judge_notice_action(result.notice_action)
            self._show()

    def _raw_action(self, item: InboxItem) -> RawAction:
        problem = item.decode_error
        if problem is None and item.name not in signals.SIGNAL_PAYLOADS:
            problem = f"unknown signal {item.name!r}"
        return RawAction(
            receipt_id=f"sig-{workflow.info().first_execution_run_id}-{item.seq}",
            action=item.name,
            payload=item.payload,
            received_at=item.received_at,
            problem=problem,
        )

    async def _judge_notice_action(self, action: NoticeAction) -> None:
        status, reason = "accepted", None
        try:
            if action.facts is not None:
                # Ids and facts only: who and why stay in the receipt (no names in Temporal).
                await RECEIPT_HANDLERS[action.action](self, action, action.facts)
            else:  # recorded before receipts carried facts: the payload has the names
                payload = signals.SIGNAL_PAYLOADS[action.action].model_validate(action.payload)
                await PAYLOAD_HANDLERS[action.action](self, payload, action.received_at)
        except ValidationError as error:
            status = "rejected"
            reason = f"invalid {action.action} payload: " + "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'payload'}: {e['msg']}"
                for e in error.errors()
            )
        except Rejected as rejection:
            status, reason = "rejected", str(rejection)
        except Repeated as repeat:
            status, reason = "duplicate", str(repeat)
        except ActivityError as error:  # a lasting fault while carrying it out: recorded
            status = "rejected"
            reason = f"could not be carried out: {error.cause or error}"
        if status == "rejected":
            self.state.rejected_signals += 1
            workflow.logger.info("action rejected", extra={"action": action.action})
        await self._activity(
            Intake.settle_receipt,
            ReceiptOutcome(
                receipt_id=action.receipt_id,
                notice_id=self.spec.notice_id,
                status=status,
                reason=reason,
            ),
            summary=f"settle {action.action} receipt {action.receipt_id}: {status}",
        )

    async def _approve(self, action: NoticeAction, facts: ActionFacts) -> None:
        # The person is named in the reason by the activity that settles the receipt ({by}).
        if facts.by_is_approver:
            raise Repeated(f"already approved by {BY}")
        if self.state.phase is not Phase.draft:
            raise Rejected(f"notice is {self.state.phase}, not draft: approval not needed")
        if facts.by_is_author:
            raise Rejected(f"{BY} wrote this notice and cannot also approve it (four eyes)")
        check = await self._check_approval(action.received_at)
        await self._event(NoticeApproved(audience_size=check.audience_size), action.receipt_id)
        await self._record_phase(Phase.notifying)

    async def _postpone(self, action: NoticeAction, facts: ActionFacts) -> None:
        to = datetime.fromisoformat(str(action.payload["effective_at"]))
        await self._postpone_to(to, action.received_at, {}, action.receipt_id)

    async def _cancel(self, action: NoticeAction, facts: ActionFacts) -> None:
        self._check_cancellable()
        detail = {"phase": str(self.state.phase)}
        if self.state.phase is Phase.draft:
            await self._event(NoticeCancelled.model_validate(detail), action.receipt_id)
        else:
            await self._change_mail(
                "cancellation", detail, action.received_at, None, action.receipt_id
            )
        await self._record_phase(Phase.cancelled)

    async def _on_approve(self, approve: signals.Approve, at: datetime) -> None:
        approver = self.state.approved_by
        if approver is not None and signals.same_person(approver, approve.by):
            raise Repeated(f"already approved by {approver}")
        if self.state.phase is not Phase.draft:
            raise Rejected(f"notice is {self.state.phase}, not draft: approval not needed")
        if signals.same_person(approve.by, self.author):
            raise Rejected(f"{approve.by} wrote this notice and cannot also approve it (four eyes)")
        check = await self._check_approval(at)
        self.state.approved_by = approve.by
        await self._event(NoticeApproved(by=approve.by, audience_size=check.audience_size))
        await self._record_phase(Phase.notifying)

    async def _check_approval(self, at: datetime) -> ApprovalCheck:
        check = await self._activity(
            Sending.check_approval,
            AudienceRequest(spec=self.spec, at=at),
            summary="check the audience and every projected deadline (rule 6)",
        )
        if check.audience_size == 0:
            raise Rejected("the audience selects no customer")
        problem = effective_date_problem(
            self.state.effective_at, check.latest_projected_deadline, check.latest_customer_id
        )
        if problem is not None:
            raise Rejected(problem)
        return check

    async def _on_postpone(self, postpone: signals.Postpone, at: datetime) -> None:
        await self._postpone_to(postpone.effective_at, at, {"by": postpone.by})

    async def _postpone_to(
        self, to: datetime, at: datetime, who: dict[str, Any], receipt_id: str | None = None
    ) -> None:
        if self.state.phase not in POSTPONABLE_PHASES:
            raise Rejected(f"notice is {self.state.phase}: too late to postpone")
        if to <= at:
            raise Rejected(
                f"{to.isoformat()} is in the past: a postponement must be later"
                " than now and than the current effective date"
            )
        if to <= self.state.effective_at:
            raise Rejected(
                f"a postponement must be later than the current effective date "
                f"{self.state.effective_at.isoformat()}"
            )
        previous = self.state.effective_at
        spec = self.spec.model_copy(update={"effective_at": to})
        # A postponement is a new version of the text: mail_change records its hash.
        detail = {**who, "from": previous, "to": to}
        if self.state.phase is Phase.draft:
            await self._event(NoticePostponed.model_validate(detail), receipt_id)
        else:
            await self._change_mail("postponement", detail, at, spec, receipt_id)
        self.spec = spec
        self.state.effective_at = to
        await self._record_phase(self.state.phase)

    def _check_cancellable(self) -> None:
        if self.state.phase is Phase.cancelled:
            raise Repeated("the notice is already cancelled")
        if self.state.phase not in CANCELLABLE_PHASES:
            raise Rejected(f"notice is {self.state.phase}: it can no longer be cancelled")
        if (
            self.state.phase is Phase.active
            and self.spec.kind is ChangeKind.removal
            and workflow.patched(REMOVAL_KEEPS_EFFECT)
        ):
            raise Rejected(
                "the removal has taken effect: the sub-processor is off for its customers, and"
                " cancelling cannot undo that; to use it again, send an addition notice"
            )

    async def _on_cancel(self, cancel: signals.Cancel, at: datetime) -> None:
        self._check_cancellable()
        detail = {"by": cancel.by, "reason": cancel.reason, "phase": str(self.state.phase)}
        if self.state.phase is Phase.draft:
            await self._event(NoticeCancelled.model_validate(detail))
        else:
            await self._change_mail("cancellation", detail, at)
        self.state.cancel_reason = cancel.reason
        await self._record_phase(Phase.cancelled)

    # --- time-driven progress ----------------------------------------------------------------

    async def _advance(self) -> bool:
        """Move on as far as time allows. Returns True when every customer is settled."""
        phase = self.state.phase
        now = workflow.now()
        if phase is Phase.notifying:
            if not await self._send_all():
                return False  # a cancel arrived mid-send: the main loop handles it next
            await self._record_phase(Phase.window_open)
        elif phase is Phase.window_open and now < self.state.effective_at:
            if now < self._window_closes_at():
                return False
            await self._record_phase(Phase.awaiting_effective_date)
        elif phase in {Phase.window_open, Phase.awaiting_effective_date} and (
            now >= self.state.effective_at
        ):
            # A customer whose own window is still open is simply not due yet (staggered).
            await self._record_phase(Phase.active)
            self.state.needs_activation_round = True
        elif phase is Phase.active:
            due = self.state.next_due is not None and now >= self.state.next_due
            if self.state.needs_activation_round or due:
                await self._activation_round()
                return self.state.unsettled == 0
            return False
        else:
            return False
        return await self._advance()

    async def _remind_if_due(self) -> None:
        """Reminders before each customer's deadline, if the notice asks for them."""
        state = self.state
        if self.spec.reminder_before is None or state.phase not in SENT_PHASES - {Phase.notifying}:
            return
        due = state.next_reminder_at
        if state.reminders_scheduled and (due is None or workflow.now() < due):
            return
        result = await self._activity(
            Reminders.send_reminders,
            ReminderRequest(spec=self.spec, now=workflow.now()),
            timeout=MAILING,
            summary="mail the reminders due before customer deadlines",
        )
        state.reminders_scheduled = True
        state.next_reminder_at = result.next_due

    def _window_closes_at(self) -> datetime:
        return self.state.window_closes_at or workflow.now()

    def _next_wakeup(self) -> tuple[datetime, str] | None:
        """The next instant the notice moves on by itself, and what happens then (the words go
        on the timer and in the current details of the Temporal Web UI)."""
        wakeups = [self._phase_wakeup()]
        if self.state.next_reminder_at is not None:
            wakeups.append((self.state.next_reminder_at, "reminders due"))
        return min((w for w in wakeups if w is not None), key=lambda w: w[0], default=None)

    def _phase_wakeup(self) -> tuple[datetime, str] | None:
        phase, effective_at = self.state.phase, self.state.effective_at
        if phase is Phase.window_open:
            closes = self._window_closes_at()
            if closes <= effective_at:
                return closes, "window closes"
            return effective_at, "effective date (activation starts)"
        if phase is Phase.awaiting_effective_date:
            return effective_at, "effective date (activation starts)"
        if phase is Phase.active and self.state.next_due is not None:
            return self.state.next_due, "next customer deadline (activation round)"
        return None

    async def _sleep_until_next_event(self) -> None:
        wakeup = self._next_wakeup()
        timeout = None
        if wakeup is not None:
            timeout = max(wakeup[0] - workflow.now(), timedelta(seconds=1))
        self._show()
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: bool(self.state.inbox) or self._should_continue_as_new(),
                timeout=timeout,
                timeout_summary=f"{wakeup[1]} {utc(wakeup[0])}" if wakeup else None,
            )

    async def _send_all(self) -> bool:
        """Snapshot and mail the audience; False when a cancel signal stopped the mailing."""
        audience = await self._activity(
            Sending.snapshot_audience,
            AudienceRequest(spec=self.spec, at=workflow.now()),
            timeout=SNAPSHOT,
            summary="snapshot the audience: customers, contacts, contract terms (rule 3)",
        )
        self._show(mailing=audience)
        at = workflow.now()
        if workflow.patched(SEND_IN_SHARDS):
            # The audience in shards, each an activity on the send task queue that any worker
            # may run (each takes at most NOTICEFLOW_SEND_SLOTS at once, so the shards slide over
            # every worker); a bounded number, so the history stays flat.
            shards = send_shards(audience)
            queue = send_task_queue(workflow.info().task_queue)
            requests = [
                SendRequest(spec=self.spec, at=at, shard=shard, shards=shards)
                for shard in range(shards)
            ]
            what = f"mail shard {{}} of {shards} ({_count(audience, 'customer')} in all)"
            if shards == 1:
                what = f"mail {_count(audience, 'customer')}"
        else:  # started before shards: one activity on the workflow's own queue mails everyone
            queue, requests = None, [SendRequest(spec=self.spec, at=at)]
            what = f"mail {_count(audience, 'customer')}"
        # Each activity mails its customers in batches, heartbeating its cursor: the history
        # gets the same few events for ten customers or a hundred thousand.
        sending = [
            workflow.start_activity_method(
                Sending.send_notices,
                request,
                task_queue=queue,
                start_to_close_timeout=MAILING,
                heartbeat_timeout=HEARTBEAT,
                retry_policy=RETRY,
                # A cancel waits until the activity has stopped and recorded whom it reached, so
                # that the cancellation mail finds every customer who got the notice.
                cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                summary=what.format(request.shard + 1),
            )
            for request in requests
        ]
        await workflow.wait_condition(
            lambda: all(shard.done() for shard in sending) or self._cancel_waiting()
        )
        stopped = not all(shard.done() for shard in sending)
        if stopped:
            for shard in sending:
                shard.cancel()
            for shard in sending:
                with contextlib.suppress(ActivityError):
                    await shard
        else:
            for shard in sending:
                await shard
        await self._refresh_totals()
        return not stopped

    def _cancel_waiting(self) -> bool:
        """A cancel is in the inbox: a receipt's (judged once the mailing stopped; if it is
        rejected the mailing resumes from the ledger), or a raw one that validates (an invalid
        one must not stop the mailing)."""
        for item in self.state.inbox:
            if item.name == "cancel" and item.is_wake():
                return True
            if item.name == "cancel" and not item.decode_error:
                try:
                    signals.Cancel.model_validate(item.payload)
                except ValidationError:
                    continue
                return True
        return False

    async def _activation_round(self) -> None:
        self.state.needs_activation_round = False
        result = await self._activity(
            Lifecycle.activate_due,
            ActivationRequest(spec=self.spec, now=workflow.now()),
            timeout=MAILING,
            summary=f"activation round: {_count(self.state.unsettled, 'customer')} not settled yet",
        )
        self.state.next_due = result.next_due
        self._apply_totals(result.totals)

    async def _refresh_totals(self) -> None:
        totals = await self._activity(
            Lifecycle.read_totals,
            self.spec.notice_id,
            summary="read the counts back from the records",
        )
        self._apply_totals(totals)

    def _apply_totals(self, totals: NoticeTotals) -> None:
        state = self.state
        state.audience_size = totals.audience_size
        state.delivered = totals.delivered
        state.undelivered = totals.undelivered
        state.open_objections = totals.open_objections
        state.activated = totals.activated
        state.unsettled = totals.unsettled
        state.opted_in = totals.opted_in
        state.window_closes_at = totals.window_closes_at
        self._publish_search_attributes()

    # --- records -----------------------------------------------------------------------------

    async def _record_phase(self, phase: Phase) -> None:
        self.state.phase = phase
        self.state.event_seq += 1
        await self._activity(
            Lifecycle.record_phase,
            PhaseChange(
                notice_id=self.spec.notice_id,
                phase=phase,
                at=workflow.now(),
                key=self._step_key("phase"),
                effective_at=self.state.effective_at,
                window_closes_at=self.state.window_closes_at,
                approved_by=self.state.approved_by,
            ),
            summary=f"record phase {phase}",
        )
        self._publish_search_attributes()

    async def _event(self, event: NoticeEvent, receipt_id: str | None = None) -> None:
        """Record an event about the notice as a whole: the typed ``record_notice_event`` since
        the patch; a run started before it keeps scheduling the generic ``append_event`` with the
        same data (the event's stored form) and the same step key."""
        self.state.event_seq += 1
        key = self._step_key(event.type)
        summary = f"record event {event.type}"
        if workflow.patched(TYPED_NOTICE_EVENTS):
            await self._activity(
                NoticeEvents.record_notice_event,
                NoticeEventRequest.of(
                    self.spec.notice_id, key, workflow.now(), event, receipt_id=receipt_id
                ),
                summary=summary,
            )
            return
        await self._activity(
            Lifecycle.append_event,
            EventRequest(
                notice_id=self.spec.notice_id,
                key=key,
                event_type=event.type,
                data=event.data(),
                at=workflow.now(),
                receipt_id=receipt_id,
            ),
            summary=summary,
        )

    async def _change_mail(
        self,
        kind: str,
        detail: dict[str, Any],
        at: datetime,
        spec: Any = None,
        receipt_id: str | None = None,
    ) -> None:
        self.state.event_seq += 1
        await self._activity(
            Sending.mail_change,
            ChangeMailRequest(
                spec=spec or self.spec,
                kind=kind,
                key=self._step_key(kind),
                detail=detail,
                at=at,
                receipt_id=receipt_id,
            ),
            timeout=MAILING,
            summary=f"mail the {kind} to every customer the notice reached"
            + (f" ({self.state.delivered:,} delivered)" if self.state.delivered else ""),
        )

    async def _activity(
        self,
        activity: Callable[[Any, _Arg], Awaitable[_Result]],
        arg: _Arg,
        *,
        timeout: timedelta = SHORT,
        summary: str | None = None,
    ) -> _Result:
        """Run an activity by its interface method (noticeflow/activity_interfaces.py): the type
        name and the result's type come from its definition, the options are the same for all."""
        return await workflow.execute_activity_method(
            activity,
            arg,
            start_to_close_timeout=timeout,
            heartbeat_timeout=HEARTBEAT if timeout > SHORT else None,
            retry_policy=RETRY,
            # One line in the Temporal Web UI: counts and ids only (metadata, not a command field:
            # a running notice replays the same commands with or without it).
            summary=summary,
        )

    def _publish_search_attributes(self) -> None:
        state = self.state
        updates: list[SearchAttributeUpdate[Any]] = [
            sa.PHASE.value_set(str(state.phase)),
            sa.SUBPROCESSOR.value_set(self.spec.subprocessor),
            sa.EFFECTIVE_AT.value_set(state.effective_at),
            sa.OPEN_OBJECTIONS.value_set(state.open_objections),
        ]
        if state.window_closes_at is not None:
            updates.append(sa.WINDOW_CLOSES_AT.value_set(state.window_closes_at))
        workflow.upsert_search_attributes(updates)
        self._show()

    def _show(self, *, mailing: int | None = None, finished: bool = False) -> None:
        """The Temporal Web UI's current details (markdown): phase, counts, next deadline.

        Counts, ids and instants only; the sub-processor is a company's legal name. Metadata, not a
        command: setting it changes nothing a replay compares.
        """
        state = self.state
        headline = PHASE_WORDS[state.phase]
        if finished and state.phase is not Phase.cancelled:
            headline = "Complete: every customer is settled"
        lines = [
            f"**{headline}**",
            "",
            f"- **Notice:** `{self.spec.notice_id}` · sub-processor {md(self.spec.subprocessor)}",
        ]
        if mailing is not None:
            lines.append(f"- **Customers:** mailing {mailing:,}")
        elif state.audience_size == 0 and state.phase is Phase.draft:
            lines.append("- **Customers:** selected at approval")
        else:
            lines.append(
                f"- **Customers:** {state.audience_size:,} · delivered {state.delivered:,}"
                f" · undelivered {state.undelivered:,} · open cases {state.open_objections:,}"
                + (f" · opted in {state.opted_in:,}" if self.spec.opt_in else "")
                + f" · activated {state.activated:,} · not settled {state.unsettled:,}"
            )
        lines.append(f"- **Effective:** {utc(state.effective_at)}")
        if state.window_closes_at is not None:
            lines.append(
                f"- **Window closes:** {utc(state.window_closes_at)} (latest customer deadline)"
            )
        wakeup = None if finished else self._next_wakeup()
        if wakeup is not None:
            lines.append(f"- **Next:** {wakeup[1]} {utc(wakeup[0])}")
        elif state.phase is Phase.draft:
            lines.append("- **Next:** approval by someone other than the author")
        lines.append(
            f"- **Actions:** {state.signals_handled:,} handled · {state.rejected_signals:,}"
            f" rejected · {len(state.inbox):,} waiting"
        )
        workflow.set_current_details("\n".join(lines))

    def _step_key(self, step: str) -> str:
        """The idempotency key of this run chain's next step: its first run id (kept across
        continue-as-new, new for a run started after completion) and a counter, so no two steps
        of any runs of one notice share a key."""
        return f"{workflow.info().first_execution_run_id}/{step}-{self.state.event_seq}"

    def _should_continue_as_new(self) -> bool:
        return workflow.info().is_continue_as_new_suggested()


# The dispatch tables of the actions about the notice as a whole, by kind: every kind has its
# handler (tests/workflows/test_notice_stubbed.py checks both tables are complete).
ReceiptHandler = Callable[[NoticeWorkflow, NoticeAction, ActionFacts], Awaitable[None]]
RECEIPT_HANDLERS: Mapping[NoticeActionKind, ReceiptHandler] = {
    NoticeActionKind.approve: NoticeWorkflow._approve,
    NoticeActionKind.postpone: NoticeWorkflow._postpone,
    NoticeActionKind.cancel: NoticeWorkflow._cancel,
}
# Histories recorded before receipts carried facts: the payload has the names.
PayloadHandler = Callable[[NoticeWorkflow, Any, datetime], Awaitable[None]]
PAYLOAD_HANDLERS: Mapping[NoticeActionKind, PayloadHandler] = {
    NoticeActionKind.approve: NoticeWorkflow._on_approve,
    NoticeActionKind.postpone: NoticeWorkflow._on_postpone,
    NoticeActionKind.cancel: NoticeWorkflow._on_cancel,
}
