"""Mailing interrupted: by a worker that stops (hand-over), or by the notice's cancellation.

On the dev server, rate-limited so that there is time to interrupt. A worker shut down mid-send
hands over: a second worker resumes from the last heartbeat; every contact is mailed, a repeat
(only a message in flight at the shutdown) carries the same Message-ID, every customer is
recorded once, the history stays small. A cancel signal mid-send stops the mailing at once, and
every customer who got the notice (and only those) gets the cancellation.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

from temporalio.api.enums.v1 import EventType

from noticeflow import repository
from noticeflow.domain.customers import parse_customers_csv
from noticeflow.domain.rules import Phase
from tests import helpers
from tests.workflows.test_notice_lifecycle import wait_for
from worker.main import build_worker, make_deps

CUSTOMERS = 150
CONCURRENCY = 3


def audience_csv() -> str:
    rows = ["customer_id,name,region,services,contact_emails,timezone"]
    rows += [
        f"c{i:03d},Customer {i},US,assistant,dpo@c{i:03d}.example,Europe/Dublin"
        for i in range(CUSTOMERS)
    ]
    return "\n".join(rows) + "\n"


async def accepted(pool) -> int:
    return await pool.fetchval("SELECT count(*) FROM deliveries WHERE status = 'accepted'")


def slow_deps(pool, smtp_sink):  # slow enough (rate-limited) to interrupt it part-way
    return make_deps(
        pool, smtp_sink.url, "privacy@vendor.example",
        send_batch_size=20, smtp_concurrency=CONCURRENCY, smtp_rate=60,
    )  # fmt: skip


async def a_notice(pool, notice_id: str):
    now = datetime.now(UTC)
    spec = helpers.notice(
        now, notice_id=notice_id, opt_in=False, audience={}, objection_window="P1D",
        # A one-day window delivered on a Friday ends on Monday (Art. 3(4)): five days out.
        effective_at=(now + timedelta(days=5)).isoformat(),
    )  # fmt: skip
    await repository.upsert_customers(pool, parse_customers_csv(audience_csv()))
    await repository.create_notice(pool, spec, "alice", now)
    return spec


async def test_a_worker_shut_down_mid_send_hands_over_to_another(dev_server_env, pool, smtp_sink):
    client = dev_server_env.client
    task_queue = f"tq-{uuid.uuid4().hex[:8]}"
    spec = await a_notice(pool, "handover")

    def deps():
        return slow_deps(pool, smtp_sink)

    async with build_worker(client, deps(), task_queue):
        handle = await helpers.start_notice_workflow(client, spec, task_queue)
        await handle.signal("approve", {"by": "bob"})
        while await accepted(pool) < CUSTOMERS // 3:
            await asyncio.sleep(0.05)
    stopped_at = await accepted(pool)
    assert stopped_at < CUSTOMERS, "the first worker finished before it was stopped"

    async with build_worker(client, deps(), task_queue):
        status = await wait_for(handle, lambda s: s.phase is Phase.window_open, timeout=60)

    assert (status.delivered, status.undelivered) == (CUSTOMERS, 0)
    received = Counter((m["To"], m["Message-ID"]) for m in smtp_sink.messages())
    by_address = Counter(address for address, _ in received)
    assert len(by_address) == CUSTOMERS  # every contact mailed...
    assert all(n == 1 for n in by_address.values())  # ...under one Message-ID each
    assert sum(received.values()) - CUSTOMERS <= CONCURRENCY  # repeats: only those in flight
    delivered_events = await pool.fetchval(
        "SELECT count(*) FROM events WHERE event_type = 'notice_delivered'"
    )
    assert delivered_events == CUSTOMERS

    history = await handle.fetch_history()
    attempts = [
        event.activity_task_started_event_attributes.attempt
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    ]
    assert max(attempts) == 2  # the send was handed over once, not started afresh per batch
    assert len(history.events) < 100
    await handle.terminate("test finished")


async def test_a_cancel_mid_send_stops_the_mailing_and_tells_everyone_reached(
    dev_server_env, pool, smtp_sink
):
    client = dev_server_env.client
    task_queue = f"tq-{uuid.uuid4().hex[:8]}"
    spec = await a_notice(pool, "cancel-mid-send")
    async with build_worker(client, slow_deps(pool, smtp_sink), task_queue):
        handle = await helpers.start_notice_workflow(client, spec, task_queue)
        await handle.signal("approve", {"by": "bob"})
        while await accepted(pool) < 30:
            await asyncio.sleep(0.05)
        await handle.signal("cancel", {"by": "carol"})  # invalid (no reason): mailing goes on
        await handle.signal("cancel", {"by": "carol", "reason": "contract renegotiated"})
        status = await wait_for(handle, lambda s: s.phase is Phase.cancelled, timeout=30)

    notices = [m for m in smtp_sink.messages() if "cancelled" not in m["Subject"]]
    cancellations = [m for m in smtp_sink.messages() if "cancelled" in m["Subject"]]
    reached = {m["To"] for m in notices}
    assert 30 <= len(reached) < CUSTOMERS  # stopped part-way
    assert {m["To"] for m in cancellations} == reached  # everyone reached, and only them
    assert len(cancellations) == len(reached)
    assert status.delivered == len(reached) and status.rejected_signals == 1
    assert await pool.fetchval(
        "SELECT count(*) FROM events WHERE event_type = 'notice_delivered'"
    ) == len(reached)
