"""Reads and writes outside the workflow: customers (import, list, erasure), notice records, the
per-customer table."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
import orjson

from noticeflow import eventstore, intake, records
from noticeflow.crypto import (
    ERASED,
    ERASURE_LOCK,
    Field,
    ensure_keys,
    erased_ids,
    load_keys,
    open_sealed,
)
from noticeflow.domain import events
from noticeflow.domain.customers import Customer
from noticeflow.domain.errors import InputError
from noticeflow.domain.notice import NoticeSpec
from noticeflow.domain.rules import ChangeKind


async def upsert_customers(pool: asyncpg.Pool, customers: list[Customer]) -> int:
    """Insert or update customers with their contacts and terms, all in one transaction. A
    customer erased for good is refused (every such id named at once)."""
    async with pool.acquire() as connection, connection.transaction():
        # Shared with other imports, exclusive of an erasure: none can run between check and keys.
        await connection.execute("SELECT pg_advisory_xact_lock_shared($1)", ERASURE_LOCK)
        erased = await erased_ids(connection, [c.customer_id for c in customers])
        if erased:
            raise InputError(
                "refusing to import customers erased for good: " + ", ".join(sorted(erased))
            )
        keys = await ensure_keys(connection, [c.customer_id for c in customers])
        await connection.executemany(
            "INSERT INTO customers (customer_id, name, region, services, timezone, window_days,"
            " window_unit, country, authorisation, language)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, coalesce($9, 'general'),"
            " coalesce($10, 'en'))"
            " ON CONFLICT (customer_id) DO UPDATE"
            " SET name = EXCLUDED.name, region = EXCLUDED.region, services = EXCLUDED.services,"
            " timezone = EXCLUDED.timezone, window_days = EXCLUDED.window_days,"
            " window_unit = EXCLUDED.window_unit, country = EXCLUDED.country,"
            # A file without the column leaves each customer's mode as it was.
            " authorisation = coalesce($9, customers.authorisation),"
            " language = coalesce($10, customers.language), updated_at = now()",
            [
                (
                    c.customer_id,
                    keys[c.customer_id].seal(Field.CUSTOMER_NAME, c.name),
                    c.region,
                    c.services,
                    c.timezone,
                    c.window_days,
                    c.window_unit.value if c.window_unit else None,
                    c.country,  # ISO 3166 alpha-2 (public holidays), or None
                    c.authorisation.value if c.authorisation else None,
                    c.language,  # a BCP 47 tag; None (no such column): as stored
                )
                for c in customers
            ],
        )
        ids = [c.customer_id for c in customers]
        await connection.execute(
            "DELETE FROM customer_contacts WHERE customer_id = ANY($1::text[])", ids
        )
        await connection.executemany(
            "INSERT INTO customer_contacts (customer_id, position, email) VALUES ($1, $2, $3)",
            [
                (c.customer_id, i, keys[c.customer_id].seal(Field.CONTACT_EMAIL, email))
                for c in customers
                for i, email in enumerate(c.contact_emails)
            ],
        )
    return len(customers)


async def list_customers(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT c.customer_id, c.name, c.region, c.services, c.timezone, c.window_days,"
        " c.window_unit, c.authorisation, c.language, (SELECT count(*) FROM customer_contacts cc"
        "   WHERE cc.customer_id = c.customer_id) AS contacts"
        " FROM customers c ORDER BY c.customer_id"
    )
    keys = await load_keys(pool, [row["customer_id"] for row in rows])
    return [
        {
            **dict(row),
            "name": open_sealed(keys.get(row["customer_id"]), Field.CUSTOMER_NAME, row["name"]),
        }
        for row in rows
    ]


async def _name_problem(connection: asyncpg.Connection, spec: NoticeSpec) -> str | None:
    """A replacement, removal or material change names a sub-processor already in use; switches
    match names exactly, so a name that differs from a known one only in case or spacing would
    switch nothing off. Refused, with the known spelling (an unknown name passes: one in use
    before noticeflow was adopted is not in its records)."""
    field, name = (
        ("replaces", spec.replaces)
        if spec.kind is ChangeKind.replacement
        else ("subprocessor", spec.subprocessor)
    )
    if spec.kind is ChangeKind.addition or name is None:
        return None
    known = [
        row["subprocessor"]
        for row in await connection.fetch(
            "SELECT subprocessor FROM subprocessor_enablements"
            " UNION SELECT subprocessor FROM notices"
        )
    ]
    if name in known:
        return await _still_under_way(connection, spec, name)

    def plain(text: str) -> str:
        return " ".join(text.casefold().split())

    same = [k for k in known if plain(k) == plain(name)]
    if not same:
        return None
    return (
        f"{field} {name!r} differs from the sub-processor {same[0]!r} known from earlier notices"
        f" only in case or spacing; write it exactly as {same[0]!r} (a {spec.kind.value} switches"
        " a sub-processor by its exact name)"
    )


async def _still_under_way(
    connection: asyncpg.Connection, spec: NoticeSpec, name: str
) -> str | None:
    """An earlier notice about the same sub-processor that may still switch customers on (not
    cancelled, and not every customer settled) would undo a removal or a replacement, or switch
    customers on under the terms a material change replaces: refused until it is done."""
    row = await connection.fetchrow(
        "SELECT n.notice_id, n.phase, (SELECT count(*) FROM recipients r"
        "   WHERE r.notice_id = n.notice_id AND NOT r.settled) AS unsettled"
        " FROM notices n WHERE n.subprocessor = $1 AND n.notice_id <> $2"
        " AND n.phase <> 'cancelled' AND (n.phase <> 'active' OR EXISTS (SELECT 1 FROM"
        "   recipients r WHERE r.notice_id = n.notice_id AND NOT r.settled))"
        " ORDER BY n.created_at, n.notice_id LIMIT 1",
        name,
        spec.notice_id,
    )
    if row is None:
        return None
    unsettled = f", {row['unsettled']} customer(s) not settled" if row["unsettled"] else ""
    return (
        f"notice {row['notice_id']!r} about {name!r} is still under way (phase {row['phase']}"
        f"{unsettled}) and could switch it on for customers after this {spec.kind.value}; cancel"
        f" it (noticeflow notice cancel {row['notice_id']} --reason ... --by ...) or settle its"
        " customers (notice exclude) first"
    )


async def create_notice(pool: asyncpg.Pool, spec: NoticeSpec, author: str, at: datetime) -> None:
    async with pool.acquire() as connection, connection.transaction():
        problem = await _name_problem(connection, spec)
        if problem is not None:
            raise InputError(f"notice {spec.notice_id!r}: {problem}")
        status = await connection.execute(
            "INSERT INTO notices (notice_id, spec, notice_text, text_sha256, author, subprocessor,"
            " effective_at) VALUES ($1, $2::jsonb, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            spec.notice_id,
            spec.model_dump_json(),
            spec.text(),
            spec.text_sha256(),
            author,
            spec.subprocessor,
            spec.effective_at,
        )
        if not status.endswith(" 1"):
            raise InputError(
                f"notice {spec.notice_id!r} already exists; give the file another notice_id"
            )
        await records.record_one(  # the notice's phase and dates: the event's projection
            connection,
            eventstore.notice_stream(spec.notice_id),
            "created",
            events.NoticeCreated(spec=spec, author=author, text_sha256=spec.text_sha256()),
            at,
        )


async def notice_row(pool: asyncpg.Pool, notice_id: str) -> asyncpg.Record:
    row = await pool.fetchrow("SELECT * FROM notices WHERE notice_id = $1", notice_id)
    if row is None:
        raise InputError(f"no notice {notice_id!r}")
    return row


async def list_notices(pool: asyncpg.Pool, phase: str | None = None) -> list[dict[str, Any]]:
    """`notice list`, from the notice summary read model."""
    rows = await pool.fetch(
        "SELECT notice_id, phase, subprocessor, effective_at, window_closes_at, customers,"
        " open_objections FROM rm_notices WHERE $1::text IS NULL OR phase = $1 ORDER BY created_at",
        phase,
    )
    return [dict(row) for row in rows]


async def customer_table(pool: asyncpg.Pool, notice_id: str) -> list[dict[str, Any]]:
    """One row per recipient, in the contract's `notice show --json` shape."""
    rows = await pool.fetch(
        "SELECT r.customer_id, r.delivery, r.deadline, r.opted_in, r.activated, r.verdict,"
        " r.timezone, r.deemed_accepted_at, r.settled, r.authorisation,"
        " (SELECT o.status FROM objections o WHERE o.notice_id = r.notice_id"
        "   AND o.customer_id = r.customer_id ORDER BY (o.status = 'open') DESC, o.received_at DESC"
        "   LIMIT 1) AS objection_status,"
        " (SELECT o.timely FROM objections o WHERE o.notice_id = r.notice_id"
        "   AND o.customer_id = r.customer_id ORDER BY (o.status = 'open') DESC, o.received_at DESC"
        "   LIMIT 1) AS objection_timely,"
        " (SELECT o.request FROM objections o WHERE o.notice_id = r.notice_id"
        "   AND o.customer_id = r.customer_id ORDER BY (o.status = 'open') DESC, o.received_at DESC"
        "   LIMIT 1) AS objection_request"
        " FROM recipients r WHERE r.notice_id = $1 ORDER BY r.customer_id",
        notice_id,
    )
    table = []
    for row in rows:
        objection = None
        if row["objection_status"] is not None:
            objection = {
                "status": row["objection_status"],
                "timely": row["objection_timely"],
                "request": row["objection_request"],
            }
        table.append(
            {
                "customer_id": row["customer_id"],
                "delivery": row["delivery"],
                "deadline": row["deadline"],
                "timezone": row["timezone"],
                "authorisation": row["authorisation"],
                "objection": objection,
                "opted_in": row["opted_in"],
                "activated": row["activated"],
                "deemed_accepted_at": row["deemed_accepted_at"],
                "verdict": row["verdict"],
                "settled": row["settled"],
            }
        )
    return table


def customer_row(row: Any) -> dict[str, Any]:
    """One row of ``rm_notice_customers`` in the contract's `notice show --json` shape."""
    return {
        "customer_id": row["customer_id"],
        "delivery": row["delivery"],
        "deadline": row["deadline"],
        "timezone": row["timezone"],
        # What its contract asks: general, specific (silence is refusal) or dora.
        "authorisation": row["authorisation"],
        "objection": None
        if row["objection_status"] is None
        else {
            "status": row["objection_status"],
            "timely": row["objection_timely"],
            # objection, or changes (a dora customer's request for changes)
            "request": row["objection_request"] or "objection",
        },
        "opted_in": row["opted_in"],
        "activated": row["activated"],
        "deemed_accepted_at": row["deemed_accepted_at"],
        "verdict": row["verdict"],
        "settled": row["settled"],
    }


async def notice_summary(pool: asyncpg.Pool, notice_id: str) -> dict[str, Any]:
    """`notice show`, from the read models: the contract's fields first, more after."""
    notice = await pool.fetchrow("SELECT * FROM rm_notices WHERE notice_id = $1", notice_id)
    if notice is None:
        await notice_row(pool, notice_id)  # a clear "no notice" error if it does not exist at all
        raise InputError(
            f"notice {notice_id!r} is not in the read models yet; try again in a moment"
        )
    rows = await pool.fetch(
        "SELECT * FROM rm_notice_customers WHERE notice_id = $1 ORDER BY customer_id", notice_id
    )
    customers = [customer_row(row) for row in rows]
    # What the notice changes, as written (the read model predates change kinds).
    spec = orjson.loads(
        await pool.fetchval("SELECT spec FROM notices WHERE notice_id = $1", notice_id) or "{}"
    )
    counts = {
        "customers": len(rows),
        "delivered": sum(row["delivery"] == "delivered" for row in rows),
        "undelivered": sum(row["delivery"] == "undelivered" for row in rows),
        "open_objections": notice["open_objections"],
        "opted_in": sum(row["opted_in"] for row in rows),
        "activated": sum(row["activated"] for row in rows),
        "settled": sum(row["settled"] for row in rows),
    }
    return {
        "notice_id": notice_id,
        "phase": notice["phase"],
        "effective_at": notice["effective_at"],
        "window_closes_at": notice["window_closes_at"],
        "customers": customers,
        "title": notice["title"],
        "subprocessor": notice["subprocessor"],
        "opt_in": notice["opt_in"],
        "kind": spec.get("kind") or "addition",
        "replaces": spec.get("replaces"),
        "previous": spec.get("previous") or {},
        "author": notice["author"],
        "approved_by": notice["approved_by"],
        "text_sha256": notice["text_sha256"],
        "counts": counts,
    }


async def erased_customers(pool: asyncpg.Pool) -> dict[str, str]:
    """Ids erased for good, each with why it cannot be imported (for `customers import`)."""
    rows = await pool.fetch("SELECT customer_id FROM customer_erasures")
    return {row["customer_id"]: "was erased for good and cannot be imported again" for row in rows}


async def erase_customer(pool: asyncpg.Pool, customer_id: str) -> dict[str, Any]:
    """Erase a customer for good: delete its key (every sealed value — in the records and inside
    the hash-chained events — is unreadable from now on), delete or blank its personal data in
    every record table, and record the erasure (ids only), so that no key is ever made for it
    again. Idempotent: a second call changes nothing and says ``already``."""
    async with pool.acquire() as connection, connection.transaction():
        # Exclusive of imports (which take it shared): none can give the customer a key meanwhile.
        await connection.execute("SELECT pg_advisory_xact_lock($1)", ERASURE_LOCK)
        erased_at = await connection.fetchval(
            "SELECT erased_at FROM customer_erasures WHERE customer_id = $1", customer_id
        )
        if erased_at is not None:
            return {"customer_id": customer_id, "already": True, "erased_at": erased_at}
        known = await connection.fetchval(
            "SELECT EXISTS (SELECT 1 FROM customer_keys WHERE customer_id = $1)"
            " OR EXISTS (SELECT 1 FROM customers WHERE customer_id = $1)"
            " OR EXISTS (SELECT 1 FROM recipients WHERE customer_id = $1)",
            customer_id,
        )
        if not known:
            raise InputError(f"no customer {customer_id!r}")
        keys = await load_keys(connection, [customer_id])
        counts = {
            # The intake first, while the key still opens it: its ids stay, its free text goes.
            "intake": await _erase_intake(connection, customer_id, keys),
            "customer_contacts": await _count(
                connection,
                "DELETE FROM customer_contacts WHERE customer_id = $1 RETURNING 1",
                customer_id,
            ),
            "customers": await _count(
                connection, "DELETE FROM customers WHERE customer_id = $1 RETURNING 1", customer_id
            ),
            "recipients": await _count(
                connection,
                "UPDATE recipients SET name = $2,"
                " excluded_by = CASE WHEN excluded_by IS NULL THEN NULL ELSE $2 END,"
                " excluded_reason = CASE WHEN excluded_reason IS NULL THEN NULL ELSE $2 END"
                " WHERE customer_id = $1 RETURNING 1",
                customer_id,
                ERASED,
            ),
            "recipient_contacts": await _count(
                connection,
                "UPDATE recipient_contacts SET email = $2 WHERE customer_id = $1 RETURNING 1",
                customer_id,
                ERASED,
            ),
            "deliveries": await _count(
                connection,
                # the reply's text too (sealed since migration 014, unsealed before it), and the
                # Message-ID: those written before keyed ids are an unkeyed hash of the address
                # (NOT NULL: blanked; an erased customer is never mailed again)
                "UPDATE deliveries SET email = $2, smtp_reply = NULL, message_id = $2,"
                " smtp_text = CASE WHEN smtp_text IS NULL THEN NULL ELSE $2 END"
                " WHERE customer_id = $1 RETURNING 1",
                customer_id,
                ERASED,
            ),
            "objections": await _count(
                connection,
                # content_ref too: a keyed id under the key deleted now, which nothing can
                # recompute (a rebuild of the records writes none either)
                "UPDATE objections SET objected_by = $2, reason = $2, content_ref = NULL,"
                " resolved_by = CASE WHEN resolved_by IS NULL THEN NULL ELSE $2 END,"
                " resolution_note = CASE WHEN coalesce(resolution_note, '') = ''"
                "   THEN resolution_note ELSE $2 END"
                " WHERE customer_id = $1 RETURNING 1",
                customer_id,
                ERASED,
            ),
            "customer_keys": await _count(
                connection,
                "DELETE FROM customer_keys WHERE customer_id = $1 RETURNING 1",
                customer_id,
            ),
        }
        erased_at = await connection.fetchval(
            "INSERT INTO customer_erasures (customer_id) VALUES ($1) RETURNING erased_at",
            customer_id,
        )
        await eventstore.append(
            connection,
            f"customer-{customer_id}",
            "erased",
            events.CustomerErased(
                customer_id=customer_id,
                method="crypto-shredding: key deleted; records blanked; erased for good",
            ),
            erased_at,
        )
    return {"customer_id": customer_id, "already": False, "erased_at": erased_at, **counts}


async def _count(connection: asyncpg.Connection, sql: str, *args: Any) -> int:
    return int(await connection.fetchval(f"WITH done AS ({sql}) SELECT count(*) FROM done", *args))


async def _erase_intake(
    connection: asyncpg.Connection, customer_id: str, keys: dict[str, Any]
) -> int:
    """The customer's receipts keep their action and ids; their free text and owed mail go."""
    rows = await connection.fetch(
        "SELECT receipt_id, customer_id, payload FROM intake WHERE customer_id = $1", customer_id
    )
    if not rows:
        return 0
    await connection.executemany(
        "UPDATE intake SET payload = $2, mail_due = NULL WHERE receipt_id = $1",
        [
            (
                row["receipt_id"],
                orjson.dumps(intake.ids_only(_readable(row, keys))).decode(),
            )
            for row in rows
        ],
    )
    return len(rows)


def _readable(row: asyncpg.Record, keys: dict[str, Any]) -> Any:
    try:
        return intake.open_payload(row, keys)
    except ValueError:  # not JSON (a payload that could not be stored as sent): ids from nothing
        return None
