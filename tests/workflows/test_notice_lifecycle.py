"""The seed scenario on the time-skipping test server: 21-day window, days pass in seconds."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from noticeflow import projections, records, repository
from noticeflow.contracts import NoticeStatus
from noticeflow.domain.rules import Phase
from tests import helpers
from tests.public_check import assert_public_list_equals_the_events
from worker.main import build_worker, make_deps
from workflows.notice import NoticeWorkflow


async def wait_for(handle: WorkflowHandle, predicate, timeout: float = 30.0) -> NoticeStatus:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status = await handle.query(NoticeWorkflow.status)
        if predicate(status):
            return status
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not reached; last status {status}")
        await asyncio.sleep(0.1)


async def signal(handle: WorkflowHandle, name: str, payload: dict) -> None:
    await handle.signal(name, payload)


@pytest.fixture(autouse=True)
async def public_list_equals_the_events(pool, tmp_path):
    """Issue 14: after every test here, the public list served (/subprocessors.json, the page and
    the feed) equals the list derived afresh from the events (tests/public_check.py)."""
    yield
    await assert_public_list_equals_the_events(pool, tmp_path / "public-list")


@pytest.fixture
async def running(time_skipping_env: WorkflowEnvironment, pool, smtp_sink):
    task_queue = f"tq-{uuid.uuid4().hex[:8]}"
    deps = make_deps(pool, smtp_sink.url, "privacy@vendor.example")
    async with build_worker(time_skipping_env.client, deps, task_queue):
        yield time_skipping_env, task_queue


async def test_seed_scenario_runs_to_the_end(running, pool, smtp_sink):
    env, task_queue = running
    now = await env.get_current_time()
    spec = helpers.notice(now)
    await repository.upsert_customers(pool, helpers.customers())
    await repository.create_notice(pool, spec, "alice", now)
    handle = await helpers.start_notice_workflow(env.client, spec, task_queue)

    # Four eyes: the author cannot approve. Rule 6: globex's 30-day contract outlasts the date.
    await signal(handle, "approve", {"by": "alice"})
    await signal(handle, "approve", {"by": "bob"})
    status = await wait_for(handle, lambda s: s.rejected_signals == 2)
    assert status.phase is Phase.draft
    await signal(
        # Past globex's 30-day contract window, even one whose last day rolls over a weekend.
        handle,
        "postpone",
        {"effective_at": (now + timedelta(days=35)).isoformat(), "by": "alice"},
    )
    await signal(handle, "approve", {"by": "bob"})
    status = await wait_for(handle, lambda s: s.phase is Phase.window_open)
    assert (status.audience_size, status.delivered, status.undelivered) == (4, 3, 1)

    await env.sleep(timedelta(days=5))
    await signal(handle, "object", {"customer_id": "initech", "reason": "No AI on our data"})
    await signal(
        handle, "object", {"customer_id": "initech", "reason": "No AI on our data"}
    )  # duplicate
    await signal(handle, "object", {"customer_id": "nobody", "reason": "?"})  # unknown customer
    await signal(handle, "object", {"reason": 42})  # malformed
    await signal(handle, "opt_in", {"customer_id": "acme", "by": "Acme DPO"})
    await signal(handle, "opt_in", {"customer_id": "globex"})
    status = await wait_for(handle, lambda s: s.pending_signals == 0 and s.open_objections == 1)
    assert status.rejected_signals == 4

    await env.sleep(timedelta(days=5))
    await signal(
        handle, "postpone", {"effective_at": (now + timedelta(days=36)).isoformat(), "by": "alice"}
    )
    await signal(
        handle, "postpone", {"effective_at": (now + timedelta(days=1)).isoformat(), "by": "alice"}
    )
    await wait_for(handle, lambda s: s.pending_signals == 0)

    # Day 24: past acme's deadline whatever the weekday (a last day on a weekend rolls to Monday).
    await env.sleep(timedelta(days=14))
    await signal(
        handle,
        "object",
        {"customer_id": "acme", "reason": "Changed our mind", "idempotency_key": "k-acme"},
    )
    await signal(
        handle,
        "resolve_objection",
        {"customer_id": "initech", "outcome": "excluded", "by": "carol"},
    )
    await wait_for(handle, lambda s: s.pending_signals == 0 and s.open_objections == 1)

    # Umbrella bounced: new contacts, resend on day 27; its own deadline now passes the effective date.
    await env.sleep(timedelta(days=3))
    fixed = helpers.CUSTOMERS_CSV.replace("nobody@umbrella.invalid", "privacy@umbrella.example")
    await repository.upsert_customers(pool, helpers.customers(fixed))
    await signal(handle, "resend", {"customer_id": "umbrella"})
    await wait_for(handle, lambda s: s.pending_signals == 0 and s.undelivered == 0)

    await env.sleep(timedelta(days=10))  # day 37: effective date passed
    status = await wait_for(handle, lambda s: s.phase is Phase.active and s.activated == 2)
    await signal(
        handle, "resolve_objection", {"customer_id": "acme", "outcome": "withdrawn", "by": "carol"}
    )
    result: NoticeStatus = await handle.result()  # skips to umbrella's deadline, then completes

    assert result.phase is Phase.active and result.unsettled == 0
    table = {
        row["customer_id"]: row for row in await repository.customer_table(pool, spec.notice_id)
    }
    assert set(table) == {"acme", "globex", "initech", "umbrella"}
    assert table["acme"]["activated"] and table["acme"]["objection"] == {
        "status": "withdrawn",
        "timely": False,
        "request": "objection",
    }
    assert table["globex"]["activated"]
    assert not table["initech"]["activated"] and table["initech"]["objection"] == {
        "status": "excluded",
        "timely": True,
        "request": "objection",
    }
    assert not table["umbrella"]["activated"] and table["umbrella"]["verdict"] == "declined"
    assert table["umbrella"]["deadline"] > result.effective_at

    enabled = {
        r["customer_id"]
        for r in await pool.fetch("SELECT customer_id FROM subprocessor_enablements WHERE enabled")
    }
    assert enabled == {"acme", "globex"}

    recipients = [m["To"] for m in smtp_sink.messages()]
    assert not any("hooli" in to for to in recipients)
    assert (
        recipients.count("dpo@initech.example") >= 3
    )  # notice, acknowledgement, postponement, resolution
    notices = [
        m for m in smtp_sink.messages() if m["Subject"].startswith("Notice of a new sub-processor")
    ]
    assert (
        len({m["Message-ID"] for m in notices}) == len(notices) == 5
    )  # acme x2, globex, initech, umbrella

    types = [
        r["event_type"] for r in await pool.fetch("SELECT event_type FROM events ORDER BY position")
    ]
    for expected in (
        "notice_created",
        "notice_approved",
        "audience_snapshotted",
        "notice_delivered",
        "notice_undelivered",
        "objection_received",
        "action_rejected",
        "opt_in_recorded",
        "notice_postponed",
        "objection_resolved",
        "subprocessor_enabled",
        "customer_settled",
    ):
        assert expected in types, expected

    await helpers.assert_no_contact_address_in_history(handle, helpers.CUSTOMERS_CSV + fixed)

    # The read models, built from events alone, agree with the records; a rebuild equals them.
    await projections.catch_up(pool)
    shown = await repository.notice_summary(pool, spec.notice_id)
    assert shown["phase"] == "active" and shown["approved_by"] == "bob"
    assert shown["effective_at"] == result.effective_at
    by_id = {row["customer_id"]: row for row in shown["customers"]}
    for customer_id, row in table.items():
        for field in (
            "delivery",
            "deadline",
            "objection",
            "authorisation",
            "opted_in",
            "activated",
            "verdict",
            "settled",
        ):
            assert by_id[customer_id][field] == row[field], (customer_id, field)
    live = await read_models(pool)
    await projections.rebuild(pool)
    assert await read_models(pool) == live

    # The records a decision reads are projections of the events too: a rebuild from zero
    # equals them, and repairs a record altered behind the product's back.
    recorded = await helpers.records_of(pool)
    assert recorded["objections"] and recorded["subprocessor_enablements"]
    await records.rebuild(pool)
    assert helpers.records_diff(await helpers.records_of(pool), recorded) == []
    await pool.execute("UPDATE recipients SET activated = NOT activated, opted_in = NOT opted_in")
    await pool.execute("UPDATE objections SET status = 'withdrawn', timely = NOT timely")
    await pool.execute("DELETE FROM subprocessor_enablements")
    await pool.execute("UPDATE notices SET phase = 'draft'")
    assert await helpers.records_of(pool) != recorded
    await records.rebuild(pool)
    assert helpers.records_diff(await helpers.records_of(pool), recorded) == []


async def read_models(pool) -> dict[str, list]:
    return {
        table: [dict(row) for row in await pool.fetch(f"SELECT * FROM {table} ORDER BY 1, 2")]
        for table in projections.TABLES
    }
