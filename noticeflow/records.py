"""The records a decision reads, projected from the events: the events are the truth.

Every outcome the workflow and the intake decide on — a customer's delivery and deadline, its
cases, its opt-in, its exclusion, whether the sub-processor is on, its verdict, and the notice's
phase and dates — is written here, by one handler per event type, and nowhere else (but for
erasure, which blanks an erased customer's sealed copies in place, exactly as a rebuild without
the customer's key writes them: ``[erased]``):

* **at once**, in the transaction that appends the event (:func:`record`: append, then project the
  events this transaction added), so the next judgement reads what the last one decided;
* **again from zero** by :func:`rebuild` (``noticeflow projections rebuild``), which resets the
  projected columns and replays every event in global order. A rebuilt record equals the live one,
  so a record altered behind the product's back is repaired from the events.

What is not projected, and why: the frozen audience's terms and sealed names (``recipients``'
identity columns, ``recipient_contacts``) and the customers' personal data and keys are inputs;
the delivery ledger (``deliveries``) and ``recipients.activation_mail_due`` are the mailer's
write-ahead outbox; a notice's spec, text and author are what its author wrote. A verdict that
settles nothing yet (wait for the deadline, held) is not an event and is not recorded.

Sealed fields are sealed again for their record's place (``objections.reason``, not
``objection_received.reason``) with the customer's key; sealing is deterministic, so a rebuild
writes the same bytes. An erased customer's come out ``[erased]``, as erasure left them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from noticeflow import eventstore as es
from noticeflow.contracts import notice_id_of
from noticeflow.crypto import ERASED, CustomerKey, Field, load_keys
from noticeflow.domain.errors import InputError
from noticeflow.domain.events import Event
from noticeflow.domain.rules import Verdict

RECORDS_LOCK = 7_346_003  # one rebuild at a time
VERDICTS = frozenset(verdict.value for verdict in Verdict)

# The projected columns and the value each starts from before the first event.
RECIPIENT_RESET = (
    "delivery = 'pending', delivered_at = NULL, deadline = NULL, opted_in = false,"
    " opted_in_at = NULL, deemed_accepted_at = NULL, activated = false, activated_at = NULL,"
    " verdict = NULL, settled = false, excluded_at = NULL, excluded_by = NULL,"
    " excluded_reason = NULL"
)
NOTICE_RESET = (
    "phase = 'draft', effective_at = coalesce((spec->>'effective_at')::timestamptz, effective_at),"
    " window_closes_at = NULL, approved_by = NULL"
)


def objection_ref(key: CustomerKey, reason: str) -> str:
    """The key an objection's words are recognised by (a repeat of an open case is a duplicate):
    a keyed id of the case-folded words under the customer's ``ids`` subkey."""
    return key.ident("objection-content", reason.casefold())


def _at(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@dataclass
class _Run:
    """A run of consecutive events of one type: projected with one statement per event, sent
    together (asyncpg pipelines ``executemany``)."""

    event_type: str
    notice_id: str
    events: list[es.StoredEvent]


Keys = Mapping[str, CustomerKey]
ArgsOf = Callable[[str, es.StoredEvent, Keys], tuple[Any, ...] | None]


def _reseal(keys: Keys, customer_id: str, source: str, target: str, value: Any) -> str:
    """An event's sealed text, sealed for its record's place ([erased] without the key)."""
    if value is None:
        return ""
    key = keys.get(customer_id)
    if key is None:
        return ERASED
    text = key.unseal(source, str(value))
    return ERASED if text == ERASED else key.seal(target, text)


# --- the handlers: (SQL, the arguments of one event) ----------------------------------------------

_DELIVERY = (
    "UPDATE recipients SET delivery = $3, delivered_at = $4, deadline = $5"
    " WHERE notice_id = $1 AND customer_id = $2 AND delivery <> 'delivered'"
)


# A whole batch of delivery events (a send records hundreds at once) in one statement.
_DELIVERIES = (
    "UPDATE recipients r SET delivery = u.delivery, delivered_at = u.delivered_at,"
    " deadline = u.deadline FROM unnest($2::text[], $3::text[], $4::timestamptz[],"
    " $5::timestamptz[]) AS u(customer_id, delivery, delivered_at, deadline)"
    # (customer_id = ANY: the primary key finds the batch's rows, however large the notice)
    " WHERE r.notice_id = $1 AND r.customer_id = ANY($2::text[])"
    " AND r.customer_id = u.customer_id AND r.delivery <> 'delivered'"
)


async def _deliveries(connection: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Many delivery events of one notice; a customer named twice in the batch (a resend right
    after the first mail) goes one event at a time, in order, like the live append did."""
    customers = [row[1] for row in rows]
    if len(set(customers)) < len(customers):
        await connection.executemany(_DELIVERY, rows)
        return
    columns = [list(column) for column in zip(*rows, strict=True)]
    await connection.execute(_DELIVERIES, rows[0][0], *columns[1:])


def _delivery(notice_id: str, e: es.StoredEvent, keys: Keys) -> tuple[Any, ...]:
    delivered = e.event_type == "notice_delivered"
    return (
        notice_id,
        e.data["customer_id"],
        "delivered" if delivered else "undelivered",
        _at(e.data.get("delivered_at")),
        _at(e.data.get("deadline")),
    )


_OBJECTION = (
    "WITH opened AS (INSERT INTO objections (notice_id, idempotency_key, customer_id,"
    " received_at, channel, objected_by, reason, timely, status, content_ref, receipt_id,"
    " request) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'open', $9, $10, $11)"
    " ON CONFLICT DO NOTHING RETURNING 1)"
    " UPDATE recipients SET settled = false WHERE notice_id = $1 AND customer_id = $3"
)


def _objection(notice_id: str, e: es.StoredEvent, keys: Keys) -> tuple[Any, ...]:
    d = e.data
    customer_id = d["customer_id"]
    key = keys.get(customer_id)
    source = Field.event("objection_received", "reason")
    words = key.unseal(source, str(d.get("reason", ""))) if key is not None else ERASED
    reason = ERASED if key is None or words == ERASED else key.seal(Field.OBJECTION_REASON, words)
    return (
        notice_id,
        d.get("idempotency_key") or d.get("receipt_id"),
        customer_id,
        _at(d.get("received_at")) or e.occurred_at,
        d.get("channel", "cli"),
        _reseal(keys, customer_id, Field.event("objection_received", "by"), Field.OBJECTION_BY,
                d.get("by")),
        reason,  # unsealed once: for its record's place and for its content key
        bool(d["timely"]),
        None if key is None or words == ERASED else objection_ref(key, words),
        d.get("receipt_id"),
        "changes" if d.get("request") == "changes" else "objection",
    )  # fmt: skip


_RESOLVED = (
    "WITH closed AS (UPDATE objections SET status = $3, resolved_by = $4, resolved_at = $5,"
    " resolution_note = $6 WHERE notice_id = $1 AND customer_id = $2 AND status = 'open'"
    " AND ($7::text[] IS NULL OR idempotency_key = ANY($7::text[])) RETURNING 1)"
    " UPDATE recipients SET settled = false WHERE notice_id = $1 AND customer_id = $2"
)


def _resolved(notice_id: str, e: es.StoredEvent, keys: Keys) -> tuple[Any, ...]:
    d = e.data
    customer_id = d["customer_id"]
    note = d.get("note") or ""
    return (
        notice_id,
        customer_id,
        d["outcome"],
        _reseal(keys, customer_id, Field.event("objection_resolved", "by"), Field.RESOLVED_BY,
                d.get("by")),
        e.occurred_at,
        _reseal(keys, customer_id, Field.event("objection_resolved", "note"),
                Field.RESOLUTION_NOTE, note) if note else "",
        d.get("objections"),
    )  # fmt: skip


_OPT_IN = (
    # A revoked opt-in leaves the customer off where its consent was required (its switch-off
    # event follows); a dora customer's withdrawn approval leaves it on (silence is acceptance).
    "UPDATE recipients r SET opted_in = $3, opted_in_at = $4, settled = false,"
    " activated = r.activated AND ($3 OR NOT (r.authorisation = 'specific' OR coalesce(("
    "   SELECT (n.spec ->> 'opt_in')::boolean FROM notices n WHERE n.notice_id = $1), false)))"
    " WHERE r.notice_id = $1 AND r.customer_id = $2"
)


def _opt_in(notice_id: str, e: es.StoredEvent, keys: Keys) -> tuple[Any, ...]:
    recorded = e.event_type == "opt_in_recorded"
    return (notice_id, e.data["customer_id"], recorded, e.occurred_at)


_EXCLUDED = (
    "UPDATE recipients SET excluded_at = coalesce(excluded_at, $3),"
    " excluded_by = coalesce(excluded_by, $4), excluded_reason = coalesce(excluded_reason, $5),"
    " settled = false WHERE notice_id = $1 AND customer_id = $2"
)


def _excluded(notice_id: str, e: es.StoredEvent, keys: Keys) -> tuple[Any, ...]:
    d = e.data
    customer_id = d["customer_id"]
    return (
        notice_id,
        customer_id,
        e.occurred_at,
        _reseal(keys, customer_id, Field.event("customer_excluded", "by"), Field.EXCLUDED_BY,
                d.get("by")),
        _reseal(keys, customer_id, Field.event("customer_excluded", "reason"),
                Field.EXCLUDED_REASON, d.get("reason")),
    )  # fmt: skip


_DEEMED = "UPDATE recipients SET deemed_accepted_at = $3 WHERE notice_id = $1 AND customer_id = $2"


def _deemed(notice_id: str, e: es.StoredEvent, keys: Keys) -> tuple[Any, ...]:
    return (notice_id, e.data["customer_id"], _at(e.data.get("deadline")))


_SWITCHED = (
    # The customer's row for this notice, then which sub-processors the customer has on.
    "WITH recipient AS (UPDATE recipients SET activated = $4,"
    "   activated_at = CASE WHEN $4 THEN $5 ELSE activated_at END,"
    "   deemed_accepted_at = CASE WHEN $4 AND NOT $6 THEN NULL ELSE deemed_accepted_at END,"
    "   verdict = $7"
    "   WHERE notice_id = $1 AND customer_id = $2"
    # (only a switch of the notice's own sub-processor: a replacement's switch-off of the one it
    # replaces, on the same stream, changes the enablement only)
    "   AND $3 = coalesce((SELECT n.subprocessor FROM notices n WHERE n.notice_id = $1), $3)"
    "   RETURNING 1)"
    " INSERT INTO subprocessor_enablements (customer_id, subprocessor, enabled, since, notice_id)"
    " VALUES ($2, $3, $4, $5, $1) ON CONFLICT (customer_id, subprocessor) DO UPDATE"
    " SET enabled = EXCLUDED.enabled, since = EXCLUDED.since, notice_id = EXCLUDED.notice_id"
    # The latest switch wins, whatever order two notices' events are applied in (live: commit
    # order; a rebuild: transaction order).
    " WHERE subprocessor_enablements.enabled IS DISTINCT FROM EXCLUDED.enabled"
    " AND subprocessor_enablements.since <= EXCLUDED.since"
)


def _switched(notice_id: str, e: es.StoredEvent, keys: Keys) -> tuple[Any, ...]:
    enabled = e.event_type == "subprocessor_enabled"
    return (
        notice_id,
        e.data["customer_id"],
        e.data["subprocessor"],
        enabled,
        e.occurred_at,
        # a switch-on for another reason clears an earlier deemed acceptance (events written
        # before `because` existed say nothing: the deemed acceptance stays)
        e.data.get("because") in (None, "deemed_acceptance"),
        # Switched on: the verdict was to activate; off: the verdict that switched it off, if
        # one did (a revoked opt-in or a resolution is no verdict: none until the next round).
        "activate" if enabled else (e.data.get("because") if e.data.get("because") in VERDICTS
                                    else None),
    )  # fmt: skip


_SETTLED = (
    "UPDATE recipients SET verdict = $3, settled = true WHERE notice_id = $1 AND customer_id = $2"
)


def _settled(notice_id: str, e: es.StoredEvent, keys: Keys) -> tuple[Any, ...]:
    return (notice_id, e.data["customer_id"], e.data["verdict"])


_CANCELLED = (
    # Customers already switched on (a cancel once active) keep their verdict.
    "UPDATE recipients SET settled = true, verdict = 'cancelled'"
    " WHERE notice_id = $1 AND NOT activated"
)


def _cancelled(notice_id: str, e: es.StoredEvent, keys: Keys) -> tuple[Any, ...]:
    return (notice_id,)


_PHASE = (
    "UPDATE notices SET phase = $2, effective_at = $3, window_closes_at = $4, updated_at = $5"
    " WHERE notice_id = $1"
)


def _phase(notice_id: str, e: es.StoredEvent, keys: Keys) -> tuple[Any, ...]:
    return (
        notice_id,
        e.data["phase"],
        _at(e.data["effective_at"]),
        _at(e.data.get("window_closes_at")),
        e.occurred_at,
    )


_APPROVED = "UPDATE notices SET approved_by = coalesce($2, approved_by) WHERE notice_id = $1"


def _approved(notice_id: str, e: es.StoredEvent, keys: Keys) -> tuple[Any, ...]:
    return (notice_id, e.data.get("by") or None)


_CREATED = f"UPDATE notices SET {NOTICE_RESET}, updated_at = $2 WHERE notice_id = $1"


def _created(notice_id: str, e: es.StoredEvent, keys: Keys) -> tuple[Any, ...]:
    return (notice_id, e.occurred_at)


_AUDIENCE = (
    # The frozen audience: a row per customer with its terms; a row that is there already keeps
    # its name (the sealed copy taken when it was frozen), one missing takes the customer's name
    # as it stands now ([erased] for a customer erased since).
    "INSERT INTO recipients (notice_id, customer_id, name, region, services, timezone,"
    " window_days, window_unit, country, authorisation, language, snapshot_at)"
    " SELECT $1, t.customer_id, coalesce(c.name, $4), t.region,"
    "  ARRAY(SELECT jsonb_array_elements_text(t.services)), z.value, t.window_days,"
    "  t.window_unit, t.country, coalesce(t.authorisation, 'general'),"
    "  coalesce(t.language, 'en'), $3"
    " FROM jsonb_to_recordset($2::jsonb) AS t(customer_id text, region text, services jsonb,"
    "  window_days int, window_unit text, country text, authorisation text, language text)"
    " JOIN jsonb_each_text($5::jsonb) AS z ON z.key = t.customer_id"
    " LEFT JOIN customers c ON c.customer_id = t.customer_id"
    " ON CONFLICT (notice_id, customer_id) DO UPDATE SET region = EXCLUDED.region,"
    " services = EXCLUDED.services, timezone = EXCLUDED.timezone,"
    " window_days = EXCLUDED.window_days, window_unit = EXCLUDED.window_unit,"
    " country = EXCLUDED.country, authorisation = EXCLUDED.authorisation,"
    " language = EXCLUDED.language,"
    " snapshot_at = EXCLUDED.snapshot_at"
)
_NOT_FROZEN = (  # rows for customers the audience never held (written behind our back)
    "WITH gone AS (DELETE FROM recipient_contacts WHERE notice_id = $1"
    "   AND NOT customer_id = ANY($2::text[]))"
    " DELETE FROM recipients WHERE notice_id = $1 AND NOT customer_id = ANY($2::text[])"
)
_NOT_IN_PARTS = (  # the same for an audience frozen in parts, once its last part is recorded: the
    # customers are every part's (read from the stream's events, in the database: by equality, so
    # whatever the collation's order of the ids)
    "WITH frozen AS (SELECT json_array_elements_text(data->'customer_ids') AS customer_id"
    "   FROM events WHERE stream_id = $2 AND event_type = 'audience_snapshotted'),"
    " gone AS (DELETE FROM recipient_contacts rc WHERE rc.notice_id = $1"
    "   AND NOT EXISTS (SELECT FROM frozen f WHERE f.customer_id = rc.customer_id))"
    " DELETE FROM recipients r WHERE r.notice_id = $1"
    " AND NOT EXISTS (SELECT FROM frozen f WHERE f.customer_id = r.customer_id)"
)


async def _audience(
    connection: asyncpg.Connection, notice_id: str, e: es.StoredEvent, keys: Keys
) -> None:
    """The audience's rows, from the snapshot or one of its parts (terms only in events written
    since the audience is a projection: an older snapshot's rows keep the terms they were written
    with)."""
    part, parts = e.data.get("part"), e.data.get("parts")
    if not part:
        await connection.execute(_NOT_FROZEN, notice_id, list(e.data["customer_ids"]))
    elif part == parts:  # the last part: every part is in the stream by now
        await connection.execute(_NOT_IN_PARTS, notice_id, e.stream_id)
    terms = e.data.get("terms")
    if terms:
        await connection.execute(
            _AUDIENCE,
            notice_id,
            orjson.dumps([{"customer_id": c, **t} for c, t in terms.items()]).decode(),
            e.occurred_at,
            ERASED,
            orjson.dumps(e.data.get("timezones") or {}).decode(),
        )


CUSTOM: dict[str, Callable[[asyncpg.Connection, str, es.StoredEvent, Keys], Awaitable[None]]] = {
    "audience_snapshotted": _audience,
}

HANDLERS: dict[str, tuple[str, ArgsOf]] = {
    "notice_created": (_CREATED, _created),
    "phase_changed": (_PHASE, _phase),
    "notice_approved": (_APPROVED, _approved),
    "notice_cancelled": (_CANCELLED, _cancelled),
    "notice_delivered": (_DELIVERY, _delivery),
    "notice_undelivered": (_DELIVERY, _delivery),
    "objection_received": (_OBJECTION, _objection),
    "objection_resolved": (_RESOLVED, _resolved),
    "opt_in_recorded": (_OPT_IN, _opt_in),
    "opt_in_revoked": (_OPT_IN, _opt_in),
    "customer_excluded": (_EXCLUDED, _excluded),
    "deemed_acceptance": (_DEEMED, _deemed),
    "subprocessor_enabled": (_SWITCHED, _switched),
    "subprocessor_disabled": (_SWITCHED, _switched),
    "customer_settled": (_SETTLED, _settled),
}
SEALING = {"objection_received", "objection_resolved", "customer_excluded"}


def _statement(event_type: str) -> str:
    """What a run of events shares: the handler's SQL (one statement for several types, such as
    both delivery events), or the custom handler's event type."""
    return HANDLERS[event_type][0] if event_type in HANDLERS else event_type


def _runs(events: Iterable[es.StoredEvent]) -> list[_Run]:
    runs: list[_Run] = []
    for event in events:
        notice_id = notice_id_of(event.stream_id)
        if (event.event_type not in HANDLERS and event.event_type not in CUSTOM) or not notice_id:
            continue
        last = runs[-1] if runs else None
        if (
            last is not None
            and last.notice_id == notice_id
            and _statement(last.event_type) == _statement(event.event_type)
        ):
            last.events.append(event)
        else:
            runs.append(_Run(event.event_type, notice_id, [event]))
    return runs


async def project(
    connection: asyncpg.Connection, events: Sequence[es.StoredEvent], keys: Keys | None = None
) -> int:
    """Write what ``events`` decide into the records (in the caller's transaction); returns how
    many events changed a record. ``keys``: customers' keys the caller holds already."""
    runs = _runs(events)
    if not runs:
        return 0
    needed = {
        e.data["customer_id"]
        for run in runs
        if run.event_type in SEALING
        for e in run.events
        if e.data.get("customer_id") not in (keys or {})
    }
    known: dict[str, CustomerKey] = dict(keys or {})
    if needed:
        known.update(await load_keys(connection, needed))
    count = 0
    for run in runs:
        custom = CUSTOM.get(run.event_type)
        if custom is not None:
            for event in run.events:
                await custom(connection, run.notice_id, event, known)
            count += len(run.events)
            continue
        sql, args_of = HANDLERS[run.event_type]
        rows = [args_of(run.notice_id, e, known) for e in run.events]
        args = [row for row in rows if row is not None]
        if sql is _DELIVERY and len(args) > 1:
            await _deliveries(connection, args)
        elif len(args) == 1:
            await connection.execute(sql, *args[0])
        elif args:
            await connection.executemany(sql, args)
        count += len(args)
    return count


async def record(
    connection: asyncpg.Connection,
    stream_id: str,
    events: Sequence[es.NewEvent],
    keys: Keys | None = None,
    expected_version: int = es.ANY_VERSION,
) -> list[es.StoredEvent]:
    """Append ``events`` and project those this call appended, in the caller's transaction (an
    event appended by an earlier try of the same step was projected then, and is not again)."""
    if not connection.is_in_transaction():
        raise RuntimeError("records.record runs inside the transaction that decides")
    stored, fresh = await es.append_new(connection, stream_id, events, expected_version)
    await project(connection, fresh, keys)
    return stored


async def record_one(
    connection: asyncpg.Connection,
    stream_id: str,
    key: str,
    event: Event,
    occurred_at: datetime,
    keys: Keys | None = None,
) -> es.StoredEvent:
    """:func:`record` for the one event of step ``key``."""
    new = es.NewEvent.of(stream_id, key, event, occurred_at)
    return (await record(connection, stream_id, [new], keys))[0]


PAGE = 5000
PAGE_BYTES = 16_000_000  # a rebuild's page of JSON at most (beyond its first event)
RECORD_EVENT_TYPES = sorted([*HANDLERS, *CUSTOM])  # the event types a record follows from


async def rebuild(pool: asyncpg.Pool, lock_timeout: float = 30.0) -> int:
    """Reset every projected column and replay every event in global order; returns how many
    events were replayed. The notice streams are verified first (chain, head, signature); the
    records are then locked for the rebuild, so writers wait (an event appended meanwhile is
    projected by its own transaction once the rebuild has committed), and the streams that moved
    since their check are checked again under the lock."""
    async with pool.acquire() as connection:
        verified = await _refuse_unverified(connection)
    replayed = 0
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", RECORDS_LOCK)
        await connection.execute(f"SET LOCAL lock_timeout = '{int(lock_timeout * 1000)}ms'")
        try:
            # EXCLUSIVE: also waits for a writer holding a row lock (an intake's FOR UPDATE), so
            # the rebuild never meets a half-done judgement.
            await connection.execute(
                "LOCK TABLE notices, recipients, recipient_contacts, objections,"
                " subprocessor_enablements IN EXCLUSIVE MODE"
            )
        except asyncpg.LockNotAvailableError:
            raise InputError(
                f"the records stayed busy for {lock_timeout:.0f} s (a long judgement or another"
                " rebuild): nothing was changed; try again"
            ) from None
        await connection.execute("SET LOCAL lock_timeout = 0")
        await _refuse_unverified(connection, verified)
        await connection.execute(f"UPDATE recipients SET {RECIPIENT_RESET}")
        await connection.execute(f"UPDATE notices SET {NOTICE_RESET}")
        await connection.execute("DELETE FROM objections")
        await connection.execute("DELETE FROM subprocessor_enablements")
        after = es.Checkpoint()
        while True:
            # Every committed event (not only those below the oldest open transaction, as a
            # subscriber reads): the writers of the rest wait for this transaction.
            events = await es.read_committed(
                connection, after, RECORD_EVENT_TYPES, PAGE, max_bytes=PAGE_BYTES
            )
            if not events:
                break
            await project(connection, events)
            replayed += len(events)
            after = events[-1].checkpoint
    return replayed


Heads = dict[str, tuple[int, bytes]]


async def _refuse_unverified(
    connection: asyncpg.Connection, verified: Heads | None = None
) -> Heads:
    """Records come only from events whose chain and signed head check out: an event written
    behind the product's back cannot sign a head, so it would otherwise become a record. An
    unsigned head is refused too (a signature removed looks the same as one never made): a
    person vouches for old streams once with `noticeflow evidence sign-heads`. Returns the heads
    checked; with ``verified``, checks only the streams whose head moved since."""
    heads: Heads = {
        row["stream_id"]: (row["version"], bytes(row["head_hash"] or b""))
        for row in await connection.fetch(
            # every stream with a head, and every stream of events without one (written behind
            # the product's back: no append makes events without moving a head)
            "SELECT stream_id, version, head_hash FROM event_streams UNION"
            " SELECT e.stream_id, 0, NULL FROM (SELECT DISTINCT stream_id FROM events) e"
            " WHERE NOT EXISTS (SELECT 1 FROM event_streams h WHERE h.stream_id = e.stream_id)"
            " ORDER BY 1"
        )
        if notice_id_of(row["stream_id"]) is not None
    }
    problems = []
    for stream, head in heads.items():
        if verified is not None and verified.get(stream) == head:
            continue
        problem = await es.verify_stream(connection, stream)
        if problem is not None:
            problems.append(str(problem))
            continue
        stored = await es.stream_head(connection, stream)
        if stored is not None and stored.signature is None:
            problems.append(
                f"{stream}: its head is not signed (run `noticeflow evidence sign-heads` once"
                " after an upgrade, if its events are the product's own)"
            )
    if problems:
        raise InputError(
            "refusing to rebuild the records from events that do not verify (nothing was"
            " changed; see `noticeflow evidence verify --notice ID`): " + "; ".join(problems)
        )
    return heads
