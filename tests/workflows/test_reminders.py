"""Reminders go out before each customer's deadline, only to customers who have not acted."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from noticeflow import repository
from noticeflow.domain.rules import Phase
from tests import helpers
from tests.workflows.test_notice_lifecycle import wait_for
from worker.main import build_worker, make_deps


async def test_reminders_skip_customers_who_acted(time_skipping_env, pool, smtp_sink):
    env = time_skipping_env
    task_queue = f"tq-{uuid.uuid4().hex[:8]}"
    now = await env.get_current_time()
    spec = helpers.notice(
        now,
        notice_id="reminded",
        reminder_before="P3D",
        audience={"customers": ["acme", "globex", "initech"]},
        # After globex's 30-day contract window, even one ending on a weekend (Art. 3(4)).
        effective_at=(now + timedelta(days=35)).isoformat(),
    )
    await repository.upsert_customers(pool, helpers.customers())
    await repository.create_notice(pool, spec, "alice", now)
    async with build_worker(
        env.client, make_deps(pool, smtp_sink.url, "privacy@vendor.example"), task_queue
    ):
        handle = await helpers.start_notice_workflow(env.client, spec, task_queue)
        await handle.signal("approve", {"by": "bob"})
        await wait_for(handle, lambda s: s.phase is Phase.window_open)
        await env.sleep(timedelta(days=2))
        await handle.signal("opt_in", {"customer_id": "acme"})  # acted: no reminder
        await wait_for(handle, lambda s: s.pending_signals == 0 and s.signals_handled == 2)
        try:
            # Day 21: initech's reminder is due (its deadline ends day 21, or the Monday after
            # if that is a weekend: three days before is day 20 at the latest); globex's 30-day
            # contract: not yet.
            await env.sleep(timedelta(days=19))
            assert await reminded(smtp_sink, 1) == ["dpo@initech.example"]

            # Day 30 and a half: globex's reminder (deadline day 30, or up to two days later).
            await env.sleep(timedelta(days=9, hours=12))
            assert await reminded(smtp_sink, 2) == ["dpo@initech.example", "legal@globex.example"]
        finally:  # a workflow left running would hold the shared time-skipping clock
            await handle.terminate("test finished")
    events = await pool.fetch(
        "SELECT data->>'customer_id' AS c FROM events WHERE event_type = 'reminder_sent'"
    )
    assert sorted(e["c"] for e in events) == ["globex", "initech"]


async def reminded(smtp_sink, expected: int, seconds: float = 10.0) -> list[str]:
    """Reminder recipients, once ``expected`` have arrived (the activity runs in real time)."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + seconds
    while True:
        found = sorted(
            str(m["To"]) for m in smtp_sink.messages() if m["Subject"].startswith("Reminder")
        )
        if len(found) >= expected or loop.time() > give_up:
            return found
        await asyncio.sleep(0.1)
