"""The notice's own typed events, recorded for the workflow: approved, postponed, cancelled.

The workflow sends the event as it knows it (counts, dates, the phase: no names); this adds who
and why from the action's receipt (``notice_actions.with_actor``), and records the event
(append and projection: the approver reaches the notice's record). It replaced the
generic ``append_event`` (activities/lifecycle.py), which stays registered for runs that started
before it (``workflow.patched("typed-notice-events")`` in workflows/notice.py).
"""

from __future__ import annotations

from temporalio import activity

from activities.deps import Deps
from activities.sending import workflow_event
from noticeflow import notice_actions, records
from noticeflow.contracts import Activity, NoticeEventRequest, notice_stream


class NoticeEventActivities:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    @activity.defn(name=Activity.record_notice_event)
    async def record_notice_event(self, request: NoticeEventRequest) -> None:
        model = type(request.event)
        async with self.deps.pool.acquire() as connection, connection.transaction():
            # Who (and why) from the receipt, not Temporal; only what this event type holds.
            data = await notice_actions.with_actor(
                connection, request.event.data(), request.receipt_id
            )
            # Validated by its model: invalid data fails for good (InvalidEvent), never retried.
            event = workflow_event(
                model.type, {key: value for key, value in data.items() if _holds(model, key)}
            )
            # The notice's record (the approver, a cancellation's settled customers) is the
            # event's projection (noticeflow/records.py).
            await records.record_one(
                connection, notice_stream(request.notice_id), request.key, event, request.at
            )


def _holds(model: type, key: str) -> bool:
    fields = model.model_fields  # type: ignore[attr-defined]
    return any((info.alias or name) == key for name, info in fields.items())
