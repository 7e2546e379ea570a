"""Reminders: a mail some time before a customer's deadline, to customers who have not acted.

A thin adapter over :class:`noticeflow.application.reminders.ReminderService`, heartbeating its
progress."""

from __future__ import annotations

from temporalio import activity

from activities.deps import lasting_faults_fail_for_good
from noticeflow.application.deps import Deps
from noticeflow.application.reminders import ReminderService
from noticeflow.contracts import Activity, ReminderRequest, ReminderRound


class ReminderActivities:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.service = ReminderService(deps)

    @activity.defn(name=Activity.send_reminders)
    async def send_reminders(self, request: ReminderRequest) -> ReminderRound:
        """Remind every candidate whose reminder time has come; say when the next one is due."""
        with lasting_faults_fail_for_good():
            return await self.service.send_reminders(request, progress=activity.heartbeat)
