"""Catch-up projections: read models built from the event store alone.

Each projection follows the global order ``(tx_id, position)`` from its checkpoint and writes its
read-model changes and its new checkpoint in one transaction, so it never applies an event twice or
skips one. The runner is woken by LISTEN/NOTIFY and polls as a fallback. `rebuild` empties the read
models and replays every event: a rebuilt read model equals the live one.

A customer event updates that customer's row (one statement, which also tells what it changed);
the notice's counts, its progress over time (the dashboard's chart), its window close and its
change marker are sums and maxima of those changes, so they are gathered for the page of events
and written once per notice at its end — the same values whatever the page boundaries, so a
rebuild still equals the live models, and a send to 100,000 customers costs one statement per
event, not one aggregate over the notice's customers per event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import asyncpg
import structlog

from noticeflow import eventstore as es
from noticeflow.contracts import notice_id_of
from noticeflow.follower import follow

log = structlog.get_logger(__name__)
NAME = "read_models"
TABLES = ("rm_notices", "rm_notice_customers", "rm_customer_subprocessors", "rm_notice_progress")
COUNTS = ("delivered", "undelivered", "opted_in", "activated", "settled", "open_objections")
PROGRESS = ("delivered", "objections", "opted_in", "activated")


def _at(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@dataclass
class _Window:
    deadline: datetime | None = None  # the latest deadline among this page's deliveries


@dataclass
class _Page:
    """What a page of events changes in sums and maxima, written once per notice at its end."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    progress: dict[tuple[str, datetime], list[int]] = field(default_factory=dict)
    windows: dict[str, _Window] = field(default_factory=dict)
    marks: dict[str, tuple[int, datetime]] = field(default_factory=dict)

    def count(self, notice_id: str, deltas: dict[str, int]) -> None:
        counts = self.counts.setdefault(notice_id, dict.fromkeys(COUNTS, 0))
        for name, delta in deltas.items():
            counts[name] += delta

    def progressed(self, notice_id: str, at: datetime, deltas: dict[str, int]) -> None:
        if not any(deltas.get(name) for name in PROGRESS):
            return
        minute = at.astimezone(UTC).replace(second=0, microsecond=0)
        # Kept even when the minute nets to zero (an opt-in and its revocation): the row exists
        # either way, whichever page boundaries the changes fell on.
        totals = self.progress.setdefault((notice_id, minute), [0] * len(PROGRESS))
        for i, name in enumerate(PROGRESS):
            totals[i] += deltas.get(name, 0)

    def delivered(self, notice_id: str, deadline: datetime | None) -> None:
        window = self.windows.setdefault(notice_id, _Window())
        if deadline is not None and (window.deadline is None or deadline > window.deadline):
            window.deadline = deadline

    def seen(self, notice_id: str, e: es.StoredEvent) -> None:
        version, at = self.marks.get(notice_id, (0, e.occurred_at))
        self.marks[notice_id] = (max(version, e.version), max(at, e.occurred_at))

    async def flush_window(self, c: asyncpg.Connection, notice_id: str) -> None:
        """The window closes at the latest deadline seen (deadlines, once set, never change)."""
        window = self.windows.pop(notice_id, None)
        if window is not None:
            await c.execute(
                "UPDATE rm_notices SET max_deadline = greatest(max_deadline, $2),"
                " window_closes_at = greatest(window_closes_at, max_deadline, $2)"
                " WHERE notice_id = $1",
                notice_id,
                window.deadline,
            )

    async def flush(self, c: asyncpg.Connection) -> None:
        for notice_id in list(self.windows):
            await self.flush_window(c, notice_id)
        changed = [(n, *(d[k] for k in COUNTS)) for n, d in self.counts.items() if any(d.values())]
        if changed:
            await c.executemany(
                "UPDATE rm_notices SET "
                + ", ".join(f"{k} = {k} + ${i}" for i, k in enumerate(COUNTS, start=2))
                + " WHERE notice_id = $1",
                changed,
            )
        if self.progress:
            await c.executemany(
                "INSERT INTO rm_notice_progress (notice_id, at, delivered, objections, opted_in,"
                " activated) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (notice_id, at) DO UPDATE"
                " SET delivered = rm_notice_progress.delivered + EXCLUDED.delivered,"
                " objections = rm_notice_progress.objections + EXCLUDED.objections,"
                " opted_in = rm_notice_progress.opted_in + EXCLUDED.opted_in,"
                " activated = rm_notice_progress.activated + EXCLUDED.activated",
                [(n, at, *totals) for (n, at), totals in self.progress.items()],
            )
        if self.marks:  # the change marker the live dashboard polls
            await c.executemany(
                "UPDATE rm_notices SET version = greatest(version, $2),"
                " last_event_at = greatest(last_event_at, $3) WHERE notice_id = $1",
                [(n, version, at) for n, (version, at) in self.marks.items()],
            )


Handler = Callable[[asyncpg.Connection, _Page, str, es.StoredEvent], Awaitable[None]]


async def _created(c: asyncpg.Connection, p: _Page, notice_id: str, e: es.StoredEvent) -> None:
    spec = e.data["spec"]
    await c.execute(
        "INSERT INTO rm_notices (notice_id, title, subprocessor, opt_in, author, text_sha256, phase,"
        " effective_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'draft', $7, $8, $8)",
        notice_id,
        spec["title"],
        spec["subprocessor"],
        spec["opt_in"],
        e.data["author"],
        e.data["text_sha256"],
        _at(spec["effective_at"]),
        e.occurred_at,
    )


async def _phase(c: asyncpg.Connection, p: _Page, notice_id: str, e: es.StoredEvent) -> None:
    await p.flush_window(c, notice_id)  # deliveries before this event, then the workflow's word
    await c.execute(
        "UPDATE rm_notices SET phase = $2, effective_at = $3, window_closes_at = $4, updated_at = $5"
        " WHERE notice_id = $1",
        notice_id,
        e.data["phase"],
        _at(e.data["effective_at"]),
        _at(e.data.get("window_closes_at")),
        e.occurred_at,
    )
    if e.data["phase"] == "cancelled":
        status = await c.execute(
            "UPDATE rm_notice_customers SET verdict = 'cancelled', settled = true"
            " WHERE notice_id = $1 AND NOT settled",
            notice_id,
        )
        p.count(notice_id, {"settled": int(status.rsplit(" ", 1)[1])})


async def _approved(c: asyncpg.Connection, p: _Page, notice_id: str, e: es.StoredEvent) -> None:
    await c.execute(
        "UPDATE rm_notices SET approved_by = $2 WHERE notice_id = $1", notice_id, e.data["by"]
    )


async def _snapshot(c: asyncpg.Connection, p: _Page, notice_id: str, e: es.StoredEvent) -> None:
    zones = e.data.get("timezones", {})
    terms = e.data.get("terms") or {}
    await c.executemany(
        "INSERT INTO rm_notice_customers (notice_id, customer_id, timezone, authorisation)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        [
            (
                notice_id,
                customer,
                zones.get(customer),
                (terms.get(customer) or {}).get("authorisation") or "general",
            )
            for customer in e.data["customer_ids"]
        ],
    )
    await c.execute(  # the whole audience's size (every part of a large one says it)
        "UPDATE rm_notices SET customers = $2 WHERE notice_id = $1",
        notice_id,
        int(e.data.get("customers", len(e.data["customer_ids"]))),
    )


# --- one customer's row -------------------------------------------------------------------------

_FLAGS = ("delivery", "opted_in", "activated", "settled", "open_objections")


class _Change(NamedTuple):
    """A customer row's flags before and after one event."""

    old: dict[str, Any]
    new: dict[str, Any]


async def _customer(
    c: asyncpg.Connection,
    p: _Page,
    notice_id: str,
    e: es.StoredEvent,
    assignments: str,
    *args: Any,
    where: str = "",
    returning: str = "",
    objections: int = 0,
) -> asyncpg.Record | None:
    """Update one customer's row and count what changed (both CTEs read the same snapshot, so
    ``old`` is the row as it was). Returns the row's ``returning`` columns (None: no row changed)."""
    flags = ", ".join(_FLAGS)
    extra = [r.strip() for r in returning.split(",") if r.strip()]
    row = await c.fetchrow(
        f"WITH old AS (SELECT {flags} FROM rm_notice_customers"
        "   WHERE notice_id = $1 AND customer_id = $2),"
        f" new AS (UPDATE rm_notice_customers SET {assignments}"
        f"   WHERE notice_id = $1 AND customer_id = $2 {where}"
        f"   RETURNING {', '.join([*_FLAGS, *extra])})"
        " SELECT "
        + ", ".join(
            [*(f"o.{f} AS old_{f}, n.{f} AS new_{f}" for f in _FLAGS), *(f"n.{r}" for r in extra)]
        )
        + " FROM old o, new n",
        notice_id,
        e.data["customer_id"],
        *args,
    )
    if row is None:
        return None
    deltas = _deltas(
        _Change({f: row[f"old_{f}"] for f in _FLAGS}, {f: row[f"new_{f}"] for f in _FLAGS})
    )
    if objections:
        deltas["objections"] = objections
    p.count(notice_id, {k: v for k, v in deltas.items() if k in COUNTS})
    p.progressed(notice_id, e.occurred_at, deltas)
    return row


def _deltas(change: _Change) -> dict[str, int]:
    old, new = change

    def count(flags: dict[str, Any], name: str) -> int:
        if name == "delivered":
            return int(flags["delivery"] == "delivered")
        if name == "undelivered":
            return int(flags["delivery"] == "undelivered")
        return int(flags[name])

    found = {name: count(new, name) - count(old, name) for name in COUNTS}
    return {name: delta for name, delta in found.items() if delta}


async def _delivery(c: asyncpg.Connection, p: _Page, notice_id: str, e: es.StoredEvent) -> None:
    delivered = e.event_type == "notice_delivered"
    row = await _customer(
        c,
        p,
        notice_id,
        e,
        "delivery = $3, delivered_at = coalesce(delivered_at, $4), deadline = coalesce(deadline, $5)",
        "delivered" if delivered else "undelivered",
        _at(e.data.get("delivered_at")),
        _at(e.data.get("deadline")),
        where="AND delivery <> 'delivered'",
        returning="deadline",
    )
    p.delivered(notice_id, row["deadline"] if row is not None else None)


_DELIVERIES = (  # a run of one notice's delivery events, distinct customers: as _delivery, at once
    # (the rows found by the ids' index, = ANY: a join alone read all the notice's rows each time)
    "WITH input AS (SELECT * FROM unnest($2::text[], $3::text[], $4::timestamptz[],"
    "   $5::timestamptz[]) WITH ORDINALITY AS t(customer_id, delivery, delivered_at, deadline, i)),"
    f" old AS (SELECT r.customer_id, {', '.join(f'r.{f}' for f in _FLAGS)}"
    "   FROM rm_notice_customers r WHERE r.notice_id = $1 AND r.customer_id = ANY($2::text[])),"
    " new AS (UPDATE rm_notice_customers r SET delivery = i.delivery,"
    "   delivered_at = coalesce(r.delivered_at, i.delivered_at),"
    "   deadline = coalesce(r.deadline, i.deadline) FROM input i"
    "   WHERE r.notice_id = $1 AND r.customer_id = ANY($2::text[])"
    "   AND r.customer_id = i.customer_id AND r.delivery <> 'delivered'"
    f"   RETURNING r.customer_id, {', '.join(f'r.{f}' for f in _FLAGS)}, r.deadline)"
    " SELECT i.i, "
    + ", ".join(f"o.{f} AS old_{f}, n.{f} AS new_{f}" for f in _FLAGS)
    + ", n.deadline FROM new n JOIN old o USING (customer_id) JOIN input i USING (customer_id)"
)


async def _deliveries(
    c: asyncpg.Connection, p: _Page, notice_id: str, run: list[es.StoredEvent]
) -> None:
    """A run of delivery events of one notice for distinct customers, in one statement: the same
    rows, counts, progress and window as :func:`_delivery` applied to each in turn (each event
    touches only its own customer's row, so their order within the run does not matter)."""
    rows = await c.fetch(
        _DELIVERIES,
        notice_id,
        [e.data["customer_id"] for e in run],
        ["delivered" if e.event_type == "notice_delivered" else "undelivered" for e in run],
        [_at(e.data.get("delivered_at")) for e in run],
        [_at(e.data.get("deadline")) for e in run],
    )
    changed = {row["i"] - 1: row for row in rows}
    for index, e in enumerate(run):
        row = changed.get(index)
        if row is not None:
            deltas = _deltas(
                _Change({f: row[f"old_{f}"] for f in _FLAGS}, {f: row[f"new_{f}"] for f in _FLAGS})
            )
            p.count(notice_id, {k: v for k, v in deltas.items() if k in COUNTS})
            p.progressed(notice_id, e.occurred_at, deltas)
        p.delivered(notice_id, row["deadline"] if row is not None else None)


async def _objection(c: asyncpg.Connection, p: _Page, notice_id: str, e: es.StoredEvent) -> None:
    await _customer(
        c,
        p,
        notice_id,
        e,
        "objection_status = 'open', objection_timely = $3, open_objections = open_objections + 1,"
        " settled = false, objection_request = $4",
        e.data["timely"],
        e.data.get("request") or "objection",
        objections=1,
    )


async def _resolved(c: asyncpg.Connection, p: _Page, notice_id: str, e: es.StoredEvent) -> None:
    await _customer(
        c,
        p,
        notice_id,
        e,
        "objection_status = $3, open_objections = 0, settled = false",
        e.data["outcome"],
    )


async def _opt_in(c: asyncpg.Connection, p: _Page, notice_id: str, e: es.StoredEvent) -> None:
    await _customer(
        c, p, notice_id, e, "opted_in = $3, settled = false", e.event_type == "opt_in_recorded"
    )


async def _excluded(c: asyncpg.Connection, p: _Page, notice_id: str, e: es.StoredEvent) -> None:
    await _customer(
        c,
        p,
        notice_id,
        e,
        "excluded_at = coalesce(excluded_at, $3), settled = false",
        e.occurred_at,
    )


async def _deemed(c: asyncpg.Connection, p: _Page, notice_id: str, e: es.StoredEvent) -> None:
    await c.execute(
        "UPDATE rm_notice_customers SET deemed_accepted_at = $3 WHERE notice_id = $1 AND customer_id = $2",
        notice_id,
        e.data["customer_id"],
        _at(e.data["deadline"]),
    )


async def _switched(c: asyncpg.Connection, p: _Page, notice_id: str, e: es.StoredEvent) -> None:
    enabled = e.event_type == "subprocessor_enabled"
    await _customer(
        c,
        p,
        notice_id,
        e,
        "activated = $3, activated_at = CASE WHEN $3 THEN $4 ELSE activated_at END",
        enabled,
        e.occurred_at,
        e.data["subprocessor"],
        # the notice's own sub-processor only (a replacement switches the old one off too)
        where="AND $5 = coalesce((SELECT subprocessor FROM rm_notices WHERE notice_id = $1), $5)",
    )
    await c.execute(
        "INSERT INTO rm_customer_subprocessors (customer_id, subprocessor, enabled, since, notice_id)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (customer_id, subprocessor) DO UPDATE SET"
        " enabled = EXCLUDED.enabled, since = EXCLUDED.since, notice_id = EXCLUDED.notice_id",
        e.data["customer_id"],
        e.data["subprocessor"],
        enabled,
        e.occurred_at,
        notice_id,
    )


async def _settled(c: asyncpg.Connection, p: _Page, notice_id: str, e: es.StoredEvent) -> None:
    await _customer(c, p, notice_id, e, "verdict = $3, settled = true", e.data["verdict"])


HANDLERS: dict[str, Handler] = {
    "notice_created": _created,
    "phase_changed": _phase,
    "notice_approved": _approved,
    "audience_snapshotted": _snapshot,
    "notice_delivered": _delivery,
    "notice_undelivered": _delivery,
    "objection_received": _objection,
    "objection_resolved": _resolved,
    "opt_in_recorded": _opt_in,
    "opt_in_revoked": _opt_in,
    "customer_excluded": _excluded,
    "deemed_acceptance": _deemed,
    "subprocessor_enabled": _switched,
    "subprocessor_disabled": _switched,
    "customer_settled": _settled,
}


PROJECTOR_LOCK = 7_346_002


async def catch_up(pool: asyncpg.Pool, page: int = 2000) -> int:
    """Apply every event after the checkpoint; returns how many were applied."""
    applied = 0
    async with pool.acquire() as connection:
        while True:
            async with connection.transaction():
                # One projector at a time. An advisory lock takes no transaction id, so this
                # transaction does not hold back the horizon (oldest open transaction) it reads below.
                await connection.execute("SELECT pg_advisory_xact_lock($1)", PROJECTOR_LOCK)
                count, more = await _apply_page(connection, page)
            applied += count
            if not more:
                return applied


PAGE_BYTES = 16_000_000  # a page's JSON at most (beyond its first event): the memory it holds


async def _apply_page(connection: asyncpg.Connection, page: int) -> tuple[int, bool]:
    """The next page of events after the checkpoint, applied, and the checkpoint moved (in the
    caller's transaction, under the projector's lock)."""
    row = await connection.fetchrow(
        "SELECT tx_id, position FROM projection_checkpoints WHERE name = $1", NAME
    )
    after = es.Checkpoint(row["tx_id"], row["position"]) if row else es.Checkpoint()
    events, more = await es.read_page(connection, after, page, PAGE_BYTES)
    covered = await _covered(connection, events)
    changes = _Page()
    run: list[es.StoredEvent] = []  # consecutive delivery events of one notice, distinct customers
    ids: set[str] = set()  # the run's customers
    for event in events:
        if event.version > covered.get(event.stream_id, 0):
            # no head covers it: not appended by the product (no append writes events without
            # moving its stream's head); `evidence verify` names it
            continue
        notice_id = notice_id_of(event.stream_id)
        if notice_id is None:
            continue
        if run and not _joins(run, ids, notice_id, event):
            await _flush_run(connection, changes, run, ids)
        if event.event_type in _DELIVERY_TYPES:
            run.append(event)
            ids.add(event.data["customer_id"])
        else:
            handler = HANDLERS.get(event.event_type)
            if handler is not None:
                await handler(connection, changes, notice_id, event)
        changes.seen(notice_id, event)
    if run:
        await _flush_run(connection, changes, run, ids)
    await changes.flush(connection)
    if events:
        last = events[-1].checkpoint
        await connection.execute(
            "INSERT INTO projection_checkpoints (name, tx_id, position) VALUES ($1, $2, $3)"
            " ON CONFLICT (name) DO UPDATE SET tx_id = $2, position = $3",
            NAME,
            last.tx_id,
            last.position,
        )
    return len(events), more


_DELIVERY_TYPES = ("notice_delivered", "notice_undelivered")


def _joins(run: list[es.StoredEvent], ids: set[str], notice_id: str, e: es.StoredEvent) -> bool:
    """Whether ``e`` may join the run of deliveries: a delivery event of the same notice, for a
    customer not yet in the run (one statement updates a row once), the run not yet full."""
    return (
        e.event_type in _DELIVERY_TYPES
        and notice_id_of(run[0].stream_id) == notice_id
        and e.data["customer_id"] not in ids
        and len(run) < RUN
    )


RUN = 1000  # the most delivery events one statement applies


async def _flush_run(
    connection: asyncpg.Connection, changes: _Page, run: list[es.StoredEvent], ids: set[str]
) -> None:
    notice_id = notice_id_of(run[0].stream_id)
    assert notice_id is not None
    if len(run) == 1:
        await _delivery(connection, changes, notice_id, run[0])
    else:
        await _deliveries(connection, changes, notice_id, run)
    run.clear()
    ids.clear()


async def _covered(connection: asyncpg.Connection, events: list[es.StoredEvent]) -> dict[str, int]:
    """The head version of each stream in a page of events."""
    streams = sorted({event.stream_id for event in events})
    if not streams:
        return {}
    rows = await connection.fetch(
        "SELECT stream_id, version FROM event_streams WHERE stream_id = ANY($1::text[])", streams
    )
    return {row["stream_id"]: row["version"] for row in rows}


async def rebuild(pool: asyncpg.Pool, page: int = 2000) -> int:
    """Empty the read models and replay the whole event store into them, in one transaction:
    readers see the old read models until the new ones are complete, and the live projector
    waits (an event committed meanwhile is applied by it afterwards, from the checkpoint)."""
    applied = 0
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", PROJECTOR_LOCK)
        for table in TABLES:  # DELETE, not TRUNCATE: readers keep reading the old rows
            await connection.execute(f"DELETE FROM {table}")
        await connection.execute("DELETE FROM projection_checkpoints WHERE name = $1", NAME)
        while True:
            count, more = await _apply_page(connection, page)
            applied += count
            if not more:
                break
    return applied


async def run_projections(
    pool: asyncpg.Pool, stop: asyncio.Event, poll_seconds: float = 2.0
) -> None:
    """Keep the read models current until ``stop``: woken by NOTIFY, polling as a fallback; a
    failed catch-up or a lost connection (a database restart) is logged and tried again."""
    await follow(pool, stop, lambda: catch_up(pool), what="projector", poll_seconds=poll_seconds)
