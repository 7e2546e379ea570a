"""The event store: append-only, versioned streams with a SHA-256 hash chain, on asyncpg.

* **Idempotent append.** Event ids are deterministic (uuid5 of stream and step key), so an activity
  that runs twice appends nothing twice: the same id with the same content is a no-op that returns
  the original; the same id with different content is an error (:class:`EventIdConflict`). The
  ids already stored are read with the head, under the stream's lock (an id belongs to one
  stream), and :func:`append_new` says which events a call appended, for a projection in the same
  transaction.
* **Optimistic concurrency.** ``expected_version`` must match the stream's head; writers to one
  stream are serialised by a transaction-scoped advisory lock on the stream.
* **Batch append** writes a batch with ``COPY`` (a few events: one ``INSERT`` of ``unnest``
  arrays that also moves the head).
* **Global order.** Subscribers follow ``(tx_id, position)`` and read only events whose transaction
  id is below the oldest transaction still open, so an event that commits out of order is never
  skipped. The checkpoint is that pair.
* **Tamper evidence.** ``hash = sha256(prev_hash || canonical JSON of the event)`` per stream,
  computed at append; :func:`verify_chain` recomputes it and names the first bad event. The chain
  alone is unkeyed: whoever can rewrite rows can recompute it. So each append also **signs the
  stream's head** (stream id, version, head hash; :func:`head_message`) with Ed25519 under a key
  derived from the signing key (``keyring.current("signing", "heads")``), which the database never
  sees; ``event_streams`` keeps the signature and the public key's id (migration 015).
  :func:`verify_stream` checks chain, head and signature (current or previous signing keys): a
  stream rewritten by a database owner, hashes and head recomputed, fails with "head signature
  does not match". An append signs the new head only when the head it builds on is vouched for
  (a new stream, or a signature that verifies): otherwise the new head stays unsigned and an error
  is logged, so a rewrite is never laundered by the next append. A head without a signature
  (appended before heads were signed, or onto one that did not verify) is reported by
  :func:`verify_stream` as unsigned, which callers treat as a failure unless told to accept it;
  :func:`sign_unsigned_heads` (``noticeflow evidence sign-heads``, run once by a person after the
  upgrade, never automatically) checks such streams and signs their heads.
* **Typed events.** Production code appends the models of :mod:`noticeflow.domain.events`
  (:func:`append`, :meth:`NewEvent.of`: type and schema version from the model's class, ``data``
  its stored form) and reads them back with :meth:`StoredEvent.typed`. The store itself stays
  generic: :class:`NewEvent` and :class:`StoredEvent` carry the type and the JSON ``data``.
* **Schema versions.** Each event records its ``schema_version``; the upcasters of
  :mod:`noticeflow.domain.events` (:data:`UPCASTERS`) bring old payloads up to date on read.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any, NamedTuple

import asyncpg
import orjson
import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from noticeflow import contracts, keyring

# The upcasters live with the models; this store applies them on read (UPCASTERS re-exported).
from noticeflow.domain.events import UPCASTERS as UPCASTERS
from noticeflow.domain.events import Event, Upcasters, parse

_log = structlog.get_logger(__name__)

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
    return contracts.notice_stream(notice_id)


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
    """An event to append, in the stored form (:meth:`of` builds one from a model)."""

    event_id: uuid.UUID
    event_type: str
    data: Any
    occurred_at: datetime
    schema_version: int = 1

    @classmethod
    def of(cls, stream_id: str, key: str, event: Event, occurred_at: datetime) -> NewEvent:
        """The event of step ``key`` of ``stream_id``: type and schema version from the model's
        class, ``data`` its stored form."""
        return cls(event_id(stream_id, key), event.type, event.data(), occurred_at, event.version)


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

    def typed(self) -> Event:
        """The event as its model (upcast first, if read without upcasting); raises
        ``noticeflow.domain.events.EventError`` for data no model accepts."""
        return parse(self.event_type, self.schema_version, self.data)

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


COLUMNS = (  # asyncpg decodes xid8 as int and json as its text: no casts needed
    "position, tx_id, stream_id, stream_version, event_id, event_type,"
    " schema_version, data, occurred_at, recorded_at, prev_hash, hash"
)


def _stored(row: asyncpg.Record, upcasters: Upcasters | None = UPCASTERS) -> StoredEvent:
    (position, tx_id, stream_id, version, event_id, event_type, schema_version, text, occurred_at,
     recorded_at, prev_hash, digest) = row[:12] if len(row) > 12 else row  # fmt: skip
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
    return (await append_new(connection, stream_id, events, expected_version)).stored


class Appended(NamedTuple):
    """What an append stored: every event of the batch as stored (an original where its id
    existed already), and those this call appended (for a projection in the same transaction)."""

    stored: list[StoredEvent]
    fresh: list[StoredEvent]


async def append_new(
    connection: asyncpg.Connection,
    stream_id: str,
    events: Sequence[NewEvent],
    expected_version: int = ANY_VERSION,
) -> Appended:
    """:func:`append_events`, also telling which events this call appended."""
    if not events:
        return Appended([], [])
    if len({event.event_id for event in events}) < len(events):
        raise EventIdConflict(f"an event id is given twice in one batch to {stream_id}")
    if connection.is_in_transaction():  # the caller's transaction: its retry is the caller's job
        return await _insert(connection, stream_id, events, expected_version, own=False)
    for attempt in range(5):
        try:
            return await _insert(connection, stream_id, events, expected_version, own=True)
        except OrderingConflict:
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


def _lock_sql(stream_id: str = "$1") -> str:
    """The stream's advisory lock, which every writer of the stream takes first (``stream_id``:
    a parameter, or an escaped literal)."""
    return f"SELECT pg_advisory_xact_lock(hashtextextended({stream_id}, 7346))"


LOCK_SQL = _lock_sql()
HEAD_SQL = (
    # Run after LOCK_SQL, as its own statement, so that its snapshot sees the previous writer's
    # commit. The advisory lock takes no transaction id, so this transaction's id (taken here by
    # pg_current_xact_id) is newer than the previous writer's. Positions are drawn here too (a
    # block of POSITION_BLOCK per nextval, migration 003), so the batch can go in with COPY.
    # The batch's ids already stored come back too: an id is derived from its stream, so under
    # the stream's lock nobody else can store one meanwhile (a retry needs no savepoint).
    "SELECT coalesce(h.version, 0) AS version, coalesce(h.head_hash, $2) AS head_hash,"
    "  coalesce(pg_current_xact_id() < h.head_tx, false) AS behind,"
    "  pg_current_xact_id() AS tx_id, now() AS recorded_at,"
    "  array(SELECT nextval('events_position_seq') FROM generate_series(1, $3)) AS blocks,"
    "  h.head_signature, h.head_key_id,"
    "  array(SELECT event_id FROM events WHERE event_id = ANY($4::uuid[])) AS existing"
    " FROM (SELECT 1) AS one LEFT JOIN event_streams h ON h.stream_id = $1"
)
UPSERT_HEAD = (  # completed by "VALUES (...)" or a SELECT giving the head's columns
    " ON CONFLICT (stream_id) DO UPDATE"
    " SET version = EXCLUDED.version, head_hash = EXCLUDED.head_hash, head_tx = EXCLUDED.head_tx,"
    " head_signature = EXCLUDED.head_signature, head_key_id = EXCLUDED.head_key_id"
)
HEAD_COLUMNS = "stream_id, version, head_hash, head_tx, head_signature, head_key_id"
MOVE_HEAD = (
    f"INSERT INTO event_streams ({HEAD_COLUMNS})"
    " VALUES ({}, {}, {}, pg_current_xact_id(), {}, {})" + UPSERT_HEAD
)
MOVE_HEAD_SQL = MOVE_HEAD.format("$1", "$2", "$3", "$4", "$5")
POSITION_BLOCK = 1024  # the position sequence's increment: one nextval serves up to this many
COPY_COLUMNS = [
    "position", "stream_id", "stream_version", "event_id", "event_type", "schema_version", "data",
    "occurred_at", "prev_hash", "hash",
]  # fmt: skip


def _literal(text: str) -> str:
    """An SQL string literal (escape-string syntax, right whatever standard_conforming_strings)."""
    return "E'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


async def _insert(
    connection: asyncpg.Connection,
    stream_id: str,
    events: Sequence[NewEvent],
    expected_version: int,
    own: bool,
) -> Appended:
    """Lock the stream, chain the events not stored yet onto its head, write them and move the
    head; an event whose id is stored already comes back as the original (the same content, or
    :class:`EventIdConflict`).

    With ``own`` this function runs its own transaction and saves round trips by sending BEGIN
    with the lock, and the head move with COMMIT, as single simple-protocol queries (the values
    in them are rendered as literals: the stream id escaped, the rest numbers and hex).
    """
    lock = _lock_sql(_literal(stream_id))
    await connection.execute(f"BEGIN; {lock}" if own else lock)
    try:
        fresh, records, vouched, existing = await _chain_onto_head(
            connection, stream_id, events, expected_version
        )
        if records:
            await _write(connection, stream_id, records, commit=own, sign=vouched)
        elif own:
            await connection.execute("COMMIT")
    except BaseException:
        if own and connection.is_in_transaction():
            await connection.execute("ROLLBACK")
        raise
    if not existing:
        return Appended(fresh, fresh)
    by_id = {**existing, **{event.event_id: event for event in fresh}}
    return Appended([by_id[event.event_id] for event in events], fresh)


async def _chain_onto_head(
    connection: asyncpg.Connection,
    stream_id: str,
    events: Sequence[NewEvent],
    expected_version: int,
) -> tuple[list[StoredEvent], list[tuple[Any, ...]], bool, dict[uuid.UUID, StoredEvent]]:
    """The events to write as stored and as rows, whether the new head may be signed, and the
    originals of the batch's events stored already. The head is signed only when the head it
    builds on is vouched for (a new stream, or a head whose signature verifies): a new signature
    over a head nobody vouched for would launder whatever was done to the stream before it."""
    blocks = -(-len(events) // POSITION_BLOCK)
    head = await connection.fetchrow(
        HEAD_SQL, stream_id, GENESIS, blocks, [event.event_id for event in events]
    )
    existing: dict[uuid.UUID, StoredEvent] = {}
    if head["existing"]:  # a retry: hand back the originals, append the rest
        existing = await _existing(connection, head["existing"])
        for event in events:
            if event.event_id in existing:
                _check_same(existing[event.event_id], stream_id, event)
        events = [event for event in events if event.event_id not in existing]
        if not events:
            return [], [], False, existing
    if head["behind"]:
        raise OrderingConflict(f"stream {stream_id} was appended by a later transaction")
    version, prev = head["version"], bytes(head["head_hash"])
    vouched = version == 0 or _head_vouched(stream_id, version, prev, head)
    if not vouched and head["head_signature"] is None and await _legacy(connection, stream_id):
        vouched = True  # the first append since the upgrade vouches for an old stream, once
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
    return stored, records, vouched, existing


def _head_vouched(stream_id: str, version: int, head_hash: bytes, row: asyncpg.Record) -> bool:
    signature, key_id = row["head_signature"], row["head_key_id"]
    if signature is None:
        return False  # an old stream (see _legacy), or its signature was removed
    public = signing_public_keys().get(str(key_id))
    if public is not None and verify_signature(
        public, bytes(signature), head_message(stream_id, version, head_hash)
    ):
        return True
    _log.error(
        "stream head signature does not verify: the new head is left unsigned",
        stream_id=stream_id,
        key_id=key_id,
    )
    return False


SIGNING_MIGRATION = 15  # migration 015 began signed heads

LEGACY_SQL = (
    # A stream whose head event was recorded before heads began to be signed (migration 015): it
    # had no signature to lose. A head event recorded since always got a signed head at append,
    # so an unsigned one there means the signature was removed or the chain changed.
    "SELECT coalesce(e.recorded_at < m.applied_at, false) FROM event_streams h"
    " JOIN events e ON e.stream_id = h.stream_id AND e.stream_version = h.version"
    " JOIN schema_migrations m ON m.version = $2"
    " WHERE h.stream_id = $1 AND h.head_signature IS NULL"
)


async def _legacy(connection: asyncpg.Connection | asyncpg.Pool, stream_id: str) -> bool:
    legacy = bool(await connection.fetchval(LEGACY_SQL, stream_id, SIGNING_MIGRATION))
    if not legacy:
        _log.error(
            "stream head not signed, though appended since heads are signed: a signature was"
            " removed or the stream changed; the new head is left unsigned (evidence verify"
            " names it)",
            stream_id=stream_id,
        )
    return legacy


COPY_FROM = 16  # below this many events one INSERT beats COPY's extra protocol steps
INSERT_SQL = (  # the rows and the head move, in one statement
    f"WITH inserted AS (INSERT INTO events ({', '.join(COPY_COLUMNS)})"
    "  SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::uuid[], $5::text[],"
    "  $6::int[], $7::json[], $8::timestamptz[], $9::bytea[], $10::bytea[]) RETURNING 1)"
    f" INSERT INTO event_streams ({HEAD_COLUMNS})"
    " SELECT $11, $12, $13, pg_current_xact_id(), $14, $15"
    " FROM (SELECT count(*) FROM inserted) AS done" + UPSERT_HEAD
)


async def _write(
    connection: asyncpg.Connection,
    stream_id: str,
    records: list[tuple[Any, ...]],
    commit: bool,
    sign: bool = True,
) -> None:
    """Write prepared rows and move the stream head (and commit, if asked), signing the new head
    when ``sign``. tx_id and recorded_at take their defaults, which are the values HEAD_SQL read in
    this transaction."""
    version, head_hash = records[-1][2], records[-1][9]
    signature, key_id = sign_head(stream_id, version, head_hash) if sign else (None, None)
    try:
        if len(records) >= COPY_FROM:
            await connection.copy_records_to_table("events", records=records, columns=COPY_COLUMNS)
            if commit:
                move = MOVE_HEAD.format(
                    _literal(stream_id),
                    int(version),
                    f"decode('{head_hash.hex()}', 'hex')",
                    f"decode('{signature.hex()}', 'hex')" if signature else "NULL",
                    _literal(key_id) if key_id else "NULL",
                )
                await connection.execute(f"{move}; COMMIT")
                return
            await connection.execute(
                MOVE_HEAD_SQL, stream_id, version, head_hash, signature, key_id
            )
        else:
            columns = [list(column) for column in zip(*records, strict=True)]
            await connection.execute(
                INSERT_SQL, *columns, stream_id, version, head_hash, signature, key_id
            )
        if commit:
            await connection.execute("COMMIT")
    except asyncpg.UniqueViolationError as error:
        if error.constraint_name == "events_event_id_key":  # twice in one batch
            raise EventIdConflict(
                f"an event id is given twice in one batch to {stream_id}"
            ) from None
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
    event: Event,
    occurred_at: datetime,
) -> StoredEvent:
    """Append the one event of step ``key`` (idempotent); returns it as stored."""
    new = NewEvent.of(stream_id, key, event, occurred_at)
    if isinstance(connection, asyncpg.Pool):
        async with connection.acquire() as acquired:
            return (await append_events(acquired, stream_id, [new]))[0]
    return (await append_events(connection, stream_id, [new]))[0]


async def read_stream(
    connection: asyncpg.Connection | asyncpg.Pool, stream_id: str, upcast: bool = True
) -> list[StoredEvent]:
    rows = await connection.fetch(
        f"SELECT {COLUMNS} FROM events WHERE stream_id = $1 ORDER BY stream_version", stream_id
    )
    return [_stored(row, UPCASTERS if upcast else None) for row in rows]


async def read_committed(
    connection: asyncpg.Connection | asyncpg.Pool,
    after: Checkpoint,
    event_types: Sequence[str],
    limit: int = 5000,
    max_bytes: int | None = None,
) -> list[StoredEvent]:
    """The next committed events of these types in global order after ``after``, past the oldest
    open transaction too (for a reader whose writers wait for it, such as a rebuild under lock);
    with ``max_bytes``, no more JSON than that beyond the first (an empty page: none left)."""
    query = (
        f"SELECT {COLUMNS} FROM events WHERE (tx_id, position) > ($1::text::xid8, $2)"
        " AND event_type = ANY($3::text[]) ORDER BY tx_id, position LIMIT $4"
    )
    if max_bytes is not None:
        sized = query.replace(
            f"SELECT {COLUMNS} FROM",
            f"SELECT {COLUMNS}, octet_length(data::text) AS size, sum(octet_length(data::text))"
            " OVER (ORDER BY tx_id, position) AS running FROM",
        )
        query = (
            f"SELECT {COLUMNS} FROM ({sized}) page WHERE running - size <= $5"
            " ORDER BY tx_id, position"
        )
    rows = await connection.fetch(
        query,
        str(after.tx_id),
        after.position,
        list(event_types),
        limit,
        *([max_bytes] if max_bytes is not None else []),
    )
    return [_stored(row) for row in rows]


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


async def read_page(
    connection: asyncpg.Connection | asyncpg.Pool, after: Checkpoint, limit: int, max_bytes: int
) -> tuple[list[StoredEvent], bool]:
    """:func:`read_all`, also bounded in size: the next events after ``after`` (at least one),
    at most ``limit`` of them and no more than ``max_bytes`` of JSON beyond the first; and
    whether more may follow (a page cut short by either bound). A reader that keeps a page in
    memory stays bounded whatever the events (an audience frozen in parts is 100 events of
    ~1.4 MB each at a million customers)."""
    rows = await connection.fetch(
        f"SELECT {COLUMNS}, available FROM (SELECT {COLUMNS}, count(*) OVER () AS available,"
        "   sum(octet_length(data::text)) OVER (ORDER BY tx_id, position) AS running,"
        "   octet_length(data::text) AS size"
        "  FROM events WHERE (tx_id, position) > ($1::text::xid8, $2)"
        "   AND tx_id < pg_snapshot_xmin(pg_current_snapshot())"
        "  ORDER BY tx_id, position LIMIT $3) page"
        " WHERE running - size <= $4 ORDER BY tx_id, position",
        str(after.tx_id),
        after.position,
        limit,
        max_bytes,
    )
    more = bool(rows) and (len(rows) == limit or len(rows) < rows[0]["available"])
    return [_stored(row) for row in rows], more


async def read_of_types(
    connection: asyncpg.Connection | asyncpg.Pool,
    after: Checkpoint,
    limit: int,
    types: Sequence[str],
) -> tuple[list[StoredEvent], Checkpoint | None, int]:
    """Among the next ``limit`` events after ``after``, those of ``types`` (with their data), the
    checkpoint of the last of the ``limit`` (None when there are none) and how many they were.

    A follower that wants a few types moves past all the others without reading their data: a
    mailing records one delivery event per customer, and an audience part is 1.4 MB. The two
    statements see the same events: the page stops below the oldest transaction still open, and
    no transaction can commit an event into a range that every transaction has left."""
    page = await connection.fetch(
        "SELECT tx_id, position FROM events"
        " WHERE (tx_id, position) > ($1::text::xid8, $2)"
        "   AND tx_id < pg_snapshot_xmin(pg_current_snapshot())"
        " ORDER BY tx_id, position LIMIT $3",
        str(after.tx_id),
        after.position,
        limit,
    )
    if not page:
        return [], None, 0
    last = Checkpoint(page[-1]["tx_id"], page[-1]["position"])
    rows = await connection.fetch(
        f"SELECT {COLUMNS} FROM events"
        " WHERE (tx_id, position) > ($1::text::xid8, $2)"
        "   AND (tx_id, position) <= ($3::text::xid8, $4) AND event_type = ANY($5::text[])"
        " ORDER BY tx_id, position",
        str(after.tx_id),
        after.position,
        str(last.tx_id),
        last.position,
        list(types),
    )
    return [_stored(row) for row in rows], last, len(page)


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
    """Verify one stream in the database: its chain, its stored head (detects a truncated tail)
    and the head's signature. An unsigned head is not a problem here: see :func:`stream_head`."""
    events = [event.as_json() for event in await read_stream(connection, stream_id, upcast=False)]
    problem = verify_chain(events)
    if problem:
        return problem
    head = await stream_head(connection, stream_id)
    if head is None:
        if events:
            return ChainProblem(stream_id, events[-1]["version"], "-", "the stream has no head")
        return None
    last_version = events[-1]["version"] if events else 0
    last_hash = events[-1]["hash"] if events else GENESIS.hex()
    if head.version != last_version:
        return ChainProblem(
            stream_id,
            head.version,
            "-",
            f"stream head says version {head.version}, events end at {last_version}",
        )
    if head.head_hash.hex() != last_hash:
        return ChainProblem(
            stream_id, head.version, "-", "stream head hash is not the last event's hash"
        )
    problem_text = head_signature_problem(head.as_json(), signing_public_keys())
    if problem_text:
        return ChainProblem(stream_id, head.version, "-", problem_text)
    return None


# --- signed heads -------------------------------------------------------------------------------

HEAD_CONTEXT = "noticeflow/stream-head/v1"
HEAD_KEY_USE = "heads"  # keyring.current("signing", HEAD_KEY_USE) is the Ed25519 seed


class Head(NamedTuple):
    stream_id: str
    version: int
    head_hash: bytes
    signature: bytes | None
    key_id: str | None

    def as_json(self) -> dict[str, Any]:
        """The head as a pack's manifest carries it (hex), public key added by the exporter."""
        return {
            "stream_id": self.stream_id,
            "version": self.version,
            "hash": self.head_hash.hex(),
            "signature": self.signature.hex() if self.signature else None,
            "key_id": self.key_id,
        }


def head_message(stream_id: str, version: int, head_hash: bytes) -> bytes:
    """The bytes a head signature covers: the canonical JSON array
    ``["noticeflow/stream-head/v1", stream id, version, head hash in hex]``."""
    return canonical([HEAD_CONTEXT, stream_id, version, head_hash.hex()])


def public_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def signing_keys(use: str) -> list[tuple[str, Ed25519PrivateKey]]:
    """(key id, Ed25519 key) for ``use`` from the installed signing keys, the current first;
    empty when this process has no signing key."""
    if not keyring.has("signing"):
        return []
    ring = keyring.installed()
    cached = _KEYS.get(use)
    if cached is None or cached[0] is not ring:
        keys = []
        for seed in ring.material("signing", use):
            key = Ed25519PrivateKey.from_private_bytes(seed)
            keys.append((keyring.Keyring.key_id(public_bytes(key)), key))
        cached = _KEYS[use] = (ring, keys)
    return cached[1]


_KEYS: dict[str, tuple[keyring.Keyring, list[tuple[str, Ed25519PrivateKey]]]] = {}


def signing_public_keys(use: str = HEAD_KEY_USE) -> dict[str, bytes]:
    """Key id -> raw Ed25519 public key, for the current and every previous signing key."""
    return {key_id: public_bytes(key) for key_id, key in signing_keys(use)}


def sign_head(stream_id: str, version: int, head_hash: bytes) -> tuple[bytes | None, str | None]:
    """(signature, key id) of a head under the current key; (None, None) without a key."""
    keys = signing_keys(HEAD_KEY_USE)
    if not keys:
        return None, None
    key_id, key = keys[0]
    return key.sign(head_message(stream_id, version, head_hash)), key_id


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def head_signature_problem(head: dict[str, Any], public_keys: dict[str, bytes]) -> str | None:
    """What is wrong with a head's signature (JSON form, :meth:`Head.as_json`), or None.
    None for an unsigned head too: whether that is acceptable is the caller's decision."""
    if not head.get("signature"):
        return None
    key_id = head.get("key_id")
    if not public_keys:
        return "cannot check the head signature: no signing key (NOTICEFLOW_SIGNING_KEY)"
    public = public_keys.get(str(key_id))
    if public is None:
        return (
            f"head signed by an unknown key (key id {key_id}): neither the current nor a"
            " previous signing key (NOTICEFLOW_PREVIOUS_SIGNING_KEYS)"
        )
    message = head_message(head["stream_id"], int(head["version"]), bytes.fromhex(head["hash"]))
    try:
        signature = bytes.fromhex(head["signature"])
    except ValueError:
        signature = b""
    if not verify_signature(public, signature, message):
        return "head signature does not match (the stream was changed after it was signed)"
    return None


async def stream_head(connection: asyncpg.Connection | asyncpg.Pool, stream_id: str) -> Head | None:
    row = await connection.fetchrow(
        "SELECT stream_id, version, head_hash, head_signature, head_key_id FROM event_streams"
        " WHERE stream_id = $1",
        stream_id,
    )
    if row is None:
        return None
    signature = row["head_signature"]
    return Head(
        row["stream_id"],
        row["version"],
        bytes(row["head_hash"]),
        bytes(signature) if signature is not None else None,
        row["head_key_id"],
    )


async def sign_unsigned_heads(pool: asyncpg.Pool) -> tuple[int, list[ChainProblem]]:
    """Sign the head of every old stream that has none (its head event recorded before heads
    began to be signed, see :func:`_legacy`), each only after its chain and head check out;
    returns (heads signed, streams refused). A stream appended since and unsigned is refused: its
    signature was removed, or the stream changed.

    Run once after upgrading, by a person (``noticeflow evidence sign-heads``), never
    automatically: it vouches for those streams as they are now, so a rewrite before it is not
    caught, and run by a process at every start it would re-sign a stream whose signature an
    attacker removed.
    """
    if not signing_keys(HEAD_KEY_USE):
        raise RuntimeError("no signing key installed: cannot sign stream heads")
    streams = [
        row["stream_id"]
        for row in await pool.fetch(
            "SELECT stream_id FROM event_streams WHERE head_signature IS NULL ORDER BY stream_id"
        )
    ]
    signed, refused = 0, []
    for stream_id in streams:
        async with pool.acquire() as connection, connection.transaction():
            await connection.execute(LOCK_SQL, stream_id)
            problem = await verify_stream(connection, stream_id)
            head = await stream_head(connection, stream_id)
            if problem is None and head is not None and not await _legacy(connection, stream_id):
                problem = ChainProblem(
                    stream_id, head.version, "-",
                    "appended since heads are signed, yet unsigned: a signature was removed or"
                    " the stream changed (never signed by this command)",
                )  # fmt: skip
            if problem or head is None:
                if problem:
                    refused.append(problem)
                continue
            if head.signature is not None:
                continue
            signature, key_id = sign_head(stream_id, head.version, head.head_hash)
            await connection.execute(
                "UPDATE event_streams SET head_signature = $2, head_key_id = $3"
                " WHERE stream_id = $1 AND head_signature IS NULL",
                stream_id,
                signature,
                key_id,
            )
            signed += 1
    return signed, refused
