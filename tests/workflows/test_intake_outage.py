"""Actions received while no worker runs, or while Temporal cannot be reached, are kept in the
intake and judged by their receipt time once a worker runs (dev server, real clock)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from noticeflow import control, intake, repository
from noticeflow.domain.rules import Phase
from tests import helpers
from tests.workflows.test_notice_lifecycle import wait_for
from worker.main import build_worker, make_deps

NO_CONTRACT_WINDOWS = helpers.CUSTOMERS_CSV.replace(",30,calendar", ",,")


async def test_actions_during_an_outage_are_judged_by_their_receipt_time(
    dev_server_env, pool, smtp_sink
):
    client = dev_server_env.client
    task_queue = f"tq-{uuid.uuid4().hex[:8]}"
    deps = make_deps(pool, smtp_sink.url, "privacy@vendor.example")
    now = datetime.now(UTC)
    spec = helpers.notice(
        now,
        notice_id=f"outage-{uuid.uuid4().hex[:6]}",
        opt_in=False,
        objection_window="PT1M",
        effective_at=(now + timedelta(minutes=4)).isoformat(),
    )
    await repository.upsert_customers(pool, helpers.customers(NO_CONTRACT_WINDOWS))
    await control.start_notice(client, pool, spec, "alice", task_queue)
    async with build_worker(client, deps, task_queue):
        approved, _ = await control.submit(
            client, pool, spec.notice_id, "approve", {"by": "bob"}, task_queue=task_queue
        )
        assert approved.status == "accepted"
        handle = client.get_workflow_handle(f"notice-{spec.notice_id}")
        await wait_for(handle, lambda s: s.phase is Phase.window_open, timeout=60)

    # The worker is down. One objection reaches Temporal (its signal waits in the history), one
    # cannot even reach Temporal: both are received now, inside the window, and kept.
    signalled, why = await control.submit(
        client,
        pool,
        spec.notice_id,
        "object",
        {"customer_id": "acme", "reason": "No"},
        task_queue=task_queue,
        wait_seconds=1,
    )
    assert signalled.pending and why == "no worker has judged it yet"
    unreachable, why = await control.submit(
        None,
        pool,
        spec.notice_id,
        "object",
        {"customer_id": "initech", "reason": "No"},
        connect_error="connection refused",
    )
    assert unreachable.pending and why is not None and "not reachable" in why
    deadline = await pool.fetchval(
        "SELECT max(deadline) FROM recipients WHERE notice_id = $1", spec.notice_id
    )
    assert signalled.received_at < deadline and unreachable.received_at < deadline

    # Both windows close while nobody is there to judge.
    await asyncio.sleep(max(0.0, (deadline - datetime.now(UTC)).total_seconds()) + 1)

    stop = asyncio.Event()
    async with build_worker(client, deps, task_queue):
        sweeper = asyncio.create_task(
            control.sweep_intake(client, pool, stop, task_queue, every=0.5, older_than=0)
        )
        for receipt in (signalled, unreachable):
            judged = await intake.wait_for(pool, receipt.receipt_id, timeout=60)
            assert judged is not None and judged.status == "accepted", judged
            assert judged.reason is None  # timely: judged by when it was received
        stop.set()
        await sweeper
    timely = await pool.fetch("SELECT customer_id, timely FROM objections ORDER BY customer_id")
    assert [(r["customer_id"], r["timely"]) for r in timely] == [("acme", True), ("initech", True)]
