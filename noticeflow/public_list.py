"""The public sub-processor list, read from the event store (docs/public.md).

The events are the truth: the list is :func:`noticeflow.domain.public_list.derive` over the events
it follows from (the notices' lifecycle and switches, the baseline), read in the store's global
order ``(tx_id, position)`` and never past the oldest open transaction, so the events read are a
committed prefix of that order that no later commit can change, and only events their stream's
head covers (as the projector reads them). The chain head
(:class:`ChainHead`) names that prefix: the position of its last event and a digest over the
events' own chain hashes, so a reader can pin what it saw and anyone with the store can derive the
same list again (:func:`derive_through`) and compare.

Two ways to the same list: :func:`derive_through` reads every event from the start (the
independent derivation the tests compare the web's answers with), and :class:`Cache` keeps the
fold in memory and applies only the events committed since (the web, once per request).

:func:`record_baseline` appends the baseline (``noticeflow subprocessors import``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import orjson

from noticeflow import eventstore
from noticeflow.domain.errors import InputError, describe_problems
from noticeflow.domain.events import UPCASTERS, BaselineEntry
from noticeflow.domain.public_list import (
    BASELINE_STREAM,
    BASELINED,
    EVENT_TYPES,
    NOTICE_STREAM_PREFIX,
    SNAPSHOT,
    ChainHead,
    Fold,
    PublicEvent,
    PublicList,
    baseline_event,
    iso,
)
from noticeflow.eventstore import Checkpoint

PAGE = 5000
# An audience snapshot holds every customer id: only its count is read.
_READ = (
    "SELECT position, tx_id, stream_id, event_type, schema_version,"
    f" CASE WHEN event_type = '{SNAPSHOT}'"
    "  THEN json_build_object('customers', data -> 'customers') ELSE data END AS data,"
    " occurred_at, hash FROM events"
    " WHERE (tx_id, position) > ($1::text::xid8, $2)"
    "   AND event_type = ANY($3::text[])"
    "   AND (starts_with(stream_id, $4) OR stream_id = $5)"
    # Only events a stream head covers, as the projector, the webhook and subscriber outboxes
    # read them: no append writes an event without moving its stream's head, so a row inserted
    # behind the product's back (`evidence verify` names it) cannot change the list.
    "   AND stream_version <= (SELECT s.version FROM event_streams s"
    "                          WHERE s.stream_id = events.stream_id)"
    "   AND {bound}"
    " ORDER BY tx_id, position LIMIT $6"
)
_COMMITTED = _READ.format(bound="tx_id < pg_snapshot_xmin(pg_current_snapshot())")
_THROUGH = _READ.format(bound="(tx_id, position) <= ($7::text::xid8, $8)")


def _event(row: asyncpg.Record) -> PublicEvent:
    data = orjson.loads(row["data"])
    _, data = UPCASTERS.upcast(row["event_type"], row["schema_version"], data)
    return PublicEvent(
        row["position"], row["stream_id"], row["event_type"], data, row["occurred_at"],
        bytes(row["hash"]),
    )  # fmt: skip


async def _page(
    connection: asyncpg.Connection | asyncpg.Pool, after: Checkpoint, through: Checkpoint | None
) -> tuple[list[PublicEvent], Checkpoint | None]:
    common = (str(after.tx_id), after.position, list(EVENT_TYPES), NOTICE_STREAM_PREFIX)
    if through is None:
        rows = await connection.fetch(_COMMITTED, *common, BASELINE_STREAM, PAGE)
    else:
        rows = await connection.fetch(
            _THROUGH, *common, BASELINE_STREAM, PAGE, str(through.tx_id), through.position
        )
    if not rows:
        return [], None
    return [_event(row) for row in rows], Checkpoint(rows[-1]["tx_id"], rows[-1]["position"])


async def checkpoint_of(pool: asyncpg.Pool, position: int) -> Checkpoint | None:
    """The global-order checkpoint of the event at ``position`` (None: no such event)."""
    if position == 0:
        return Checkpoint()
    tx_id = await pool.fetchval("SELECT tx_id FROM events WHERE position = $1", position)
    return None if tx_id is None else Checkpoint(int(tx_id), position)


async def derive_through(pool: asyncpg.Pool, through: Checkpoint | None = None) -> PublicList:
    """The list from every event it follows from, read afresh from the start: up to and
    including ``through`` (a chain head's event), or the committed prefix as it stands."""
    if through is not None and through == Checkpoint():
        return Fold().result()
    fold, after = Fold(), Checkpoint()
    while True:
        events, last = await _page(pool, after, through)
        for event in events:
            fold.apply(event)
        if last is None or len(events) < PAGE:
            return fold.result()
        after = last


async def derive_at(pool: asyncpg.Pool, head: ChainHead) -> PublicList | None:
    """The list as it was at a chain head a reader pinned (None: the store has no such head)."""
    through = await checkpoint_of(pool, head.position)
    if through is None:
        return None
    listing = await derive_through(pool, through)
    return listing if listing.head == head else None


class Cache:
    """The fold kept in memory: each read applies only the events committed since the last."""

    def __init__(self) -> None:
        self._fold = Fold()
        self._after = Checkpoint()
        self._result: PublicList | None = None
        self._lock = asyncio.Lock()

    async def current(self, pool: asyncpg.Pool) -> PublicList:
        # The web's pool is bounded (db.BoundedPool, NOTICEFLOW_WEB_DB_TIMEOUT): so is the wait
        # for another request's read here, or requests queued behind a hung database would each
        # wait for all those before them (TimeoutError: a 503).
        wait = getattr(pool, "acquire_timeout", None)
        await asyncio.wait_for(self._lock.acquire(), wait)
        try:
            changed = self._result is None
            while True:
                events, last = await _page(pool, self._after, None)
                for event in events:
                    self._fold.apply(event)
                if last is not None:
                    self._after, changed = last, True
                if last is None or len(events) < PAGE:
                    break
            if changed or self._result is None:
                self._result = self._fold.result()
            return self._result
        finally:
            self._lock.release()


# --- the baseline --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BaselineOutcome:
    recorded: bool  # False: the same baseline was recorded already (nothing appended)
    version: int  # the baseline's number (1 for the first)
    subprocessors: int
    recorded_at: datetime

    def as_json(self) -> dict[str, object]:
        return {
            "recorded": self.recorded,
            "baseline": self.version,
            "subprocessors": self.subprocessors,
            "recorded_at": iso(self.recorded_at),
        }


async def _unknown_services(
    connection: asyncpg.Connection, entries: list[BaselineEntry]
) -> list[str]:
    """Each entry's service that no customer has (a typo would otherwise be published): checked
    once customers are loaded (before, there is nothing to check against)."""
    known = {
        row[0] for row in await connection.fetch("SELECT DISTINCT unnest(services) FROM customers")
    }
    if not known and not await connection.fetchval("SELECT EXISTS (SELECT 1 FROM customers)"):
        return []
    return [
        f"{entry.subprocessor}: services: {service!r} is no customer's service"
        f" (the customers' services: {', '.join(sorted(known)) or 'none'})"
        for entry in entries
        for service in entry.services
        if service not in known
    ]


async def record_baseline(
    pool: asyncpg.Pool,
    entries: list[BaselineEntry],
    by: str | None,
    now: datetime,
    replace: bool = False,
) -> BaselineOutcome:
    """Append the baseline to stream ``subprocessors``: the same content again appends nothing;
    a different one is refused once a notice was mailed (the public list would change without a
    notice), and before that needs ``replace`` (a correction; the earlier stays in the store)."""
    event = baseline_event(entries, by)
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute(eventstore.LOCK_SQL, BASELINE_STREAM)
        stored = await eventstore.read_stream(connection, BASELINE_STREAM)
        baselines = [e for e in stored if e.event_type == BASELINED]
        last = baselines[-1] if baselines else None
        if last is not None and last.data.get("content_sha256") == event.content_sha256:
            return BaselineOutcome(False, len(baselines), len(entries), last.occurred_at)
        unknown = await _unknown_services(connection, entries)
        if unknown:
            raise InputError(
                describe_problems("the baseline names services no customer has", unknown)
            )
        sent = await connection.fetchval("SELECT EXISTS (SELECT 1 FROM recipients)")
        if sent:
            what = "a different baseline" if last is not None else "a baseline"
            raise InputError(
                f"{what} is refused: notices have been mailed already, so the public list is"
                " published and may change only through a notice (kind addition, replacement,"
                " removal or material_change; docs/public.md)"
            )
        if last is not None and not replace:
            raise InputError(
                f"a different baseline is recorded already ({len(last.data['subprocessors'])}"
                f" sub-processors, on {iso(last.occurred_at)}); to correct it before the first"
                " notice is mailed, run again with --replace (the earlier one stays in the event"
                " store)"
            )
        new = eventstore.NewEvent.of(BASELINE_STREAM, f"baseline-{len(baselines) + 1}", event, now)
        await eventstore.append_events(connection, BASELINE_STREAM, [new], len(stored))
    return BaselineOutcome(True, len(baselines) + 1, len(entries), now)
