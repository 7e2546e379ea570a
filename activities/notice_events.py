"""The notice's own typed events, recorded for the workflow: approved, postponed, cancelled.

A thin adapter over :class:`noticeflow.application.notice_events.NoticeEventService` (who and why
from the receipt, the append and its projection are the service's); an event no model accepts
fails for good here (non-retryable ``InvalidEvent``). It replaced the generic ``append_event``
(activities/lifecycle.py), which stays registered for runs that started before it
(``workflow.patched("typed-notice-events")`` in workflows/notice.py).
"""

from __future__ import annotations

from temporalio import activity

from activities.deps import lasting_faults_fail_for_good
from noticeflow.application.deps import Deps
from noticeflow.application.notice_events import NoticeEventService
from noticeflow.contracts import Activity, NoticeEventRequest


class NoticeEventActivities:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.service = NoticeEventService(deps)

    @activity.defn(name=Activity.record_notice_event)
    async def record_notice_event(self, request: NoticeEventRequest) -> None:
        with lasting_faults_fail_for_good():
            await self.service.record_notice_event(request)
