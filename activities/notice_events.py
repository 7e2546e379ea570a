"""The notice's own typed events, recorded for the workflow: approved, postponed, cancelled.

The workflow sends the event as it knows it (counts, dates, the phase: no names); this adds who
and why from the action's receipt (``notice_actions.with_actor``), keeps the approver in the
notice's record, and appends the event through the event store's typed append. It replaced the
generic ``append_event`` (activities/lifecycle.py), which stays registered for runs that started
before it (``workflow.patched("typed-notice-events")`` in workflows/notice.py).
"""

from __future__ import annotations

from temporalio import activity

from activities.deps import Deps
from noticeflow import eventstore, notice_actions
from noticeflow.contracts import Activity, NoticeEventRequest, notice_stream
from noticeflow.domain.events import NoticeApproved


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
            event = model.model_validate(
                {key: value for key, value in data.items() if _holds(model, key)}
            )
            if isinstance(event, NoticeApproved) and event.by:
                await connection.execute(
                    "UPDATE notices SET approved_by = $2 WHERE notice_id = $1",
                    request.notice_id,
                    event.by,
                )
            await eventstore.append(
                connection, notice_stream(request.notice_id), request.key, event, request.at
            )


def _holds(model: type, key: str) -> bool:
    fields = model.model_fields  # type: ignore[attr-defined]
    return any((info.alias or name) == key for name, info in fields.items())
