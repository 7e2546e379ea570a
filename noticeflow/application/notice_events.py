"""The notice's own typed events, recorded for the workflow: approved, postponed, cancelled; and
how an event the workflow describes as a type and a dict is validated.

The workflow sends the event as it knows it (counts, dates, the phase: no names); this adds who
and why from the action's receipt (``notice_actions.with_actor``), and records the event
(append and projection: the approver reaches the notice's record). It replaced the
generic ``append_event`` (noticeflow/application/lifecycle.py), which stays registered for runs
that started before it (``workflow.patched("typed-notice-events")`` in workflows/notice.py).
"""

from __future__ import annotations

from typing import Any

from noticeflow import notice_actions, records
from noticeflow.application.deps import Deps
from noticeflow.contracts import NoticeEventRequest, notice_stream
from noticeflow.domain import events


def workflow_event(event_type: str, data: dict[str, Any]) -> events.Event:
    """An event the workflow described as a type and a dict (the generic append, the change
    mail), validated by its model. Unknown type or invalid data: ``events.EventError`` — the
    workflow's code is wrong, not the world, so the adapter fails the activity for good."""
    return events.build(event_type, data)


class NoticeEventService:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

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
