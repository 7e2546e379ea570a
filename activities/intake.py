"""Judging the intake: pending receipts in receipt order, many per activity, by their receipt time.

Thin adapters over :class:`noticeflow.application.intake.IntakeService`, which owns the judgement
(each customer action in its own transaction with its receipt's outcome; lasting faults become
rejections, only transient ones let the activity retry; the first pending notice action handed
to the workflow; confirmations mailed after the commit). The round heartbeats its progress.
"""

from __future__ import annotations

from temporalio import activity

from noticeflow.application.deps import Deps
from noticeflow.application.intake import IntakeService
from noticeflow.contracts import Activity, IntakeRequest, IntakeRound, ReceiptOutcome


class IntakeActivities:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.service = IntakeService(deps)

    @activity.defn(name=Activity.process_intake)
    async def process_intake(self, request: IntakeRequest) -> IntakeRound:
        return await self.service.process_intake(request, progress=activity.heartbeat)

    @activity.defn(name=Activity.settle_receipt)
    async def settle_receipt(self, outcome: ReceiptOutcome) -> None:
        """Write the outcome of a notice action the workflow judged (approve, postpone, cancel)."""
        await self.service.settle_receipt(outcome)
