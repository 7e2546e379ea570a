"""The generic ``append_event`` activity (kept registered for notices started before the typed
notice events) validates the workflow's type and dict through the event registry: an unknown type or
invalid data fails for good at once (non-retryable), never an endless retry; valid data is stored
exactly as before."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.deps import lasting_faults_fail_for_good
from activities.lifecycle import LifecycleActivities
from noticeflow import eventstore
from noticeflow.application.notice_events import workflow_event
from noticeflow.contracts import EventRequest
from noticeflow.domain import events
from worker.main import make_deps

AT = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def request(event_type: str, data: dict) -> EventRequest:
    return EventRequest(
        notice_id="n-1", key=f"run/{event_type}-1", event_type=event_type, data=data, at=AT
    )


@pytest.mark.parametrize(
    ("event_type", "data", "problem"),
    [
        ("notice_exploded", {}, "unknown event type 'notice_exploded'"),
        ("notice_approved", {"audience_size": "many"}, "audience_size"),
        ("notice_cancelled", {"phase": "draft", "mood": "sad"}, "mood: unknown field"),
        ("notice_postponed", {"to": "2027-01-01T00:00:00Z"}, "from: missing"),
    ],
)
async def test_an_unknown_type_or_invalid_data_fails_for_good(pool, event_type, data, problem):
    activities = LifecycleActivities(make_deps(pool, "smtp://127.0.0.1:9", "v@vendor.example"))
    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(activities.append_event, request(event_type, data))
    assert caught.value.non_retryable and caught.value.type == "InvalidEvent"
    assert problem in str(caught.value)
    assert await pool.fetchval("SELECT count(*) FROM events") == 0


async def test_valid_data_is_stored_as_the_workflow_sent_it(pool):
    activities = LifecycleActivities(make_deps(pool, "smtp://127.0.0.1:9", "v@vendor.example"))
    sent = {"by": "alice", "from": "2026-12-25T22:29:39.963000Z", "to": "2027-01-03T22:29:39Z"}
    await ActivityEnvironment().run(activities.append_event, request("notice_postponed", sent))
    (stored,) = await eventstore.read_stream(pool, "notice-n-1")
    assert (stored.event_type, stored.schema_version, stored.data) == ("notice_postponed", 1, sent)
    assert stored.event_id == eventstore.event_id("notice-n-1", "run/notice_postponed-1")
    assert isinstance(stored.typed(), events.NoticePostponed)


def test_the_change_mail_refuses_the_same_way():
    # The service refuses (InvalidEvent); the change mail's activity fails for good on it.
    with pytest.raises(ApplicationError) as caught, lasting_faults_fail_for_good():
        workflow_event("notice_cancelled", {"phase": "draft", "text_sha256": 7})
    assert caught.value.non_retryable and "text_sha256" in str(caught.value)
