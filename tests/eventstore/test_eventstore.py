"""The event store on a real PostgreSQL: idempotency, concurrency, global order, tamper evidence."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import asyncpg
import orjson
import pytest

from noticeflow import eventstore as es
from noticeflow.domain import events

REMINDED = events.ReminderSent(customer_id="acme", deadline=datetime(2026, 12, 20, tzinfo=UTC))


@asynccontextmanager
async def owned(url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection as the schema's owner (who can disable the append-only trigger)."""
    connection = await asyncpg.connect(url)
    try:
        yield connection
    finally:
        await connection.close()


def new(key: str, data: object = None, event_type: str = "happened") -> es.NewEvent:
    return es.NewEvent(
        uuid.uuid5(es.EVENT_NAMESPACE, key),
        event_type,
        data or {"k": key},
        datetime(2026, 11, 29, tzinfo=UTC),
    )


async def test_batch_append_versions_and_chains(pool):
    async with pool.acquire() as connection:
        stored = await es.append_events(
            connection, "s1", [new("a"), new("b"), new("c")], es.NO_STREAM
        )
    assert [e.version for e in stored] == [1, 2, 3]
    assert stored[0].prev_hash == es.GENESIS and stored[1].prev_hash == stored[0].hash
    assert es.verify_chain(e.as_json() for e in await es.read_stream(pool, "s1")) is None


async def test_same_id_same_content_is_a_no_op_returning_the_original(pool):
    async with pool.acquire() as connection:
        first = await es.append_events(connection, "s1", [new("a")])
        again = await es.append_events(connection, "s1", [new("a")])
    assert again == first
    assert await pool.fetchval("SELECT count(*) FROM events") == 1


async def test_same_id_other_content_is_refused(pool):
    async with pool.acquire() as connection:
        await es.append_events(connection, "s1", [new("a")])
        with pytest.raises(es.EventIdConflict):
            await es.append_events(connection, "s1", [new("a", {"k": "changed"})])
        with pytest.raises(es.EventIdConflict):
            await es.append_events(connection, "s2", [new("a")])


async def test_expected_version_is_enforced(pool):
    async with pool.acquire() as connection:
        await es.append_events(connection, "s1", [new("a")], es.NO_STREAM)
        with pytest.raises(es.ConcurrencyError, match="at version 1, expected 0"):
            await es.append_events(connection, "s1", [new("b")], es.NO_STREAM)
        await es.append_events(connection, "s1", [new("b")], 1)


async def test_the_table_refuses_update_delete_and_truncate_even_to_its_owner(
    pool, owner_database_url
):
    # (The runtime role lacks the privileges in the first place: tests/test_least_privilege.py.)
    await es.append(pool, "s1", "a", REMINDED, datetime(2026, 11, 29, tzinfo=UTC))
    connection = await asyncpg.connect(owner_database_url)
    try:
        for statement in (
            "UPDATE events SET event_type = 'x'",
            "DELETE FROM events",
            "TRUNCATE events",
        ):
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await connection.execute(statement)
    finally:
        await connection.close()


async def test_a_typed_append_stores_type_version_and_data_and_reads_back_the_model(pool):
    at = datetime(2026, 11, 29, 8, 0, 0, 250000, tzinfo=UTC)
    first = await es.append(pool, "notice-n", "reminder/acme", REMINDED, at)
    again = await es.append(pool, "notice-n", "reminder/acme", REMINDED, at)  # a retried step
    assert again == first and await pool.fetchval("SELECT count(*) FROM events") == 1
    (stored,) = await es.read_stream(pool, "notice-n")
    assert (stored.event_type, stored.schema_version) == ("reminder_sent", 1)
    assert stored.data == {"customer_id": "acme", "deadline": "2026-12-20T00:00:00+00:00"}
    assert stored.typed() == REMINDED
    assert stored.event_id == es.event_id("notice-n", "reminder/acme")
    with pytest.raises(es.EventIdConflict):
        other = events.ReminderSent(customer_id="acme", deadline=at)
        await es.append(pool, "notice-n", "reminder/acme", other, at)


async def test_a_version_1_delivery_event_reads_back_upcast_and_its_chain_verifies(pool):
    v1 = {
        "customer_id": "acme", "kind": "notice", "delivered_at": None, "deadline": None,
        "clock_started": False, "contacts": [{
            "position": 0, "message_id": "<m@x>", "status": "failed", "reply": "550 5.1.1 gone",
            "at": "2026-11-29T07:00:00+00:00",
        }],
    }  # fmt: skip
    async with pool.acquire() as connection:
        await es.append_events(connection, "s1", [new("a", v1, "notice_undelivered")])
    (event,) = await es.read_stream(pool, "s1")
    assert event.schema_version == 2 and event.data["contacts"][0]["smtp_code"] == 550
    typed = event.typed()
    assert isinstance(typed, events.NoticeUndelivered) and typed.text_sha256 is None
    (raw,) = await es.read_stream(pool, "s1", upcast=False)
    assert raw.schema_version == 1 and raw.typed() == typed
    assert es.verify_chain([raw.as_json()]) is None


async def test_upcasters_lift_old_payloads_on_read(pool):
    upcasters = es.UPCASTERS
    step = ("renamed", 1)
    upcasters.steps[step] = lambda data: {"name": data["old_name"]}
    try:
        async with pool.acquire() as connection:
            await es.append_events(connection, "s1", [new("a", {"old_name": "x"}, "renamed")])
        (event,) = await es.read_stream(pool, "s1")
        assert (event.schema_version, event.data) == (2, {"name": "x"})
        assert (
            es.verify_chain([(await es.read_stream(pool, "s1", upcast=False))[0].as_json()]) is None
        )
    finally:
        del upcasters.steps[step]


async def test_tampering_is_detected_and_the_first_bad_event_named(pool, owner_database_url):
    async with pool.acquire() as connection:
        stored = await es.append_events(connection, "s1", [new(str(i)) for i in range(5)])
    async with owned(owner_database_url) as connection:
        await connection.execute("ALTER TABLE events DISABLE TRIGGER events_append_only")
        await connection.execute(
            'UPDATE events SET data = \'{"k": "forged"}\' WHERE event_id = $1', stored[2].event_id
        )
        await connection.execute("ALTER TABLE events ENABLE TRIGGER events_append_only")
    problem = await es.verify_stream(pool, "s1")
    assert problem is not None and problem.version == 3 and "altered" in str(problem)


async def test_a_removed_event_is_detected(pool, owner_database_url):
    async with pool.acquire() as connection:
        stored = await es.append_events(connection, "s1", [new(str(i)) for i in range(4)])
    async with owned(owner_database_url) as connection:
        await connection.execute("ALTER TABLE events DISABLE TRIGGER events_append_only")
        await connection.execute("DELETE FROM events WHERE event_id = $1", stored[1].event_id)
        await connection.execute("ALTER TABLE events ENABLE TRIGGER events_append_only")
    problem = await es.verify_stream(pool, "s1")
    assert (
        problem is not None and problem.version == 3 and "missing or reordered" in problem.problem
    )


async def test_a_subscriber_never_skips_an_event_that_commits_out_of_order(pool):
    slow = await pool.acquire()
    try:
        transaction = slow.transaction()
        await transaction.start()
        await es.append_events(slow, "slow", [new("early")])  # lower tx id, not yet committed
        async with pool.acquire() as fast:
            await es.append_events(fast, "fast", [new("late")])  # commits first
        seen = await es.read_all(pool, es.Checkpoint())
        assert seen == []  # the later event waits behind the open transaction
        await transaction.commit()
    finally:
        await pool.release(slow)
    seen = await es.read_all(pool, es.Checkpoint())
    assert [e.stream_id for e in seen] == ["slow", "fast"]


async def test_many_concurrent_writers_lose_duplicate_and_reorder_nothing(database_url):
    writers, per_writer, streams = 16, 40, 4
    pool = await asyncpg.create_pool(database_url, min_size=writers, max_size=writers + 2)
    assert pool is not None
    seen: list[es.StoredEvent] = []
    done = asyncio.Event()

    async def subscriber() -> None:
        checkpoint = es.Checkpoint()
        while True:
            finished = done.is_set()
            batch = await es.read_all(pool, checkpoint, limit=97)
            seen.extend(batch)
            if batch:
                checkpoint = batch[-1].checkpoint
            elif finished:
                return
            else:
                await asyncio.sleep(0.005)

    async def writer(number: int) -> None:
        async with pool.acquire() as connection:
            for i in range(per_writer):
                stream = f"stream-{(number + i) % streams}"
                batch = [new(f"w{number}-{i}-{j}") for j in range(1 + i % 3)]
                await es.append_events(connection, stream, batch)

    reader = asyncio.create_task(subscriber())
    await asyncio.gather(*(writer(n) for n in range(writers)))
    done.set()
    await reader
    total = await pool.fetchval("SELECT count(*) FROM events")
    assert len(seen) == total == writers * sum(1 + i % 3 for i in range(per_writer))
    assert len({e.event_id for e in seen}) == total
    assert [e.checkpoint for e in seen] == sorted(e.checkpoint for e in seen)
    for stream in {e.stream_id for e in seen}:
        versions = [e.version for e in seen if e.stream_id == stream]
        assert versions == list(range(1, len(versions) + 1))
        assert await es.verify_stream(pool, stream) is None
    await pool.close()


async def test_a_transaction_that_wrote_first_but_reached_the_stream_late_must_retry(pool):
    early = await pool.acquire()
    try:
        transaction = early.transaction()
        await transaction.start()
        await early.execute("SELECT pg_current_xact_id()")  # takes its transaction id now
        async with pool.acquire() as later:
            await es.append_events(later, "s1", [new("later")])
        with pytest.raises(es.OrderingConflict):
            await es.append_events(early, "s1", [new("early")])
        await transaction.rollback()
    finally:
        await pool.release(early)
    async with pool.acquire() as retried:
        stored = await es.append_events(retried, "s1", [new("early")])
    assert stored[0].version == 2


async def test_a_large_batch_retried_returns_the_originals(pool):
    batch = [new(f"big-{i}") for i in range(40)]  # large enough to go in by COPY
    async with pool.acquire() as connection:
        first = await es.append_events(connection, "big", batch)
        again = await es.append_events(connection, "big", batch)
        more = await es.append_events(
            connection, "big", [*batch[:20], *(new(f"more-{i}") for i in range(20))]
        )
    assert again == first
    assert [e.version for e in more[20:]] == list(range(41, 61)) and more[:20] == first[:20]
    assert await es.verify_stream(pool, "big") is None


@pytest.mark.parametrize("size", [1, es.COPY_FROM])
async def test_stream_ids_with_quotes_and_backslashes_are_written_as_given(pool, size):
    stream = "o'brien\\$2 '); DROP TABLE events; --"
    batch = [new(f"odd-{size}-{i}") for i in range(size)]
    async with pool.acquire() as connection:
        await es.append_events(connection, stream, batch)
        await es.append_events(connection, stream, [new(f"odd-{size}-more")], size)
    assert await es.verify_stream(pool, stream) is None
    assert (
        await pool.fetchval("SELECT version FROM event_streams WHERE stream_id = $1", stream)
        == size + 1
    )


async def test_a_refused_append_leaves_no_open_transaction(pool):
    async with pool.acquire() as connection:
        await es.append_events(connection, "s1", [new("a")])
        with pytest.raises(es.ConcurrencyError):
            await es.append_events(connection, "s1", [new(f"b{i}") for i in range(20)], 0)
        assert not connection.is_in_transaction()
        assert await es.append_events(connection, "s1", [new("c")], 1)
    assert await pool.fetchval("SELECT count(*) FROM events") == 2


async def test_the_stored_text_is_exactly_what_the_hash_covers(pool):
    data = {"z": 1, "a": {"é": [1.5, None, True]}, "when": datetime(2026, 11, 29, tzinfo=UTC)}
    async with pool.acquire() as connection:
        (stored,) = await es.append_events(connection, "s1", [new("text", data)])
    text = await pool.fetchval("SELECT data::text FROM events WHERE event_id = $1", stored.event_id)
    assert text.encode() == es.canonical(data)
    header = orjson.dumps(
        [stored.event_id, "s1", 1, stored.event_type, 1, stored.occurred_at.astimezone(UTC)]
    )
    assert hashlib.sha256(stored.prev_hash + header + b"\n" + text.encode()).digest() == stored.hash


async def test_a_batch_larger_than_a_position_block_keeps_positions_unique_and_in_order(pool):
    size = es.POSITION_BLOCK * 2 + 7
    async with pool.acquire() as connection:
        await es.append_events(connection, "other", [new("first")])
        stored = await es.append_events(connection, "big", [new(f"big-{i}") for i in range(size)])
        after = await es.append_events(connection, "other", [new("after")])
    positions = [event.position for event in stored]
    assert positions == sorted(positions) and len(set(positions)) == size
    assert [event.version for event in stored] == list(range(1, size + 1))
    assert after[0].position > positions[-1]
    assert es.verify_chain(e.as_json() for e in await es.read_stream(pool, "big")) is None


async def test_read_of_types_moves_past_the_others_without_their_data(pool):
    """A follower that wants a few types (the webhook outbox) reads only those with their data,
    page by page, and its checkpoint moves past every event of each page."""
    kinds = ["delivered", "wanted", "delivered", "delivered", "other", "wanted", "delivered"]
    async with pool.acquire() as connection:
        await es.append_events(
            connection,
            "types-1",
            [new(f"t-{i}", event_type=kind) for i, kind in enumerate(kinds)],
            es.NO_STREAM,
        )
    seen, after, pages = [], es.Checkpoint(), 0
    while True:
        events, last, read = await es.read_of_types(pool, after, 3, ["wanted", "other"])
        if last is None:
            assert read == 0 and events == []
            break
        pages += 1
        assert read <= 3 and all(e.event_type in ("wanted", "other") for e in events)
        assert all(after < e.checkpoint <= last for e in events)
        seen += [e.data["k"] for e in events]
        after = last
    assert pages == 3  # 3 + 3 + 1 events read
    assert seen == ["t-1", "t-4", "t-5"]
    everything = await es.read_all(pool, es.Checkpoint(), 100)
    assert after == everything[-1].checkpoint  # past the last event, though it was not wanted
