"""A worker that stops mid-send hands over: another worker resumes from the last heartbeat.

On the dev server, with two workers one after the other on one task queue: the first is shut
down while the notice is being mailed; the second finishes it. Every contact is mailed; a contact
mailed twice (only one in flight at the shutdown can be) carries the same Message-ID; every
customer is recorded once; the history stays small.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

from temporalio.api.enums.v1 import EventType

from noticeflow import repository
from noticeflow.contracts import NoticeInput, workflow_id
from noticeflow.domain.customers import parse_customers_csv
from noticeflow.domain.rules import Phase
from tests import helpers
from tests.workflows.test_notice_lifecycle import wait_for
from worker.main import build_worker, make_deps
from workflows.notice import NoticeWorkflow

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


async def test_a_worker_shut_down_mid_send_hands_over_to_another(dev_server_env, pool, smtp_sink):
    client = dev_server_env.client
    task_queue = f"tq-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    spec = helpers.notice(
        now, notice_id="handover", opt_in=False, audience={}, objection_window="P1D",
        effective_at=(now + timedelta(days=3)).isoformat(),
    )  # fmt: skip
    await repository.upsert_customers(pool, parse_customers_csv(audience_csv()))
    await repository.create_notice(pool, spec, "alice", now)

    def deps():  # slow enough (rate-limited) to stop it half way
        return make_deps(
            pool, smtp_sink.url, "privacy@vendor.example",
            send_batch_size=20, smtp_concurrency=CONCURRENCY, smtp_rate=60,
        )  # fmt: skip

    async with build_worker(client, deps(), task_queue):
        handle = await client.start_workflow(
            NoticeWorkflow.run,
            NoticeInput(spec=spec, author="alice"),
            id=workflow_id(spec.notice_id),
            task_queue=task_queue,
        )
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
