"""The intake of record: every action is written here first, with its receipt time.

An action — an objection, an opt-in or its revocation, a resolution, an exclusion, a resend, an
approval, a postponement, a cancellation — from the CLI, a customer's link, a reply classified by
ops or a raw signal from the Temporal CLI becomes one row of ``intake`` before anything acts on it.
Its ``received_at`` is set by the database as the row is written: the legal moment of receipt, even
while no worker runs, and the time the workflow later judges it by (rule 7).

* A sender that gives its own ``idempotency_key`` gets the first receipt back for a repeat of that
  key ("duplicate key: ignored"). Without a key every submission is a new receipt, judged on its own:
  the same words again while the case they opened is still open are a repeat; after it was closed,
  a new objection.
* A payload that does not validate is recorded as rejected at once, with the reason; nothing is
  lost, and nothing reaches the workflow that could stop it.
* Free text of a customer's action is sealed with that customer's key, like every other personal
  datum (crypto-shredding reaches it). A customer action whose customer has no key (an unknown id,
  or a customer erased for good) keeps its action and ids only: its free text is not kept
  (:func:`ids_only`). An action for an erased customer is rejected at once ("customer erased"),
  except ops closing its cases or settling it (:data:`ERASED_OK`).

The caller sees the outcome of its own receipt (:func:`wait_for`), never another caller's.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson
from pydantic import ValidationError

from noticeflow import eventstore
from noticeflow.crypto import ERASED, CustomerKey, Field, erased_ids, is_sealed, load_keys
from noticeflow.domain import events, signals
from noticeflow.domain.text import SLUG_PATTERN

_ID = re.compile(SLUG_PATTERN)
PENDING, ACCEPTED, DUPLICATE, REJECTED = "pending", "accepted", "duplicate", "rejected"
CHANNELS = {"cli", "temporal", "link", "web", "api", "demo", "reply"}
# Ops' actions about an erased customer (its personal data is gone, its cases are not).
ERASED_OK = frozenset({"resolve_objection", "exclude"})
# What stands in for free text that is not kept (it still validates, so the action is judged).
NOT_KEPT = "[not kept: no key for this customer]"
_ID_FIELDS = ("customer_id", "outcome", "channel", "receipt_id")
_TEXT_FIELDS = ("by", "reason", "note")
_SENDER_KEY = re.compile(r"^[A-Za-z0-9._:-]{1,200}$")


def erased_reason(customer_id: str) -> str:
    return (
        f"customer erased: {customer_id!r} was erased for good; its personal data is gone and it"
        " cannot act any more (ops can still resolve its cases or settle it with `notice exclude`)"
    )


def ids_only(payload: Any) -> dict[str, Any]:
    """A customer action's payload without its free text: ids as they were, each free text
    replaced by :data:`NOT_KEPT`, anything else dropped."""
    fields = payload if isinstance(payload, dict) else {}
    kept: dict[str, Any] = {}
    for name in _ID_FIELDS:
        value = fields.get(name)
        if isinstance(value, str) and _ID.match(value.strip()):
            kept[name] = value
    key = fields.get("idempotency_key")
    if isinstance(key, str) and _SENDER_KEY.match(key):
        kept["idempotency_key"] = key
    for name in _TEXT_FIELDS:
        if name in fields:
            kept[name] = NOT_KEPT
    return kept


@dataclass(frozen=True)
class Receipt:
    receipt_id: str
    notice_id: str
    action: str
    customer_id: str | None
    channel: str
    received_at: datetime
    status: str
    reason: str | None
    repeat: bool = False  # this submission repeated an earlier sender key: the first receipt

    @property
    def pending(self) -> bool:
        return self.status == PENDING

    def as_json(self) -> dict[str, Any]:
        return {
            "receipt_id": self.receipt_id,
            "notice_id": self.notice_id,
            "action": self.action,
            "customer_id": self.customer_id,
            "channel": self.channel,
            "received_at": self.received_at,
            "status": self.status,
            "reason": self.reason,
            "repeat": self.repeat,
        }


def new_receipt_id() -> str:
    return "r-" + secrets.token_hex(10)


def describe_problems(error: ValidationError) -> str:
    """Every problem, in our words only: a rejection reason is kept as evidence, so it must not
    repeat what was sent (an id field holding an address, say)."""
    problems = []
    for e in error.errors():
        where = ".".join(str(p)[:40] for p in e["loc"]) or "payload"
        message = e["msg"]
        if e["type"] == "identifier":
            message = "is not an id (use a-z, 0-9, '.', '_' or '-')"
        problems.append(f"{where}: {message}")
    return "; ".join(problems)


def validate(action: str, payload: Any) -> tuple[signals._Payload | None, str | None]:
    """The typed payload, or the reason it cannot be accepted (every problem, in one line)."""
    model = signals.SIGNAL_PAYLOADS.get(action)
    if model is None:
        return None, f"unknown action {action!r}"
    if not isinstance(payload, dict):
        return None, f"invalid {action} payload: expected a JSON object"
    try:
        return model.model_validate(payload), None
    except ValidationError as error:
        return None, f"invalid {action} payload: {describe_problems(error)}"


def _clean_id(value: Any, limit: int = 64) -> str | None:
    """An id fit to store as a column (no NUL, no control characters), or None."""
    if not isinstance(value, str) or not value or len(value) > limit:
        return None
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        return None
    return value


def _row_receipt(row: asyncpg.Record, repeat: bool = False) -> Receipt:
    return Receipt(
        receipt_id=row["receipt_id"],
        notice_id=row["notice_id"],
        action=row["action"],
        customer_id=row["customer_id"],
        channel=row["channel"],
        received_at=row["received_at"],
        status=row["status"],
        reason=row["reason"],
        repeat=repeat,
    )


RECEIPT_COLUMNS = "receipt_id, notice_id, action, customer_id, channel, received_at, status, reason"


async def record(
    connection: asyncpg.Connection | asyncpg.Pool,
    notice_id: str,
    action: str,
    payload: Any,
    *,
    channel: str,
    receipt_id: str | None = None,
    received_at: datetime | None = None,
    problem: str | None = None,
) -> Receipt:
    """Write one action to the intake (pending, or rejected at once when it cannot be valid)."""
    if isinstance(connection, asyncpg.Pool):
        async with connection.acquire() as conn, conn.transaction():
            return await record(
                conn,
                notice_id,
                action,
                payload,
                channel=channel,
                receipt_id=receipt_id,
                received_at=received_at,
                problem=problem,
            )
    receipt_id = receipt_id or new_receipt_id()
    typed = None
    if problem is None:
        typed, problem = validate(action, payload)
    if problem is not None:  # our words about the input: one line, nothing PostgreSQL refuses
        problem = "".join(ch if ch.isprintable() else "?" for ch in problem)[:2000]
    fields = payload if isinstance(payload, dict) else {}
    # The id as validated (surrounding whitespace stripped): the one the judgement looks up.
    customer_id = _clean_id(getattr(typed, "customer_id", None) or fields.get("customer_id"))
    sender_key = _clean_id(fields.get("idempotency_key"), 200) if problem is None else None
    # The channel is the caller's, never the payload's: a raw signal cannot pass itself off as a
    # customer's signed link.
    channel = channel if channel in CHANNELS else "api"
    try:
        text = orjson.dumps(payload, default=str).decode()
    except TypeError:  # e.g. an integer beyond 64 bits: the standard library writes anything
        text = json.dumps(payload, default=str)
    key = (await load_keys(connection, [customer_id])).get(customer_id) if customer_id else None
    erased = (
        key is None
        and customer_id is not None
        and bool(await erased_ids(connection, [customer_id]))
    )
    if erased and problem is None and action not in ERASED_OK:
        problem = erased_reason(str(customer_id))
    if action in signals.NOTICE_ACTIONS:  # about the notice, no customer's data
        stored = text
    elif key is not None:
        stored = key.seal(Field.INTAKE_PAYLOAD, text)
    else:  # no key (an unknown id, or erased for good): the free text is not kept
        stored = orjson.dumps(ids_only(payload)).decode()
    stored_text = stored.replace("\x00", "\\u0000")
    row = await connection.fetchrow(
        "INSERT INTO intake (receipt_id, notice_id, action, customer_id, idempotency_key, channel,"
        " payload, received_at, status, reason, handled_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, coalesce($8, clock_timestamp()), $9, $10,"
        "  CASE WHEN $9 = 'rejected' THEN clock_timestamp() END)"
        f" ON CONFLICT DO NOTHING RETURNING {RECEIPT_COLUMNS}",
        receipt_id,
        notice_id,
        _clean_id(action, 40) or "?",
        customer_id,
        sender_key,
        channel,
        stored_text,
        received_at,
        REJECTED if problem else PENDING,
        problem,
    )
    if row is None:  # this receipt id, or this sender key, is already in the intake
        row = await connection.fetchrow(
            f"SELECT {RECEIPT_COLUMNS}, payload FROM intake WHERE receipt_id = $1"
            " OR (notice_id = $2 AND action = $3 AND idempotency_key = $4) ORDER BY seq LIMIT 1",
            receipt_id,
            notice_id,
            action,
            sender_key,
        )
        # A repeat of a sender key is the first receipt; for a customer erased since, the words
        # cannot be compared any more (they are gone): the key alone says it is the same action.
        if (
            row["receipt_id"] == receipt_id
            or erased
            or await _same_action(connection, row, stored_text, action, typed)
        ):
            return _row_receipt(row, repeat=True)
        # The same key for another action: not a repeat, and not to be lost silently either.
        return await record(
            connection,
            notice_id,
            action,
            {k: v for k, v in fields.items() if k != "idempotency_key"},
            channel=channel,
            received_at=received_at,
            problem=f"idempotency key {sender_key!r} was already used for a different"
            f" {action} (receipt {row['receipt_id']}); use a new key",
        )
    receipt = _row_receipt(row)
    if problem:
        await append_rejection(connection, receipt, problem)
    return receipt


async def _same_action(
    connection: asyncpg.Connection, row: asyncpg.Record, stored_text: str, action: str, typed: Any
) -> bool:
    """Whether the receipt already holding this sender key is this very action: the same fields
    once validated (their order, surrounding blanks, spelled-out defaults do not matter). Its
    payload sealed under a key shredded since (the customer was erased) cannot be read back: then
    the sender's key decides, as "duplicate key: ignored" says."""
    if row["payload"] == stored_text:
        return True
    if typed is None or getattr(typed, "customer_id", None) != row["customer_id"]:
        return False
    customer_id = row["customer_id"]
    first = open_payload(row, await load_keys(connection, [customer_id]) if customer_id else {})
    if first is None or first == ERASED:
        return True
    first_typed, _ = validate(action, first)
    return first_typed == typed


async def append_rejection(connection: asyncpg.Connection, receipt: Receipt, reason: str) -> None:
    """The rejection as evidence: ids, the reason in our words, the receipt time; no free text."""
    await eventstore.append(
        connection,
        eventstore.notice_stream(receipt.notice_id),
        f"rejected/{receipt.receipt_id}",
        events.ActionRejected(
            receipt_id=receipt.receipt_id,
            action=receipt.action,
            # Only an id-shaped value: whatever else was sent in its place stays in the intake.
            customer_id=receipt.customer_id
            if receipt.customer_id and _ID.match(receipt.customer_id)
            else None,
            channel=receipt.channel,
            reason=reason,
            received_at=receipt.received_at,
        ),
        receipt.received_at,
    )


async def get(pool: asyncpg.Pool | asyncpg.Connection, receipt_id: str) -> Receipt | None:
    row = await pool.fetchrow(
        f"SELECT {RECEIPT_COLUMNS} FROM intake WHERE receipt_id = $1", receipt_id
    )
    return None if row is None else _row_receipt(row)


async def wait_for(
    pool: asyncpg.Pool, receipt_id: str, timeout: float, poll: float = 0.1
) -> Receipt | None:
    """The receipt once it is judged, or as it stands when ``timeout`` seconds have passed."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout
    while True:
        receipt = await get(pool, receipt_id)
        if receipt is None or not receipt.pending or loop.time() >= give_up:
            return receipt
        await asyncio.sleep(poll)


def open_payload(row: asyncpg.Record, keys: Mapping[str, CustomerKey]) -> Any:
    """A stored payload, unsealed (``None`` when its customer was erased since)."""
    text = row["payload"]
    customer_id = row["customer_id"]
    if is_sealed(text):
        key = keys.get(customer_id) if customer_id else None
        if key is None:
            return None
        text = key.unseal(Field.INTAKE_PAYLOAD, text)
        if text == ERASED:  # sealed under a key deleted since
            return None
    return orjson.loads(text)


async def notices_waiting(pool: asyncpg.Pool, older_than: float, every: float) -> list[str]:
    """Notices with receipts pending for longer than ``older_than`` seconds whose workflow has not
    been woken for them in the last ``every`` seconds (marked woken now)."""
    rows = await pool.fetch(
        "WITH due AS (SELECT receipt_id FROM intake WHERE (status = 'pending' OR mail_due IS NOT"
        " NULL) AND received_at < clock_timestamp() - make_interval(secs => $1)"
        " AND (kicked_at IS NULL OR kicked_at < clock_timestamp() - make_interval(secs => $2))"
        " FOR UPDATE SKIP LOCKED)"
        " UPDATE intake i SET kicked_at = clock_timestamp() FROM due"
        " WHERE i.receipt_id = due.receipt_id RETURNING i.notice_id",
        older_than,
        every,
    )
    return sorted({row["notice_id"] for row in rows})
