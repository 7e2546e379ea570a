"""Replies kept, rejected and classified (table ``replies``, migration 021).

A reply mail for a known (notice, customer) is kept sealed with the customer's key — sender,
subject, its own words (quoted text and signature stripped) and the whole text — with the moment
the inbound endpoint accepted it (``received_at``). It is no action yet: nothing is acted on until
ops classify it (:func:`classify`): an objection or an opt-in becomes an action in the intake of
record with the mail's receipt time as its receipt time (channel ``reply``), so a reply before the
deadline is timely even when classified after it; a question is marked handled. Only when
``NOTICEFLOW_REPLY_AUTO_ACT`` is on does an exact "opt in" / "object" from one of the customer's
listed contacts act at once (:func:`receive`).

A reply that cannot be kept (the customer was erased, its text cannot be read) is a recorded
rejection: ids, the receipt time and our reason, no free text.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import structlog

from noticeflow import intake
from noticeflow.crypto import (
    ERASED,
    CustomerKey,
    Field,
    erased_ids,
    is_sealed,
    load_keys,
    open_sealed,
)
from noticeflow.domain.errors import InputError
from noticeflow.domain.replies import (
    ACTIONS,
    Classification,
    applicable,
    exact_command,
    opt_in_refusal,
    strip_reply,
)
from noticeflow.domain.text import FREE_TEXT_MAX, SINGLE_LINE_MAX

log = structlog.get_logger(__name__)

NEW, CLASSIFIED, REJECTED = "new", "classified", "rejected"
NO_TEXT = "(the reply has no text of its own)"
BY_REPLY = "customer (by reply)"


class ReplyField:
    """Where a reply's personal data is sealed (the associated data of ``CustomerKey.seal``)."""

    SENDER = "replies.sender"
    SUBJECT = "replies.subject"
    BODY = "replies.body"
    FULL_TEXT = "replies.full_text"
    CLASSIFIED_BY = "replies.classified_by"  # only rows classified before it was kept plain


@dataclass(frozen=True)
class IncomingReply:
    """One mail as the inbound endpoint read it (plaintext, in memory only)."""

    sender: str  # the From header's address ("" when there is none)
    envelope_from: str  # MAIL FROM
    subject: str
    text: str  # the text part, decoded
    message_id: str  # the Message-ID header ("" when there is none)
    size_bytes: int
    date: str = ""  # the Date header ("" when there is none)
    auto_submitted: bool = False  # Auto-Submitted other than "no": an automatic answer


@dataclass(frozen=True)
class Reply:
    reply_id: str
    notice_id: str | None
    customer_id: str | None
    received_at: datetime
    status: str
    reason: str | None
    sender: str | None
    subject: str | None
    body: str | None
    full_text: str | None
    contact_match: bool
    classified_as: str | None
    classified_by: str | None
    classified_at: datetime | None
    receipt_id: str | None
    repeat: bool = False  # the same mail (Message-ID) delivered again: the first reply
    # The intake receipt's outcome: a classification whose receipt was rejected does not bind
    # (the reply is ``new`` again, the rejection shown, and may be classified anew).
    receipt_status: str | None = None
    receipt_reason: str | None = None
    customer_erased: bool = False  # erased since: only "question" (handled) applies
    # What can apply to this customer on this notice (the dashboard offers only these).
    applicable: tuple[str, ...] = ()

    @property
    def rejected_classification(self) -> bool:
        """Classified once, but its receipt was rejected: it did not bind."""
        return self.status == NEW and self.receipt_status == intake.REJECTED

    def as_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


class NotApplicable(InputError):
    """A classification that cannot apply to this reply (its customer's terms on its notice)."""


def new_reply_id() -> str:
    return "rp-" + secrets.token_hex(10)


_COLUMNS = (
    "reply_id, notice_id, customer_id, received_at, status, reason, sender, subject, body,"
    " full_text, contact_match, classified_as, classified_by, classified_at, receipt_id"
)


# A reply as read: a classification whose intake receipt was rejected does not bind, so the reply
# reads as new again (the columns keep what was tried, its receipt shows why it failed); with the
# notice's and the customer's terms that say which classifications can apply.
_EFFECTIVE = (
    "CASE WHEN r.status = 'classified' AND i.status = 'rejected' THEN 'new' ELSE r.status END"
)
_SELECT = (
    "SELECT "
    + ", ".join(f"r.{c.strip()}" for c in _COLUMNS.split(",") if c.strip() != "status")
    + f", {_EFFECTIVE} AS status, r.status AS stored_status, i.status AS receipt_status,"
    " i.reason AS receipt_reason, (n.spec->>'opt_in')::boolean AS opt_in_notice,"
    " rc.authorisation AS authorisation,"
    " EXISTS (SELECT 1 FROM customer_erasures e WHERE e.customer_id = r.customer_id) AS erased"
    " FROM replies r LEFT JOIN intake i ON i.receipt_id = r.receipt_id"
    " LEFT JOIN notices n ON n.notice_id = r.notice_id"
    " LEFT JOIN recipients rc ON rc.notice_id = r.notice_id AND rc.customer_id = r.customer_id"
)


def _reply(row: asyncpg.Record, keys: dict[str, CustomerKey], repeat: bool = False) -> Reply:
    key = keys.get(row["customer_id"]) if row["customer_id"] else None
    fields = set(row.keys())
    erased = bool(row["erased"]) if "erased" in fields else False
    status = row["status"]

    def opened(column: str, field: str) -> str | None:
        value = row[column]
        return None if value is None else open_sealed(key, field, value)

    return Reply(
        reply_id=row["reply_id"],
        notice_id=row["notice_id"],
        customer_id=row["customer_id"],
        received_at=row["received_at"],
        status=row["status"],
        reason=row["reason"],
        sender=opened("sender", ReplyField.SENDER),
        subject=opened("subject", ReplyField.SUBJECT),
        body=opened("body", ReplyField.BODY),
        full_text=opened("full_text", ReplyField.FULL_TEXT),
        contact_match=row["contact_match"],
        classified_as=row["classified_as"],
        # The vendor's user id, in clear (rows classified before it was kept so: sealed).
        classified_by=opened("classified_by", ReplyField.CLASSIFIED_BY),
        classified_at=row["classified_at"],
        receipt_id=row["receipt_id"],
        repeat=repeat,
        receipt_status=row["receipt_status"] if "receipt_status" in fields else None,
        receipt_reason=row["receipt_reason"] if "receipt_reason" in fields else None,
        customer_erased=erased,
        applicable=tuple(
            c.value
            for c in applicable(
                row["opt_in_notice"] if "opt_in_notice" in fields else None,
                row["authorisation"] if "authorisation" in fields else None,
                row["customer_id"] or "",
                erased=erased,
            )
        )
        if status == NEW
        else (),
    )


def _printable(text: str, limit: int) -> str:
    """Text fit to keep and to become an action's free text: no control characters but line
    breaks and tabs, at most ``limit`` characters."""
    cleaned = "".join(ch for ch in text if ch in "\n\t" or ch.isprintable())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


async def record_rejection(
    connection: asyncpg.Connection | asyncpg.Pool,
    notice_id: str | None,
    customer_id: str | None,
    reason: str,
    size_bytes: int | None = None,
) -> Reply:
    """A reply that is not kept: ids, the receipt time and our reason (no free text)."""
    row = await connection.fetchrow(
        "INSERT INTO replies (reply_id, notice_id, customer_id, status, reason, size_bytes)"
        f" VALUES ($1, $2, $3, 'rejected', $4, $5) RETURNING {_COLUMNS}",
        new_reply_id(),
        notice_id,
        customer_id,
        reason,
        size_bytes,
    )
    log.info("reply rejected", reply_id=row["reply_id"], notice_id=notice_id, reason=reason)
    return _reply(row, {})


def _contacts_match(rows: list[asyncpg.Record], key: CustomerKey, *addresses: str) -> bool:
    """Whether every given address is one of the customer's contacts for the notice."""
    listed = {key.unseal(Field.CONTACT_EMAIL, row["email"]).strip().lower() for row in rows}
    listed.discard(ERASED)
    return all(a.strip().lower() in listed for a in addresses) and bool(addresses)


def _message_ref(key: CustomerKey, notice_id: str, mail: IncomingReply) -> str:
    """What makes the same mail delivered twice (a retry after a lost 250) one reply: a keyed
    HMAC (the customer's key: no plain hash of personal data) of its Message-ID, or, for a mail
    without one, of its From, Date, Subject and text. Two mails without a Message-ID alike in all
    four (the same words from the same sender sent the same second) are taken for one."""
    message_id = mail.message_id.strip()
    if message_id:
        return key.ident("reply-message-id", notice_id, message_id)[:32]
    return key.ident(
        "reply-content", notice_id, mail.sender.strip().lower(), mail.date.strip(),
        mail.subject, mail.text,
    )[:32]  # fmt: skip


async def receive(
    pool: asyncpg.Pool,
    notice_id: str,
    customer_id: str,
    mail: IncomingReply,
    *,
    auto_act: bool = False,
) -> Reply:
    """Keep one reply for (notice, customer), sealed; a rejection when the customer was erased.
    With ``auto_act``, an exact command from a listed contact is classified at once ("auto")."""
    async with pool.acquire() as connection, connection.transaction():
        keys = await load_keys(connection, [customer_id])
        key = keys.get(customer_id)
        if key is None:
            erased = bool(await erased_ids(connection, [customer_id]))
            return await record_rejection(
                connection,
                notice_id,
                customer_id,
                intake.erased_reason(customer_id)
                if erased
                else f"no key for customer {customer_id!r}: the reply cannot be kept sealed",
                mail.size_bytes,
            )
        message_ref = _message_ref(key, notice_id, mail)
        contacts = await connection.fetch(
            "SELECT email FROM recipient_contacts WHERE notice_id = $1 AND customer_id = $2",
            notice_id,
            customer_id,
        )
        matched = bool(mail.sender) and _contacts_match(
            contacts, key, mail.sender, mail.envelope_from
        )
        full_text = _printable(mail.text, 2 * FREE_TEXT_MAX)
        body = strip_reply(full_text)

        def seal(field: str, value: str) -> str:
            return key.seal(field, value)

        row = await connection.fetchrow(
            "INSERT INTO replies (reply_id, notice_id, customer_id, status, message_ref,"
            " size_bytes, sender, subject, body, full_text, contact_match)"
            " VALUES ($1, $2, $3, 'new', $4, $5, $6, $7, $8, $9, $10)"
            " ON CONFLICT (notice_id, customer_id, message_ref) WHERE message_ref IS NOT NULL"
            f" DO NOTHING RETURNING {_COLUMNS}",
            new_reply_id(),
            notice_id,
            customer_id,
            message_ref,
            mail.size_bytes,
            seal(ReplyField.SENDER, _printable(mail.sender, 500)),
            seal(ReplyField.SUBJECT, _printable(mail.subject, 1000)),
            seal(ReplyField.BODY, body),
            seal(ReplyField.FULL_TEXT, full_text),
            matched,
        )
        if row is None:  # the same mail delivered again (a retry after a lost 250)
            row = await connection.fetchrow(
                f"SELECT {_COLUMNS} FROM replies WHERE notice_id = $1 AND customer_id = $2"
                " AND message_ref = $3",
                notice_id,
                customer_id,
                message_ref,
            )
            return _reply(row, keys, repeat=True)
        reply = _reply(row, keys)
        command = exact_command(full_text) if auto_act else None
        if command is not None and matched and not mail.auto_submitted:
            reply, receipt = await _classify(connection, reply, key, command, "auto")
            log.info(
                "reply acted on",
                reply_id=reply.reply_id,
                notice_id=notice_id,
                customer_id=customer_id,
                classified_as=command.value,
                receipt_id=receipt.receipt_id if receipt else None,
            )
        else:
            log.info(
                "reply received", reply_id=reply.reply_id, notice_id=notice_id,
                customer_id=customer_id,
            )  # fmt: skip
        return reply


async def _read(
    connection: asyncpg.Pool | asyncpg.Connection,
    reply_id: str,
    keys: dict[str, CustomerKey] | None = None,
    *,
    lock: bool = False,
) -> Reply | None:
    row = await connection.fetchrow(
        f"{_SELECT} WHERE r.reply_id = $1" + (" FOR UPDATE OF r" if lock else ""), reply_id
    )
    if row is None:
        return None
    if keys is None:
        keys = await load_keys(connection, [row["customer_id"]]) if row["customer_id"] else {}
    return _reply(row, keys)


async def get(pool: asyncpg.Pool | asyncpg.Connection, reply_id: str) -> Reply | None:
    return await _read(pool, reply_id)


async def listing(
    pool: asyncpg.Pool,
    *,
    notice_id: str | None = None,
    status: str | None = None,
    limit: int = 100,
) -> list[Reply]:
    """Replies, newest first (of one notice, of one status, when given), opened. A reply whose
    classification's receipt was rejected is ``new`` again."""
    rows = await pool.fetch(
        f"{_SELECT} WHERE ($1::text IS NULL OR r.notice_id = $1)"
        f" AND ($2::text IS NULL OR {_EFFECTIVE} = $2) ORDER BY r.seq DESC LIMIT $3",
        notice_id,
        status,
        limit,
    )
    ids = {row["customer_id"] for row in rows if row["customer_id"]}
    keys = await load_keys(pool, ids) if ids else {}
    return [_reply(row, keys) for row in rows]


def by_problem(by: str) -> str | None:
    """What is wrong with who classifies (a vendor's user id), or None."""
    who = by.strip()
    if not who or not who.isprintable() or len(who) > SINGLE_LINE_MAX or is_sealed(who):
        return (
            "who classifies (by) must be a user id: one line of printable characters (no control"
            f" characters, no line breaks), at most {SINGLE_LINE_MAX}"
        )
    return None


async def classify(
    pool: asyncpg.Pool, reply_id: str, kind: str, by: str
) -> tuple[Reply, intake.Receipt | None]:
    """Ops' classification of one reply. An objection or opt-in is written to the intake of record
    with the mail's receipt time (the caller hands the receipt over to the workflow); a question
    is marked handled. The same classification again returns the first one's receipt; another one
    for a reply already classified, or any for a rejected reply, is an InputError.

    A classification whose receipt the intake rejected does not bind: the reply is new again and
    may be classified anew, again with the mail's receipt time. An opt-in that cannot apply (an
    ordinary notice, a customer with general authorisation) is refused before anything is
    recorded (:class:`NotApplicable`); so is anything but a question for a customer erased since
    (a question marks its reply handled, so it leaves the queue)."""
    problems = []
    try:
        classification = Classification(kind)
    except ValueError:
        problems.append(f"unknown classification {kind[:40]!r}: use objection, opt_in or question")
    who = by.strip()
    problem = by_problem(by)
    if problem:
        problems.append(problem)
    if problems:
        raise InputError("; ".join(problems))
    async with pool.acquire() as connection, connection.transaction():
        row = await connection.fetchrow(
            f"{_SELECT} WHERE r.reply_id = $1 FOR UPDATE OF r", reply_id
        )
        if row is None:
            raise InputError(f"no reply {reply_id[:40]!r}")
        if row["status"] == REJECTED:
            raise InputError(
                f"reply {reply_id} was rejected ({row['reason']}): nothing to classify"
            )
        keys = await load_keys(connection, [row["customer_id"]])
        reply = _reply(row, keys)
        if row["status"] == CLASSIFIED:
            if row["classified_as"] != classification.value:
                raise InputError(
                    f"reply {reply_id} is already classified as {row['classified_as']}"
                    f" (receipt {row['receipt_id'] or 'none'}); it cannot also be classified as"
                    f" {classification.value}"
                )
            receipt = await intake.get(connection, row["receipt_id"]) if row["receipt_id"] else None
            return reply, receipt
        key = keys.get(row["customer_id"])
        if key is None:
            if classification is not Classification.question:
                raise NotApplicable(
                    intake.erased_reason(row["customer_id"])
                    + "; its reply can only be marked handled (question)"
                )
        elif classification is Classification.opt_in:
            refusal = opt_in_refusal(row["opt_in_notice"], row["authorisation"], row["customer_id"])
            if refusal:
                raise NotApplicable(
                    f"reply {reply_id} cannot be an opt-in: {refusal} (classify it as an objection"
                    " or a question)"
                )
        return await _classify(connection, reply, key, classification, who)


async def _classify(
    connection: asyncpg.Connection,
    reply: Reply,
    key: CustomerKey | None,
    classification: Classification,
    by: str,
) -> tuple[Reply, intake.Receipt | None]:
    assert reply.notice_id is not None and reply.customer_id is not None
    receipt = None
    action = ACTIONS.get(classification)
    if action is not None:  # never for a customer erased since (refused before)
        who = reply.sender or ""
        payload: dict[str, Any] = {
            "customer_id": reply.customer_id,
            "by": who if who and who.isprintable() and len(who) <= SINGLE_LINE_MAX else BY_REPLY,
            # The reply's id as the sender key: a second click is the same receipt.
            "idempotency_key": f"reply:{reply.reply_id}",
        }
        if action == "object":
            words = (reply.body or "").strip() or NO_TEXT
            payload["reason"] = _printable(words, FREE_TEXT_MAX)
        receipt = await intake.record(
            connection,
            reply.notice_id,
            action,
            payload,
            channel="reply",
            received_at=reply.received_at,
        )
    await connection.execute(
        "UPDATE replies SET status = 'classified', classified_as = $2, classified_by = $3,"
        " classified_at = clock_timestamp(), receipt_id = $4 WHERE reply_id = $1",
        reply.reply_id,
        classification.value,
        by,  # the vendor's user id (or "auto"), kept in clear: erasing the customer keeps it
        receipt.receipt_id if receipt else None,
    )
    found = await _read(connection, reply.reply_id, {key.customer_id: key} if key else {})
    assert found is not None
    return found, receipt
