"""Phase records, generic events, totals, and per-customer activation (rule 9).

Thin adapters over :class:`noticeflow.application.lifecycle.LifecycleService` (the SQL, the
events and the mail are the service's): the activation round heartbeats its progress; an event
no model accepts fails the generic append for good."""

from __future__ import annotations

from temporalio import activity

from activities.deps import lasting_faults_fail_for_good
from noticeflow.application.deps import Deps
from noticeflow.application.lifecycle import LifecycleService
from noticeflow.contracts import (
    ActivationRequest,
    ActivationRound,
    Activity,
    EventRequest,
    NoticeRecord,
    NoticeTotals,
    PhaseChange,
)


class LifecycleActivities:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.service = LifecycleService(deps)

    @activity.defn(name=Activity.append_event)
    async def append_event(self, request: EventRequest) -> None:
        with lasting_faults_fail_for_good():
            await self.service.append_event(request)

    @activity.defn(name=Activity.record_phase)
    async def record_phase(self, change: PhaseChange) -> None:
        with lasting_faults_fail_for_good():
            await self.service.record_phase(change)

    @activity.defn(name=Activity.load_notice_record)
    async def load_notice_record(self, notice_id: str) -> NoticeRecord:
        return await self.service.load_notice_record(notice_id)

    @activity.defn(name=Activity.read_totals)
    async def read_totals(self, notice_id: str) -> NoticeTotals:
        return await self.service.read_totals(notice_id)

    @activity.defn(name=Activity.activate_due)
    async def activate_due(self, request: ActivationRequest) -> ActivationRound:
        """Decide every unsettled customer at ``now``; enable or disable per customer."""
        with lasting_faults_fail_for_good():
            return await self.service.activate_due(request, progress=activity.heartbeat)
