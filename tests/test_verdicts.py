"""Re-derived verdicts on a real lifecycle (PostgreSQL, Temporal's time-skipping server, SMTP):
every outcome column flipped behind the product's back is caught by `evidence verify --notice`,
naming the customer and the field; a pack is verified by docs/verify_pack.py, an independent
script that uses only the pack and the documented rules, and it agrees with `verify_pack`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
from temporalio.client import WorkflowHandle

from noticeflow import repository
from noticeflow.contracts import NoticeStatus
from noticeflow.domain.rules import Phase
from noticeflow.evidence import verify_database
from tests import helpers
from worker.main import build_worker, make_deps
from workflows.notice import NoticeWorkflow

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "docs" / "verify_pack.py"


async def wait_for(handle: WorkflowHandle, predicate, timeout: float = 60.0) -> NoticeStatus:
    give_up = asyncio.get_running_loop().time() + timeout
    while True:
        status = await handle.query(NoticeWorkflow.status)
        if predicate(status):
            return status
        if asyncio.get_running_loop().time() > give_up:
            raise AssertionError(f"condition not reached; last status {status}")
        await asyncio.sleep(0.1)


@pytest.fixture
async def lifecycle(time_skipping_env, pool, smtp_sink) -> str:
    """The seed notice run to its end: acme opted in, objected late, withdrawn (on); globex opted
    in (on); initech objected in time, upheld (off); umbrella bounced, resent, never opted in."""
    task_queue = f"tq-{uuid.uuid4().hex[:8]}"
    env = time_skipping_env
    async with build_worker(env.client, make_deps(pool, smtp_sink.url, "privacy@vendor.example"),
                            task_queue):  # fmt: skip
        now = await env.get_current_time()
        spec = helpers.notice(now, effective_at=(now + timedelta(days=35)).isoformat())
        await repository.upsert_customers(pool, helpers.customers())
        await repository.create_notice(pool, spec, "alice", now)
        handle = await helpers.start_notice_workflow(env.client, spec, task_queue)
        await handle.signal("approve", {"by": "bob"})
        await wait_for(handle, lambda s: s.phase is Phase.window_open)
        await env.sleep(timedelta(days=5))
        await handle.signal("object", {"customer_id": "initech", "reason": "No AI on our data"})
        await handle.signal("opt_in", {"customer_id": "acme", "by": "Acme DPO"})
        await handle.signal("opt_in", {"customer_id": "globex"})
        await wait_for(handle, lambda s: s.pending_signals == 0 and s.open_objections == 1)
        await env.sleep(timedelta(days=19))  # day 24: past acme's deadline
        await handle.signal("object", {"customer_id": "acme", "reason": "Changed our mind"})
        await handle.signal(
            "resolve_objection", {"customer_id": "initech", "outcome": "excluded", "by": "carol"}
        )
        await wait_for(handle, lambda s: s.pending_signals == 0 and s.open_objections == 1)
        await env.sleep(timedelta(days=3))
        fixed = helpers.CUSTOMERS_CSV.replace("nobody@umbrella.invalid", "privacy@umbrella.example")
        await repository.upsert_customers(pool, helpers.customers(fixed))
        await handle.signal("resend", {"customer_id": "umbrella"})
        await wait_for(handle, lambda s: s.pending_signals == 0 and s.undelivered == 0)
        await env.sleep(timedelta(days=10))
        await wait_for(handle, lambda s: s.phase is Phase.active and s.activated == 2)
        await handle.signal(
            "resolve_objection", {"customer_id": "acme", "outcome": "withdrawn", "by": "carol"}
        )
        result: NoticeStatus = await handle.result()
        assert result.unsettled == 0
    return spec.notice_id


FLIPS = [  # (field as named, customer, table, the SET that flips it, the SET that undoes it)
    ("activated", "globex", "recipients", "activated = NOT activated", "activated = NOT activated"),
    ("opted_in", "globex", "recipients", "opted_in = NOT opted_in", "opted_in = NOT opted_in"),
    ("delivery", "initech", "recipients", "delivery = 'undelivered'", "delivery = 'delivered'"),
    ("deadline", "initech", "recipients", "deadline = deadline + interval '1 day'",
     "deadline = deadline - interval '1 day'"),
    ("verdict", "umbrella", "recipients", "verdict = 'activate'", "verdict = 'declined'"),
    ("settled", "acme", "recipients", "settled = false", "settled = true"),
    ("excluded_at", "acme", "recipients", "excluded_at = now()", "excluded_at = NULL"),
    ("status", "initech", "objections", "status = 'withdrawn'", "status = 'excluded'"),
    ("timely", "initech", "objections", "timely = NOT timely", "timely = NOT timely"),
    ("subprocessor_enablements.enabled", "acme", "subprocessor_enablements",
     "enabled = NOT enabled", "enabled = NOT enabled"),
]  # fmt: skip


def verify_notice(notice_id: str, database_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "noticeflow.cli", "evidence", "verify", "--notice", notice_id],
        capture_output=True,
        text=True,
        env={**os.environ, "NOTICEFLOW_DATABASE_URL": database_url},
    )


async def test_every_flipped_outcome_column_is_caught_naming_customer_and_field(
    lifecycle: str, pool, database_url, owner_database_url
):
    ok = verify_notice(lifecycle, database_url)
    assert ok.returncode == 0, ok.stderr
    assert "every customer's outcome follows" in ok.stdout
    owner = await asyncpg.connect(owner_database_url)  # only the owner can write the records
    try:
        for field, customer, table, flip, undo in FLIPS:
            changed = await owner.execute(
                f"UPDATE {table} SET {flip} WHERE customer_id = $1", customer
            )
            assert changed == "UPDATE 1", (field, changed)
            bad = verify_notice(lifecycle, database_url)
            await owner.execute(f"UPDATE {table} SET {undo} WHERE customer_id = $1", customer)
            assert bad.returncode == 1, (field, bad.stdout, bad.stderr)
            assert "Traceback" not in bad.stderr
            named = [line for line in bad.stderr.splitlines() if f"customer {customer}:" in line]
            assert any(f" {field} is " in line for line in named), (field, bad.stderr)
            assert (await verify_database(pool, lifecycle)).ok, field  # undone: clean again
    finally:
        await owner.close()
