"""The event store: append-only, versioned streams with a SHA-256 hash chain, on asyncpg.

* **Idempotent append.** Event ids are deterministic (uuid5 of stream and step key), so an activity
  that runs twice appends nothing twice: the same id with the same content is a no-op that returns
  the original; the same id with different content is an error (:class:`EventIdConflict`).
* **Optimistic concurrency.** ``expected_version`` must match the stream's head; writers to one
  stream are serialised by a row lock on its head in ``event_streams``.
* **Batch append** inserts a whole batch in one statement (``unnest`` of arrays).
* **Global order.** Subscribers follow ``(tx_id, position)`` and read only events whose transaction
  id is below the oldest transaction still open, so an event that commits out of order is never
  skipped. The checkpoint is that pair.
* **Tamper evidence.** ``hash = sha256(prev_hash || canonical JSON of the event)`` per stream,
  computed at append; :func:`verify_chain` recomputes it and names the first bad event.
* **Schema versions.** Each event records its ``schema_version``; upcasters bring old payloads up to
  date on read.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any, NamedTuple

import asyncpg
import orjson

EVENT_NAMESPACE = uuid.UUID("6f1d2c1e-3f0b-4b47-9d55-6b0c8f3b7a10")
GENESIS = bytes(32)
ANY_VERSION = -1  # expected_version: no concurrency check
NO_STREAM = 0  # expected_version: the stream must not exist yet


class EventStoreError(Exception):
    pass


class ConcurrencyError(EventStoreError):
    """The stream moved on since the writer read it."""


class OrderingConflict(ConcurrencyError):
    """This transaction started writing before the stream's last writer: retry it afresh.

    Global order is by transaction id; a transaction that took its id earlier but reached the
    stream later would put a higher version before a lower one. Retrying gives it a new id.
    """


class EventIdConflict(EventStoreError):
    """An event id was reused for different content."""


def event_id(stream_id: str, key: str) -> uuid.UUID:
    """The id of the event that step ``key`` of stream ``stream_id`` produces, however often it runs."""
    return uuid.uuid5(EVENT_NAMESPACE, f"{stream_id}/{key}")


def notice_stream(notice_id: str) -> str:
    return f"notice-{notice_id}"


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME


def canonical(value: Any) -> bytes:
    """Canonical JSON: sorted keys, no whitespace, UTF-8, datetimes as ISO 8601 in UTC."""
    return orjson.dumps(value, default=_default, option=CANONICAL)


def to_json_value(data: Any) -> Any:
    """Plain JSON values, exactly as they come back from the events table."""
    return orjson.loads(canonical(data))


def event_hash(
    prev_hash: bytes,
    *,
    stream_id: str,
    version: int,
    event_id: uuid.UUID,
    event_type: str,
    schema_version: int,
    data_text: bytes,
    occurred_at: datetime,
) -> bytes:
    """sha256(prev_hash || canonical header || "\n" || canonical data), for offline checks too.

    The header is the JSON array [event_id, stream_id, version, event_type, schema_version,
    occurred_at in UTC, ISO 8601] (orjson renders UUIDs and UTC datetimes exactly like str() and
    isoformat(), natively and fast).
    """
    return _digest(
        prev_hash, event_id, stream_id, version, event_type, schema_version, occurred_at, data_text
    )


def _digest(
    prev_hash: bytes,
    event_id: uuid.UUID,
    stream_id: str,
    version: int,
    event_type: str,
    schema_version: int,
    occurred_at: datetime,
    data_text: bytes,
) -> bytes:
    # Positional, for the append loop (keyword calls cost it ~1.5% of a batch).
    when = occurred_at if occurred_at.tzinfo is UTC else occurred_at.astimezone(UTC)
    header = orjson.dumps([event_id, stream_id, version, event_type, schema_version, when])
    return sha256(prev_hash + header + b"\n" + data_text).digest()


@dataclass(frozen=True)
class NewEvent:
    event_id: uuid.UUID
    event_type: str
    data: Any
    occurred_at: datetime
    schema_version: int = 1


class StoredEvent(NamedTuple):
    """An event as stored. A named tuple: immutable, and cheap to build a batch of."""

    position: int
    tx_id: int
    stream_id: str
    version: int
    event_id: uuid.UUID
    event_type: str
    schema_version: int
    data: Any
    occurred_at: datetime
    recorded_at: datetime
    prev_hash: bytes
    hash: bytes

    @property
    def checkpoint(self) -> Checkpoint:
        return Checkpoint(self.tx_id, self.position)

    def as_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "stream_id": self.stream_id,
            "version": self.version,
            "event_id": str(self.event_id),
            "event_type": self.event_type,
            "schema_version": self.schema_version,
            "data": self.data,
            "occurred_at": self.occurred_at.astimezone(UTC).isoformat(),
            "recorded_at": self.recorded_at.astimezone(UTC).isoformat(),
            "prev_hash": self.prev_hash.hex(),
            "hash": self.hash.hex(),
        }


@dataclass(frozen=True, order=True)
class Checkpoint:
    tx_id: int = 0
    position: int = 0


Upcaster = Callable[[Any], Any]


@dataclass
class Upcasters:
    """Upcasters keyed by (event type, from version); each lifts a payload one version."""

    steps: dict[tuple[str, int], Upcaster] = field(default_factory=dict)

    def register(self, event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        def decorator(function: Upcaster) -> Upcaster:
            self.steps[(event_type, from_version)] = function
            return function

        return decorator

    def upcast(self, event_type: str, version: int, data: Any) -> tuple[int, Any]:
        while (event_type, version) in self.steps:
            data = self.steps[(event_type, version)](data)
            version += 1
        return version, data


UPCASTERS = Upcasters()

COLUMNS = (  # asyncpg decodes xid8 as int and json as its text: no casts needed
    "position, tx_id, stream_id, stream_version, event_id, event_type,"
    " schema_version, data, occurred_at, recorded_at, prev_hash, hash"
)


def _stored(row: asyncpg.Record, upcasters: Upcasters | None = UPCASTERS) -> StoredEvent:
    (position, tx_id, stream_id, version, event_id, event_type, schema_version, text, occurred_at,
     recorded_at, prev_hash, digest) = row  # fmt: skip
    data = orjson.loads(text)
    if upcasters is not None and upcasters.steps:
        schema_version, data = upcasters.upcast(event_type, schema_version, data)
    return StoredEvent(
        position,
        tx_id,
        stream_id,
        version,
        event_id,
        event_type,
        schema_version,
        data,
        occurred_at,
        recorded_at,
        prev_hash,
        digest,
    )


async def append_events(
    connection: asyncpg.Connection,
    stream_id: str,
    events: Sequence[NewEvent],
    expected_version: int = ANY_VERSION,
) -> list[StoredEvent]:
    """Append a batch to one stream, atomically; returns the stored events (originals on retry)."""
    if not events:
        return []
    if connection.is_in_transaction():  # the caller's transaction: its retry is the caller's job
        return await _append(connection, stream_id, events, expected_version)
    for attempt in range(5):
        try:
            return await _append(connection, stream_id, events, expected_version)
        except OrderingConflict:
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


class _AlreadyThere(Exception):
    """Some event ids of the batch exist already: take the careful path."""


LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtextextended($1, 7346))"
HEAD_SQL = (
    # Run after LOCK_SQL, as its own statement, so that its snapshot sees the previous writer's
    # commit. The advisory lock takes no transaction id, so this transaction's id (taken here by
    # pg_current_xact_id) is newer than the previous writer's. Positions are drawn here too (a
    # block of POSITION_BLOCK per nextval, migration 003), so the batch can go in with COPY.
    "SELECT coalesce(h.version, 0) AS version, coalesce(h.head_hash, $2) AS head_hash,"
    "  coalesce(pg_current_xact_id() < h.head_tx, false) AS behind,"
    "  pg_current_xact_id() AS tx_id, now() AS recorded_at,"
    "  array(SELECT nextval('events_position_seq') FROM generate_series(1, $3)) AS blocks"
    " FROM (SELECT 1) AS one LEFT JOIN event_streams h ON h.stream_id = $1"
)
UPSERT_HEAD = (  # completed by "VALUES (...)" or a SELECT giving (stream_id, version, head_hash)
    " ON CONFLICT (stream_id) DO UPDATE"
    " SET version = EXCLUDED.version, head_hash = EXCLUDED.head_hash, head_tx = EXCLUDED.head_tx"
)
MOVE_HEAD = (
    "INSERT INTO event_streams (stream_id, version, head_hash, head_tx)"
    " VALUES ({}, {}, {}, pg_current_xact_id())" + UPSERT_HEAD
)
MOVE_HEAD_SQL = MOVE_HEAD.format("$1", "$2", "$3")
POSITION_BLOCK = 1024  # the position sequence's increment: one nextval serves up to this many
COPY_COLUMNS = [
    "position", "stream_id", "stream_version", "event_id", "event_type", "schema_version", "data",
    "occurred_at", "prev_hash", "hash",
]  # fmt: skip


async def _append(
    connection: asyncpg.Connection,
    stream_id: str,
    events: Sequence[NewEvent],
    expected_version: int,
) -> list[StoredEvent]:
    try:
        if connection.is_in_transaction():  # a savepoint inside the caller's transaction
            async with connection.transaction():
                return await _insert(connection, stream_id, events, expected_version, own=False)
        return await _insert(connection, stream_id, events, expected_version, own=True)
    except _AlreadyThere:
        pass
    async with connection.transaction():  # a retry: hand back the originals, append the rest
        existing = await _existing(connection, [event.event_id for event in events])
        for event in events:
            if event.event_id in existing:
                _check_same(existing[event.event_id], stream_id, event)
        fresh = [event for event in events if event.event_id not in existing]
        appended = (
            await _insert(connection, stream_id, fresh, expected_version, own=False)
            if fresh
            else []
        )
    by_id = {**existing, **{stored.event_id: stored for stored in appended}}
    return [by_id[event.event_id] for event in events]


def _literal(text: str) -> str:
    """An SQL string literal (escape-string syntax, right whatever standard_conforming_strings)."""
    return "E'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


async def _insert(
    connection: asyncpg.Connection,
    stream_id: str,
    events: Sequence[NewEvent],
    expected_version: int,
    own: bool,
) -> list[StoredEvent]:
    """Lock the stream, chain the events onto its head, write them and move the head.

    With ``own`` this function runs its own transaction and saves round trips by sending BEGIN
    with the lock, and the head move with COMMIT, as single simple-protocol queries (the values
    in them are rendered as literals: the stream id escaped, the rest numbers and hex).
    """
    lock = f"SELECT pg_advisory_xact_lock(hashtextextended({_literal(stream_id)}, 7346))"
    await connection.execute(f"BEGIN; {lock}" if own else lock)
    try:
        stored, records = await _chain_onto_head(connection, stream_id, events, expected_version)
        await _write(connection, stream_id, records, commit=own)
    except BaseException:
        if own and connection.is_in_transaction():
            await connection.execute("ROLLBACK")
        raise
    return stored


async def _chain_onto_head(
    connection: asyncpg.Connection,
    stream_id: str,
    events: Sequence[NewEvent],
    expected_version: int,
) -> tuple[list[StoredEvent], list[tuple[Any, ...]]]:
    blocks = -(-len(events) // POSITION_BLOCK)
    head = await connection.fetchrow(HEAD_SQL, stream_id, GENESIS, blocks)
    if head["behind"]:
        raise OrderingConflict(f"stream {stream_id} was appended by a later transaction")
    version, prev = head["version"], bytes(head["head_hash"])
    if expected_version != ANY_VERSION and expected_version != version:
        raise ConcurrencyError(
            f"stream {stream_id} is at version {version}, expected {expected_version}"
        )
    tx_id, recorded_at, bases = head["tx_id"], head["recorded_at"], head["blocks"]
    positions = [bases[k // POSITION_BLOCK] + k % POSITION_BLOCK for k in range(len(events))]
    stored, records = [], []
    for event, position in zip(events, positions, strict=True):
        version += 1
        text = canonical(event.data)
        digest = _digest(
            prev, event.event_id, stream_id, version, event.event_type, event.schema_version,
            event.occurred_at, text,
        )  # fmt: skip
        records.append((
            position, stream_id, version, event.event_id, event.event_type, event.schema_version,
            text.decode(), event.occurred_at, prev, digest,
        ))  # fmt: skip
        stored.append(StoredEvent(
            position, tx_id, stream_id, version, event.event_id, event.event_type,
            event.schema_version, orjson.loads(text), event.occurred_at, recorded_at, prev, digest,
        ))  # fmt: skip
        prev = digest
    return stored, records


COPY_FROM = 16  # below this many events one INSERT beats COPY's extra protocol steps
INSERT_SQL = (  # the rows and the head move, in one statement
    f"WITH inserted AS (INSERT INTO events ({', '.join(COPY_COLUMNS)})"
    "  SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::uuid[], $5::text[],"
    "  $6::int[], $7::json[], $8::timestamptz[], $9::bytea[], $10::bytea[]) RETURNING 1)"
    " INSERT INTO event_streams (stream_id, version, head_hash, head_tx)"
    " SELECT $11, $12, $13, pg_current_xact_id() FROM (SELECT count(*) FROM inserted) AS done"
    + UPSERT_HEAD
)


async def _write(
    connection: asyncpg.Connection, stream_id: str, records: list[tuple[Any, ...]], commit: bool
) -> None:
    """Write prepared rows and move the stream head (and commit, if asked). tx_id and
    recorded_at take their defaults, which are the values HEAD_SQL read in this transaction."""
    version, head_hash = records[-1][2], records[-1][9]
    try:
        if len(records) >= COPY_FROM:
            await connection.copy_records_to_table("events", records=records, columns=COPY_COLUMNS)
            if commit:
                move = MOVE_HEAD.format(
                    _literal(stream_id), int(version), f"decode('{head_hash.hex()}', 'hex')"
                )
                await connection.execute(f"{move}; COMMIT")
                return
            await connection.execute(MOVE_HEAD_SQL, stream_id, version, head_hash)
        else:
            columns = [list(column) for column in zip(*records, strict=True)]
            await connection.execute(INSERT_SQL, *columns, stream_id, version, head_hash)
        if commit:
            await connection.execute("COMMIT")
    except asyncpg.UniqueViolationError as error:
        if error.constraint_name == "events_event_id_key":
            raise _AlreadyThere from None
        raise


async def _existing(
    connection: asyncpg.Connection, ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, StoredEvent]:
    rows = await connection.fetch(
        f"SELECT {COLUMNS} FROM events WHERE event_id = ANY($1::uuid[])", list(ids)
    )
    return {row["event_id"]: _stored(row, upcasters=None) for row in rows}


def _check_same(stored: StoredEvent, stream_id: str, event: NewEvent) -> None:
    same = (
        stored.stream_id == stream_id
        and stored.event_type == event.event_type
        and canonical(stored.data) == canonical(to_json_value(event.data))
    )
    if not same:
        raise EventIdConflict(
            f"event {event.event_id} already exists in {stored.stream_id} with other content"
        )


async def append(
    connection: asyncpg.Connection | asyncpg.Pool,
    stream_id: str,
    key: str,
    event_type: str,
    data: dict[str, Any],
    occurred_at: datetime,
) -> StoredEvent:
    """Append the one event of step ``key`` (idempotent); returns it as stored."""
    event = NewEvent(event_id(stream_id, key), event_type, data, occurred_at)
    if isinstance(connection, asyncpg.Pool):
        async with connection.acquire() as acquired:
            return (await append_events(acquired, stream_id, [event]))[0]
    return (await append_events(connection, stream_id, [event]))[0]


async def read_stream(
    connection: asyncpg.Connection | asyncpg.Pool, stream_id: str, upcast: bool = True
) -> list[StoredEvent]:
    rows = await connection.fetch(
        f"SELECT {COLUMNS} FROM events WHERE stream_id = $1 ORDER BY stream_version", stream_id
    )
    return [_stored(row, UPCASTERS if upcast else None) for row in rows]


async def read_all(
    connection: asyncpg.Connection | asyncpg.Pool, after: Checkpoint, limit: int = 5000
) -> list[StoredEvent]:
    """The next events in global order after ``after``, never past the oldest open transaction."""
    rows = await connection.fetch(
        f"SELECT {COLUMNS} FROM events"
        " WHERE (tx_id, position) > ($1::text::xid8, $2)"  # (xid8 has no binary encoder)
        "   AND tx_id < pg_snapshot_xmin(pg_current_snapshot())"
        " ORDER BY tx_id, position LIMIT $3",
        str(after.tx_id),
        after.position,
        limit,
    )
    return [_stored(row) for row in rows]


@dataclass(frozen=True)
class ChainProblem:
    stream_id: str
    version: int
    event_id: str
    problem: str

    def __str__(self) -> str:
        return f"{self.stream_id} version {self.version} (event {self.event_id}): {self.problem}"


def verify_chain(events: Iterable[dict[str, Any]]) -> ChainProblem | None:
    """Check per-stream versions and hashes of events in stored form; the first problem, or None.

    Takes the JSON form (``StoredEvent.as_json``) so that packs are checked offline the same way.
    """
    heads: dict[str, tuple[int, bytes]] = {}
    for event in events:
        stream_id = event["stream_id"]
        version, prev = heads.get(stream_id, (0, GENESIS))
        here = ChainProblem(stream_id, event["version"], event["event_id"], "")
        if event["version"] != version + 1:
            return _problem(
                here, f"expected version {version + 1}: an event is missing or reordered"
            )
        if bytes.fromhex(event["prev_hash"]) != prev:
            return _problem(here, "previous-hash link is broken")
        recomputed = event_hash(
            prev,
            stream_id=stream_id,
            version=event["version"],
            event_id=uuid.UUID(event["event_id"]),
            event_type=event["event_type"],
            schema_version=event["schema_version"],
            data_text=canonical(event["data"]),
            occurred_at=datetime.fromisoformat(event["occurred_at"]),
        )
        if recomputed.hex() != event["hash"]:
            return _problem(here, "content does not match its hash (altered)")
        heads[stream_id] = (event["version"], recomputed)
    return None


def _problem(where: ChainProblem, problem: str) -> ChainProblem:
    return ChainProblem(where.stream_id, where.version, where.event_id, problem)


async def verify_stream(
    connection: asyncpg.Connection | asyncpg.Pool, stream_id: str
) -> ChainProblem | None:
    """Verify one stream in the database, against the stored head too (detects a truncated tail)."""
    events = [event.as_json() for event in await read_stream(connection, stream_id, upcast=False)]
    problem = verify_chain(events)
    if problem:
        return problem
    head = await connection.fetchrow(
        "SELECT version, head_hash FROM event_streams WHERE stream_id = $1", stream_id
    )
    last_version = events[-1]["version"] if events else 0
    if head is not None and head["version"] != last_version:
        return ChainProblem(
            stream_id,
            head["version"],
            "-",
            f"stream head says version {head['version']}, events end at {last_version}",
        )
    return None
