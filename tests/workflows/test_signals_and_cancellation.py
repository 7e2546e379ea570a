"""Bad signals never wedge a workflow; cancellation tells recipients and activates no one."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.client import WorkflowExecutionStatus
from temporalio.common import RawValue

from noticeflow import repository
from noticeflow.contracts import NoticeStatus
from noticeflow.domain.rules import Phase
from tests import helpers
from tests.workflows.test_intake import typed_event_types
from tests.workflows.test_notice_lifecycle import wait_for
from worker.main import build_worker, make_deps


@pytest.fixture
async def started(time_skipping_env, pool, smtp_sink):
    task_queue = f"tq-{uuid.uuid4().hex[:8]}"
    deps = make_deps(pool, smtp_sink.url, "privacy@vendor.example")
    async with build_worker(time_skipping_env.client, deps, task_queue):
        now = await time_skipping_env.get_current_time()
        spec = helpers.notice(
            now,
            notice_id=f"n-{uuid.uuid4().hex[:6]}",
            opt_in=False,
            audience={"customers": ["acme", "initech"]},
        )
        await repository.upsert_customers(pool, helpers.customers())
        await repository.create_notice(pool, spec, "alice", now)
        handle = await helpers.start_notice_workflow(time_skipping_env.client, spec, task_queue)
        yield time_skipping_env, handle, spec
        # A workflow left running would hold the shared time-skipping clock for later tests.
        if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
            await handle.terminate("test finished")


async def test_malformed_signals_are_recorded_and_never_wedge(started, pool):
    _env, handle, spec = started
    await handle.signal("object")  # no argument at all
    await handle.signal("object", "just a string")
    await handle.signal(
        "object", RawValue(Payload(metadata={"encoding": b"binary/unknown"}, data=b"\x00"))
    )
    await handle.signal("approve", {"by": ""})
    await handle.signal("launch_rockets", {"now": True})
    await handle.signal("object", {"customer_id": "acme", "reason": "too early"})  # still a draft
    status = await wait_for(handle, lambda s: s.rejected_signals == 6 and s.pending_signals == 0)
    assert status.phase is Phase.draft

    await handle.signal("approve", {"by": "bob"})
    await wait_for(handle, lambda s: s.phase is Phase.window_open)
    reasons = [
        r["data"]
        for r in await pool.fetch(
            "SELECT data->>'reason' AS data FROM events WHERE event_type = 'action_rejected'"
            " AND stream_id = $1 ORDER BY position",
            f"notice-{spec.notice_id}",
        )
    ]
    assert "expected exactly one JSON argument, got 0" in reasons[0]
    assert "invalid object payload" in reasons[1]
    assert "payload is not JSON" in reasons[2]
    assert "by" in reasons[3]
    assert "unknown signal 'launch_rockets'" in reasons[4]
    assert "draft" in reasons[5]

    history = await handle.fetch_history()
    assert not [e for e in history.events if e.HasField("workflow_task_failed_event_attributes")]


async def test_cancel_during_the_window_mails_everyone_and_activates_no_one(
    started, pool, smtp_sink
):
    env, handle, spec = started
    await handle.signal("approve", {"by": "bob"})
    await wait_for(handle, lambda s: s.phase is Phase.window_open)
    await env.sleep(timedelta(days=3))
    await handle.signal("cancel", {"reason": "Vendor contract not signed", "by": "alice"})
    result: NoticeStatus = await handle.result()
    # The reason is in the records and the mail, never in the workflow (no free text in Temporal).
    assert result.phase is Phase.cancelled and result.cancel_reason is None
    event = await pool.fetchval(
        "SELECT data FROM events WHERE stream_id = $1 AND event_type = 'notice_cancelled'",
        f"notice-{spec.notice_id}",
    )
    data = event if isinstance(event, dict) else json.loads(event)
    assert data["reason"] == "Vendor contract not signed" and data["by"] == "alice"
    assert result.activated == 0
    cancellations = [m for m in smtp_sink.messages() if "cancelled" in m["Subject"]]
    assert sorted(m["To"] for m in cancellations) == [
        "dpo@acme.example",
        "dpo@initech.example",
        "privacy@acme.example",
    ]
    assert await pool.fetchval("SELECT count(*) FROM subprocessor_enablements") == 0
    phase = await pool.fetchval("SELECT phase FROM notices WHERE notice_id = $1", spec.notice_id)
    assert phase == "cancelled"
    assert "notice_cancelled" in await typed_event_types(pool)  # the change mail's


async def test_cancel_in_draft_needs_no_mail(started, pool, smtp_sink):
    _, handle, _ = started
    await handle.signal("cancel", {"reason": "Drafted by mistake", "by": "alice"})
    result: NoticeStatus = await handle.result()
    assert result.phase is Phase.cancelled and smtp_sink.messages() == []
    assert "notice_cancelled" in await typed_event_types(pool)


async def test_ordinary_notice_deems_silence_acceptance(started, pool):
    _env, handle, spec = started
    await handle.signal("approve", {"by": "bob"})
    await wait_for(handle, lambda s: s.phase is Phase.window_open)
    await handle.signal("opt_in", {"customer_id": "acme"})  # not an opt-in notice: rejected
    await wait_for(handle, lambda s: s.rejected_signals == 1)
    result: NoticeStatus = await handle.result()
    assert result.phase is Phase.active and result.activated == 2 and result.unsettled == 0
    rows = await repository.customer_table(pool, spec.notice_id)
    assert all(row["deemed_accepted_at"] == row["deadline"] for row in rows)
    assert {"deemed_acceptance", "action_rejected"} <= await typed_event_types(pool)
