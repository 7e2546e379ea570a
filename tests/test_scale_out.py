"""Scale-out (issue 13): one notice's mailing is spread over every worker.

The audience is split into shards (``contracts.send_shards``; ``send_shard`` in PostgreSQL,
migration 018); each shard is an activity on the send task queue, where each worker takes at most
``send_slots`` at once, so the shards slide over every worker. The relay's rate limit is shared by
every worker through PostgreSQL (``mailer.RelayPace``).

On real parts: the dev server, PostgreSQL, two SMTP sinks (one per worker, so that who sent what
shows at the sinks), two workers in this process, each with its own mailer.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from noticeflow import repository
from noticeflow.application.sending import SendingService, to_the_end
from noticeflow.cancelling import finish_despite_cancel
from noticeflow.config import Settings
from noticeflow.contracts import (
    MAX_SEND_SHARDS,
    SEND_SHARD_SIZE,
    AudienceRequest,
    ChangeMailRequest,
    SendRequest,
    send_shards,
    send_task_queue,
)
from noticeflow.domain.customers import parse_customers_csv
from noticeflow.domain.rules import Phase
from noticeflow.mailer import PACE_HORIZON, RESERVE_PACE, RelayPace
from noticeflow.sink import SmtpSink
from tests import helpers
from tests.workflows.test_notice_lifecycle import wait_for
from worker.main import build_worker, make_deps

CUSTOMERS = 1_200  # three shards


def audience_csv(count: int) -> str:
    rows = ["customer_id,name,region,services,contact_emails,timezone"]
    rows += [
        f"c{i:05d},Customer {i},US,assistant,dpo@c{i:05d}.example,Europe/Dublin"
        for i in range(count)
    ]
    return "\n".join(rows) + "\n"


async def a_notice(pool, notice_id: str, count: int = CUSTOMERS):
    now = datetime.now(UTC)
    spec = helpers.notice(
        now, notice_id=notice_id, opt_in=False, audience={}, objection_window="P1D",
        effective_at=(now + timedelta(days=5)).isoformat(),
    )  # fmt: skip
    await repository.upsert_customers(pool, parse_customers_csv(audience_csv(count)))
    await repository.create_notice(pool, spec, "alice", now)
    return spec


# --- the shards, pure and in PostgreSQL -------------------------------------------------------


def test_the_number_of_shards_is_pinned_and_bounded_whatever_the_audience():
    """Literals, not the constants: the shard count is part of every notice's workflow commands
    (a changed count breaks notices replaying their mailing), so a change must fail here and be
    made behind a new workflow.patched."""
    assert (SEND_SHARD_SIZE, MAX_SEND_SHARDS) == (500, 32)
    assert [send_shards(n) for n in (0, 1, 500, 501, 1_200, 15_999, 16_000, 16_001)] == [
        1, 1, 1, 2, 3, 32, 32, 32,
    ]  # fmt: skip
    assert send_shards(10_000_000) == 32  # the history stays flat


def test_a_send_request_names_one_of_its_shards():
    at = datetime.now(UTC)
    spec = helpers.notice(at)
    assert SendRequest(spec=spec, at=at).shards == 1  # as a notice sent before shards asked
    for shard, shards in ((3, 3), (-1, 3), (0, 0), (33, 33)):
        with pytest.raises(ValidationError):
            SendRequest(spec=spec, at=at, shard=shard, shards=shards)


def python_shard(customer_id: str, shards: int) -> int:
    digest = hashlib.md5(customer_id.encode()).digest()
    return (digest[0] * 256 + digest[1]) % shards


async def test_send_shard_puts_each_customer_in_one_even_shard(pool):
    """The same shard on every PostgreSQL (two bytes of the id's MD5, as computed here in
    Python), and shards even in size."""
    ids = [f"c{i:06d}" for i in range(20_000)] + ["ümlaut-ü", "x" * 200, "a,b;c"]
    rows = await pool.fetch(
        "SELECT id, send_shard(id, 32) AS shard FROM unnest($1::text[]) AS id", ids
    )
    assert {row["id"]: row["shard"] for row in rows} == {i: python_shard(i, 32) for i in ids}
    sizes = Counter(row["shard"] for row in rows)
    assert set(sizes) == set(range(32))
    mean = len(ids) / 32
    assert all(0.85 * mean < size < 1.15 * mean for size in sizes.values()), sizes
    assert await pool.fetchval("SELECT send_shard('c1', 1)") == 0


async def test_each_of_the_largest_shard_counts_mails_its_own_customers(pool, smtp_sink):
    """At MAX_SEND_SHARDS the shard's customers are selected through the index's expression
    (migration 022) rather than with the shard count as a parameter: every customer is mailed by
    the shard send_shard names, exactly once over all 32."""
    now = datetime.now(UTC)
    spec = await a_notice(pool, f"s32-{uuid.uuid4().hex[:6]}", count=96)
    service = SendingService(deps_for(pool, smtp_sink))
    await service.snapshot_audience(AudienceRequest(spec=spec, at=now))
    mailed: Counter[str] = Counter()
    for shard in range(MAX_SEND_SHARDS):
        before = len(smtp_sink.messages())
        request = SendRequest(spec=spec, at=now, shard=shard, shards=MAX_SEND_SHARDS)
        await service.send_notices(request, "", progress=lambda *_: None)
        to = [m["To"] for m in smtp_sink.messages()[before:]]
        assert {python_shard(t.split("@")[1].split(".")[0], 32) for t in to} <= {shard}
        mailed.update(to)
    assert len(mailed) == 96 and set(mailed.values()) == {1}
    # The statement a shard runs can take migration 022's index, whose literal 32 is this bound.
    assert MAX_SEND_SHARDS == 32
    async with pool.acquire() as c, c.transaction():
        await c.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in await c.fetch(
                "EXPLAIN SELECT customer_id FROM recipients WHERE notice_id = $1"
                " AND delivery = 'pending' AND customer_id > $2"
                " AND send_shard(customer_id, 32) = $3 ORDER BY customer_id LIMIT 200",
                spec.notice_id,
                "",
                7,
            )
        )
    assert "recipients_pending_by_shard" in plan, plan
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM recipients WHERE notice_id = $1 AND delivery = 'delivered'",
            spec.notice_id,
        )
        == 96
    )


# --- one notice, two workers --------------------------------------------------------------------


async def another_client(client: Client) -> Client:
    """A second connection, as a second worker process has (the SDK allows one worker per task
    queue per client)."""
    return await Client.connect(
        client.service_client.config.target_host,
        namespace=client.namespace,
        data_converter=client.data_converter,
    )


def deps_for(pool, sink: SmtpSink, **options):
    return make_deps(
        pool, sink.url, "privacy@vendor.example", send_batch_size=100, smtp_concurrency=2,
        **options,
    )  # fmt: skip


async def test_one_notice_is_mailed_by_every_worker(dev_server_env, pool, smtp_sink, tmp_path):
    """Two workers with one send slot each: both send shards of the one notice; every contact is
    mailed exactly once (across both sinks), every customer recorded once, history flat."""
    client = dev_server_env.client
    task_queue = f"tq-{uuid.uuid4().hex[:8]}"
    spec = await a_notice(pool, f"spread-{uuid.uuid4().hex[:6]}")
    with SmtpSink(tmp_path / "second") as second:
        async with (
            build_worker(client, deps_for(pool, smtp_sink), task_queue, send_slots=1),
            build_worker(
                await another_client(client), deps_for(pool, second), task_queue, send_slots=1
            ),
        ):
            handle = await helpers.start_notice_workflow(client, spec, task_queue)
            await handle.signal("approve", {"by": "bob"})
            status = await wait_for(handle, lambda s: s.phase is Phase.window_open, timeout=120)
        first_to = Counter(m["To"] for m in smtp_sink.messages())
        second_to = Counter(m["To"] for m in second.messages())

    assert (status.delivered, status.undelivered) == (CUSTOMERS, 0)
    assert first_to and second_to, "one worker sent every shard"
    both = first_to + second_to
    assert len(both) == CUSTOMERS and set(both.values()) == {1}  # each contact once, in all
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM events WHERE event_type = 'notice_delivered' AND stream_id = $1",
            f"notice-{spec.notice_id}",
        )
        == CUSTOMERS
    )
    history = await handle.fetch_history()
    shards = [
        event.activity_task_scheduled_event_attributes
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and event.activity_task_scheduled_event_attributes.activity_type.name == "send_notices"
    ]
    assert len(shards) == send_shards(CUSTOMERS) == 3
    assert {shard.task_queue.name for shard in shards} == {send_task_queue(task_queue)}
    assert len(history.events) < 120
    await handle.terminate("test finished")


async def test_a_cancel_stops_every_shard_and_tells_everyone_reached(
    dev_server_env, pool, smtp_sink, tmp_path
):
    """Mid-send, a cancel stops the shards on both workers; the cancellation goes to every
    customer who got the notice, and only to them, once each."""
    client = dev_server_env.client
    task_queue = f"tq-{uuid.uuid4().hex[:8]}"
    spec = await a_notice(pool, f"spread-cancel-{uuid.uuid4().hex[:6]}")
    with SmtpSink(tmp_path / "second") as second:
        async with (
            # One slot each: of the three shards, one waits on the queue when the cancel comes.
            build_worker(client, deps_for(pool, smtp_sink, smtp_rate=80), task_queue, send_slots=1),
            build_worker(
                await another_client(client),
                deps_for(pool, second, smtp_rate=80),
                task_queue,
                send_slots=1,
            ),
        ):
            handle = await helpers.start_notice_workflow(client, spec, task_queue)
            await handle.signal("approve", {"by": "bob"})
            give_up = time.monotonic() + 60
            while len(smtp_sink.messages()) + len(second.messages()) < 150:
                assert time.monotonic() < give_up, "the mailing did not start"
                await asyncio.sleep(0.05)
            await handle.signal("cancel", {"by": "carol", "reason": "contract renegotiated"})
            status = await wait_for(handle, lambda s: s.phase is Phase.cancelled, timeout=60)
        messages = smtp_sink.messages() + second.messages()

    notices = [m for m in messages if "cancelled" not in m["Subject"]]
    cancellations = [m for m in messages if "cancelled" in m["Subject"]]
    reached = {m["To"] for m in notices}
    assert 150 <= len(reached) < CUSTOMERS  # stopped part-way
    assert Counter(m["To"] for m in cancellations) == Counter(reached)  # each reached one, once
    assert status.delivered == len(reached)


# --- the relay's rate, shared ------------------------------------------------------------------


async def test_the_relay_rate_is_shared_by_every_worker(pool):
    """Two workers' paces for the same relay at 100 messages a second: together they send no
    faster than 100 a second (it would be 200 were the limit per worker), no second holding
    much more; another relay is paced on its own."""
    relay = f"relay-{uuid.uuid4().hex[:6]}:25"
    rate, each = 100.0, 150
    paces = [RelayPace(relay, rate, chunk=4), RelayPace(relay, rate, chunk=4)]
    sent: list[float] = []

    async def send(pace: RelayPace) -> None:
        for _ in range(each):
            await pace.wait(pool)
            sent.append(time.monotonic())

    started = time.monotonic()
    await asyncio.gather(*(send(pace) for pace in paces))
    # 300 messages at 100 a second: the last slot begins ~3 s in.
    assert sent[-1] - started >= (2 * each - 2 * 4) / rate
    for t in sent:  # no one-second window holds more than the rate and a reservation each
        assert sum(t <= u < t + 1 for u in sent) <= rate + 2 * 4
    assert await pool.fetchval("SELECT count(*) FROM relay_pace WHERE relay = $1", relay) == 1

    other = RelayPace(f"other-{uuid.uuid4().hex[:6]}:25", rate)
    began = time.monotonic()
    await other.wait(pool)
    assert time.monotonic() - began < 0.5  # not queued behind the first relay


async def test_slow_workers_each_get_their_share_of_the_relay(pool):
    """Workers that cannot reach the relay's rate alone (25 a second each, under a relay of
    100) send side by side: reservations are a few slots, so they interleave. (Reserving half a
    second of the relay at a time let one worker send at once: the third one's first message
    came a second in, after the others' tenth.) Judged by order, not by the clock."""
    relay = f"shared-{uuid.uuid4().hex[:6]}:25"
    paces = [RelayPace(relay, 100.0, chunk=2) for _ in range(3)]
    sends: list[list[float]] = [[], [], []]

    async def slow_worker(number: int) -> None:
        for _ in range(10):
            await paces[number].wait(pool)
            sends[number].append(time.monotonic())
            await asyncio.sleep(1 / 25)  # this worker's own speed

    await asyncio.gather(*(slow_worker(number) for number in range(3)))
    # Every worker's first message goes out before any worker's fifth.
    assert max(times[0] for times in sends) < min(times[4] for times in sends), sends


async def test_no_relay_rate_means_no_pacing_and_no_rows(pool):
    pace = RelayPace(f"free-{uuid.uuid4().hex[:6]}:25", None)
    for _ in range(1000):
        await pace.wait(pool)
    assert not await pool.fetchval("SELECT count(*) FROM relay_pace WHERE relay = $1", pace.relay)


async def test_a_worker_paced_by_the_relay_still_mails_everyone(
    dev_server_env, pool, smtp_sink, tmp_path
):
    """End to end with NOTICEFLOW_SMTP_RELAY_RATE=100 on both workers (one relay, so one sink):
    a 600-customer notice (two shards, one per worker) takes at least 6 s, not the 3 s two
    workers at 100 a second each would take."""
    client = dev_server_env.client
    task_queue = f"tq-{uuid.uuid4().hex[:8]}"
    spec = await a_notice(pool, f"paced-{uuid.uuid4().hex[:6]}", count=600)
    async with (
        build_worker(
            client, deps_for(pool, smtp_sink, smtp_relay_rate=100), task_queue, send_slots=1
        ),
        build_worker(
            await another_client(client),
            deps_for(pool, smtp_sink, smtp_relay_rate=100),
            task_queue,
            send_slots=1,
        ),
    ):
        handle = await helpers.start_notice_workflow(client, spec, task_queue)
        started = time.monotonic()
        await handle.signal("approve", {"by": "bob"})
        status = await wait_for(handle, lambda s: s.phase is Phase.window_open, timeout=120)
        elapsed = time.monotonic() - started
    assert (status.delivered, status.undelivered) == (600, 0)
    assert Counter(m["To"] for m in smtp_sink.messages()).most_common(1)[0][1] == 1
    assert elapsed >= (600 - 2 * 2) / 100  # paced as one relay, not per worker
    relay = f"{smtp_sink.host}:{smtp_sink.port}"
    assert await pool.fetchval("SELECT count(*) FROM relay_pace WHERE relay = $1", relay) == 1
    await handle.terminate("test finished")


async def test_work_under_way_finishes_before_a_cancel_goes_on():
    """``finish_despite_cancel`` (a message in conversation, a mailed batch's record): cancelled
    once or twice meanwhile, the work still ends, its result goes to ``then``, and the cancel goes
    on; not cancelled, its result or its own error."""
    ended: list[str] = []

    async def record() -> str:
        await asyncio.sleep(0.3)
        ended.append("batch")
        return "recorded"

    kept: list[str] = []
    task = asyncio.create_task(finish_despite_cancel(record(), 5.0, then=kept.append))
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.sleep(0.05)
    task.cancel()  # again: still finished
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ended == ["batch"] and kept == ["recorded"]
    assert await to_the_end(record()) == "recorded"  # not cancelled: its result

    async def fails() -> None:
        raise TimeoutError("the work's own")

    with pytest.raises(TimeoutError, match="the work's own"):
        await finish_despite_cancel(fails(), 5.0)


async def test_a_cancel_waits_no_longer_than_the_grace():
    """A work that hangs (a stuck connection) is given up after the grace: cancelled, and the
    cancel goes on; one that fails after the cancel is dropped (the cancel wins)."""
    hung = asyncio.Event()

    async def hang() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            hung.set()
            raise

    task = asyncio.create_task(finish_despite_cancel(hang(), 0.2))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 2 and hung.is_set()

    async def fails_late() -> None:
        await asyncio.sleep(0.1)
        raise ValueError("after the cancel")

    kept: list[None] = []
    task = asyncio.create_task(finish_despite_cancel(fails_late(), 5.0, then=kept.append))
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert kept == []


async def test_a_cancel_after_a_worker_died_tells_those_its_unrecorded_batch_reached(
    pool, smtp_sink
):
    """A worker that died mid-shard mailed customers it never recorded (the ledger has them
    accepted; the records still say pending); a cancel that comes before any retry must still
    tell them (found by the hostile tester: 400 of 883 reached were not). Those the ledger has
    only as `sending` (marked before their batch went out, most never sent) are not told."""
    now = datetime.now(UTC)
    spec = await a_notice(pool, f"died-{uuid.uuid4().hex[:6]}", count=60)
    service = SendingService(deps_for(pool, smtp_sink))
    await service.snapshot_audience(AudienceRequest(spec=spec, at=now))
    await service.send_notices(SendRequest(spec=spec, at=now), "", progress=lambda *_: None)
    # As if the last 20 had been planned by a worker that died before recording its batch: the
    # ledger has 10 accepted and 10 still `sending`, the records none of them.
    unrecorded = [f"c{i:05d}" for i in range(40, 60)]
    await pool.execute(
        "UPDATE recipients SET delivery = 'pending', delivered_at = NULL, deadline = NULL"
        " WHERE notice_id = $1 AND customer_id = ANY($2::text[])",
        spec.notice_id,
        unrecorded,
    )
    await pool.execute(
        "UPDATE deliveries SET status = 'sending' WHERE notice_id = $1 AND customer_id = ANY($2)",
        spec.notice_id,
        unrecorded[10:],
    )
    await service.mail_change(
        ChangeMailRequest(
            spec=spec, kind="cancellation", key="test/cancel-1",
            detail={"by": "carol", "reason": "renegotiated", "phase": "notifying"}, at=now,
        ),
        progress=lambda *_: None,
    )  # fmt: skip
    told = Counter(m["To"] for m in smtp_sink.messages() if "cancelled" in m["Subject"])
    assert told == Counter(f"dpo@c{i:05d}.example" for i in range(50))


async def test_a_relay_booked_years_ahead_heals_and_a_tiny_rate_is_refused(pool):
    """A relay_pace row pushed far ahead (a mistaken rate since corrected) holds a worker at most
    PACE_HORIZON, not for years; and a rate that would do it is refused up front."""
    relay = f"jammed-{uuid.uuid4().hex[:6]}:25"
    await pool.execute(
        "INSERT INTO relay_pace (relay, next_at) VALUES ($1, now() + interval '158 years')", relay
    )
    delay = await pool.fetchval(RESERVE_PACE, relay, 0.02)
    assert PACE_HORIZON - 5 <= delay <= PACE_HORIZON + 1
    for rate in (1e-9, 0.05, 0, -1):
        with pytest.raises(ValidationError, match="smtp_relay_rate"):
            Settings(smtp_relay_rate=rate)
    assert Settings(smtp_relay_rate=0.1).smtp_relay_rate == 0.1
