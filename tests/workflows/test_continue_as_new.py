"""Continue-as-new when the server suggests it, carrying state and unhandled signals (dev server)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from temporalio.client import WorkflowExecutionStatus

from noticeflow import repository
from noticeflow.domain.rules import Phase
from tests import helpers
from tests.conftest import SUGGEST_CAN_AT
from tests.workflows.test_notice_lifecycle import wait_for
from worker.main import build_worker, make_deps

OBJECTIONS = 40


async def test_long_histories_continue_as_new_without_losing_anything(
    dev_server_env, pool, smtp_sink
):
    client = dev_server_env.client
    task_queue = f"tq-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    spec = helpers.notice(
        now,
        notice_id="can-test",
        opt_in=False,
        audience={"customers": ["acme"]},
        effective_at=(now + timedelta(days=30)).isoformat(),
    )
    await repository.upsert_customers(pool, helpers.customers())
    await repository.create_notice(pool, spec, "alice", now)
    async with build_worker(
        client, make_deps(pool, smtp_sink.url, "privacy@vendor.example"), task_queue
    ):
        handle = await helpers.start_notice_workflow(client, spec, task_queue)
        await handle.signal("approve", {"by": "bob"})
        await wait_for(handle, lambda s: s.phase is Phase.window_open)
        for number in range(
            OBJECTIONS
        ):  # sent in bursts while activities run: some wait in the inbox
            await handle.signal("object", {"customer_id": "acme", "reason": f"objection {number}"})
            if number % 10 == 9:
                await asyncio.sleep(0.5)
        status = await wait_for(
            handle,
            lambda s: s.pending_signals == 0 and s.signals_handled >= OBJECTIONS + 1,
            timeout=120,
        )
        assert status.open_objections == OBJECTIONS
        assert status.phase is Phase.window_open and status.delivered == 1
        description = await handle.describe()
        assert (
            description.run_id != description.raw_description.workflow_execution_info.first_run_id
        )
        assert description.status == WorkflowExecutionStatus.RUNNING
        assert (
            description.raw_description.workflow_execution_info.history_length < SUGGEST_CAN_AT * 2
        )
        assert (
            await pool.fetchval("SELECT count(*) FROM objections WHERE notice_id = 'can-test'")
            == OBJECTIONS
        )
        await handle.terminate("test finished")
