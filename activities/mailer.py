"""Mail to one customer's contacts through the delivery ledger.

The ledger row is written *before* the SMTP conversation (status ``sending``) and finished after it,
so a retried activity never mails a contact twice unless the earlier outcome is unknown; then the
Message-ID is the same and receivers can de-duplicate. The ledger is read and written in bulk, a
batch of customers at a time (see :meth:`Mailer.mail_many`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog

from noticeflow.crypto import blind_index, seal
from noticeflow.mail import (
    MailRenderer,
    SendStatus,
    SmtpSession,
    SmtpTarget,
    TemporarySmtpError,
    build_message,
    message_id,
)


@dataclass(frozen=True)
class ContactOutcome:
    position: int
    message_id: str
    status: str
    reply: str
    at: datetime


@dataclass(frozen=True)
class Recipient:
    customer_id: str
    name: str
    timezone: str
    contacts: list[tuple[int, str]]  # (position, address) — plaintext, in memory only
    key: bytes  # the customer's key: addresses are stored sealed, ledger rows by blind index


log = structlog.get_logger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


class RateLimiter:
    """At most ``rate`` messages a second across every connection of this worker (token bucket)."""

    def __init__(self, rate: float | None, burst: int = 10) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.rate:
            return
        async with self._lock:
            while True:
                now = time.monotonic()
                self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self.rate)


@dataclass(frozen=True)
class MailJob:
    """One customer to mail, with the template context for that customer."""

    recipient: Recipient
    context: dict[str, Any]


@dataclass(frozen=True)
class _Planned:
    """One contact's message, decided before any mail of the batch is sent."""

    customer_id: str
    position: int
    address: str
    ref: str  # the ledger key: blind index of the address
    msg_id: str
    content: tuple[str, str, str]  # subject, text, html


@dataclass(frozen=True)
class _Finished:
    planned: _Planned
    status: str  # accepted | failed (5xx) | deferred (4xx after retries: not accepted, known)
    reply: str
    at: datetime


SMTP_TRIES = 3  # per message, for 4xx replies and dropped connections, before the activity retries
SMTP_BACKOFF = 0.5  # seconds before the second try; doubles each try
# Outcomes are written to the ledger in one statement per FLUSH_EVERY of them, or as soon as the
# oldest unwritten one is FLUSH_AFTER seconds old: a crash leaves at most that much mail in the
# "outcome unknown" state (mailed again, under the same Message-ID), whatever the sending rate.
FLUSH_EVERY = 25
FLUSH_AFTER = 0.25


class Mailer:
    def __init__(
        self,
        target: SmtpTarget,
        mail_from: str,
        renderer: MailRenderer,
        concurrency: int = 4,
        rate: float | None = None,
    ) -> None:
        self.target = target
        self.mail_from = mail_from
        self.renderer = renderer
        self.concurrency = concurrency
        self.limiter = RateLimiter(rate)

    def session(self) -> SmtpSession:
        return SmtpSession(self.target)

    async def mail_customer(
        self,
        pool: asyncpg.Pool,
        notice_id: str,
        recipient: Recipient,
        kind: str,
        template: str,
        context: dict[str, Any],
    ) -> list[ContactOutcome]:
        """Mail every contact of one customer; a 5xx for one contact does not stop the others."""
        outcomes = await self.mail_many(
            pool, notice_id, kind, template, [MailJob(recipient, context)]
        )
        return outcomes.get(recipient.customer_id, [])

    async def mail_many(
        self,
        pool: asyncpg.Pool,
        notice_id: str,
        kind: str,
        template: str,
        jobs: Sequence[MailJob],
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, list[ContactOutcome]]:
        """Mail every contact of many customers through the ledger, over a few SMTP connections.

        The ledger is read once and every contact still to mail is marked ``sending`` in one
        statement *before* the first message goes out; outcomes are written back in groups
        (FLUSH_EVERY, FLUSH_AFTER). A contact whose row says accepted or failed is never mailed
        again; one left at ``sending`` (the outcome is unknown: a crash came between the server's
        reply and the ledger write) is mailed again with the same Message-ID. Returns outcomes
        per customer, in contact order; raises TemporarySmtpError (after the others were tried
        and every known outcome was written) when a contact kept getting 4xx replies or dropped
        connections.
        """
        ledger = await _read_ledger(
            pool, notice_id, kind, [job.recipient.customer_id for job in jobs]
        )
        outcomes, planned = self._plan(notice_id, kind, template, jobs, ledger)
        keys = {job.recipient.customer_id: job.recipient.key for job in jobs}
        await _mark_sending(pool, notice_id, kind, planned, keys)
        finished: list[_Finished] = []
        try:
            await self._send(pool, notice_id, kind, planned, progress, finished)
        except asyncio.CancelledError:
            raise MailingInterrupted(_by_customer(outcomes, finished)) from None
        return _by_customer(outcomes, finished)

    def _plan(
        self,
        notice_id: str,
        kind: str,
        template: str,
        jobs: Sequence[MailJob],
        ledger: dict[tuple[str, str], asyncpg.Record],
    ) -> tuple[dict[str, dict[int, ContactOutcome]], list[_Planned]]:
        """Render each customer's mail once; split its contacts into those the ledger already
        finished (their outcomes) and those to mail now."""
        outcomes: dict[str, dict[int, ContactOutcome]] = {}
        planned: list[_Planned] = []
        for job in jobs:
            recipient = job.recipient
            context = {
                **job.context,
                "customer_name": recipient.name,
                "customer_id": recipient.customer_id,
            }
            content = self.renderer.render(template, context)
            seen: set[str] = set()
            for position, address in recipient.contacts:
                ref = blind_index(recipient.key, address)
                if ref in seen:  # the same mailbox listed twice: one ledger row, one mail
                    continue
                seen.add(ref)
                msg_id = message_id(notice_id, recipient.customer_id, address, kind, self.mail_from)
                done = ledger.get((recipient.customer_id, ref))
                if done is not None and done["status"] in FINAL:
                    outcomes.setdefault(recipient.customer_id, {})[position] = ContactOutcome(
                        position, msg_id, done["status"], done["smtp_reply"], done["finished_at"]
                    )
                    continue
                planned.append(_Planned(
                    recipient.customer_id, position, address, ref, msg_id, content
                ))  # fmt: skip
        return outcomes, planned

    async def _send(
        self,
        pool: asyncpg.Pool,
        notice_id: str,
        kind: str,
        planned: list[_Planned],
        progress: Callable[[int], None] | None,
        finished: list[_Finished],
    ) -> None:
        """Send everything planned; ``finished`` collects the outcomes (the caller keeps them,
        so that a cancelled send still knows what went out)."""
        if not planned:
            return
        queue = deque(planned)
        writer = _OutcomeWriter(pool, notice_id, kind)

        async def connection_worker() -> None:
            async with self.session() as session:
                while queue:
                    item = queue.popleft()
                    outcome = await self._send_one(session, item)
                    finished.append(outcome)
                    writer.add(outcome)
                    if progress is not None:
                        progress(len(finished))
                    if writer.due():
                        await writer.flush()
                    if outcome.status == "deferred":
                        raise TemporarySmtpError(outcome.reply)

        connections = min(self.concurrency, len(planned))
        try:
            errors = await asyncio.gather(
                *(connection_worker() for _ in range(connections)), return_exceptions=True
            )
        finally:  # cancelled too (worker shutdown): what is known must reach the ledger
            await writer.flush()
        for error in errors:
            if isinstance(error, BaseException):
                raise error

    async def _send_one(self, session: SmtpSession, item: _Planned) -> _Finished:
        """One message, with a few tries for 4xx replies and dropped connections."""
        subject, text, html = item.content
        mail = build_message(
            mail_from=self.mail_from,
            to=item.address,
            subject=subject,
            text=text,
            html=html,
            msg_id=item.msg_id,
            date=utcnow(),
        )
        delay = SMTP_BACKOFF
        for attempt in range(1, SMTP_TRIES + 1):
            await self.limiter.wait()
            try:
                result = await session.send(mail)
            except TemporarySmtpError as error:
                # Customer id and contact position only: addresses never go to logs (rule 13).
                log.warning(
                    "mail deferred",
                    customer_id=item.customer_id,
                    contact=item.position,
                    attempt=attempt,
                    reply=str(error)[:120],
                )
                if attempt == SMTP_TRIES:
                    return _Finished(item, "deferred", str(error), utcnow())
                await asyncio.sleep(delay)
                delay *= 2
                continue
            if result.status is not SendStatus.accepted:
                log.info(
                    "mail refused",
                    customer_id=item.customer_id,
                    contact=item.position,
                    reply=result.reply[:120],
                )
            return _Finished(item, result.status.value, result.reply, utcnow())
        raise AssertionError("unreachable")


FINAL = {SendStatus.accepted.value, SendStatus.failed.value}


class _OutcomeWriter:
    """Collects outcomes and writes them to the ledger in groups (see FLUSH_EVERY)."""

    def __init__(self, pool: asyncpg.Pool, notice_id: str, kind: str) -> None:
        self.pool, self.notice_id, self.kind = pool, notice_id, kind
        self._unwritten: list[_Finished] = []
        self._oldest = 0.0

    def add(self, outcome: _Finished) -> None:
        if not self._unwritten:
            self._oldest = time.monotonic()
        self._unwritten.append(outcome)

    def due(self) -> bool:
        return len(self._unwritten) >= FLUSH_EVERY or (
            bool(self._unwritten) and time.monotonic() - self._oldest >= FLUSH_AFTER
        )

    async def flush(self) -> None:
        group, self._unwritten = self._unwritten, []  # taken before the await: no double write
        await _write_outcomes(self.pool, self.notice_id, self.kind, group)


class MailingInterrupted(asyncio.CancelledError):
    """Mailing was cancelled part-way (the notice was cancelled, the worker is stopping).

    ``outcomes`` holds every outcome known when it stopped (all of them already in the ledger),
    so the caller can record the customers who were reached before it lets the cancel through.
    """

    def __init__(self, outcomes: dict[str, list[ContactOutcome]]) -> None:
        super().__init__("mailing interrupted")
        self.outcomes = outcomes


def _by_customer(
    known: dict[str, dict[int, ContactOutcome]], finished: list[_Finished]
) -> dict[str, list[ContactOutcome]]:
    """Outcomes per customer in contact order: those the ledger already had, then this run's
    (a deferred contact has no outcome yet)."""
    merged = {customer_id: dict(by_position) for customer_id, by_position in known.items()}
    for item in finished:
        if item.status == "deferred":
            continue
        planned = item.planned
        merged.setdefault(planned.customer_id, {})[planned.position] = ContactOutcome(
            planned.position, planned.msg_id, item.status, item.reply, item.at
        )
    return {
        customer_id: [by_position[p] for p in sorted(by_position)]
        for customer_id, by_position in merged.items()
    }


async def _read_ledger(
    pool: asyncpg.Pool, notice_id: str, kind: str, customer_ids: list[str]
) -> dict[tuple[str, str], asyncpg.Record]:
    rows = await pool.fetch(
        "SELECT customer_id, contact_ref, status, smtp_reply, finished_at FROM deliveries"
        " WHERE notice_id = $1 AND kind = $2 AND customer_id = ANY($3::text[])",
        notice_id,
        kind,
        customer_ids,
    )
    return {(row["customer_id"], row["contact_ref"]): row for row in rows}


async def _mark_sending(
    pool: asyncpg.Pool,
    notice_id: str,
    kind: str,
    planned: list[_Planned],
    keys: dict[str, bytes],
) -> None:
    """Every contact about to be mailed gets its ledger row (or another attempt) first."""
    if not planned:
        return
    await pool.execute(
        "INSERT INTO deliveries (notice_id, customer_id, contact_ref, kind, message_id, status,"
        " first_attempt_at, email)"
        " SELECT $1, u.customer_id, u.ref, $2, u.message_id, 'sending', $3, u.email"
        " FROM unnest($4::text[], $5::text[], $6::text[], $7::text[])"
        "   AS u(customer_id, ref, message_id, email)"
        " ON CONFLICT (notice_id, customer_id, contact_ref, kind)"
        " DO UPDATE SET attempts = deliveries.attempts + 1, status = 'sending'",
        notice_id,
        kind,
        utcnow(),
        [item.customer_id for item in planned],
        [item.ref for item in planned],
        [item.msg_id for item in planned],
        [seal(keys[item.customer_id], item.customer_id, item.address) for item in planned],
    )


async def _write_outcomes(
    pool: asyncpg.Pool, notice_id: str, kind: str, finished: list[_Finished]
) -> None:
    if not finished:
        return
    await pool.execute(
        "UPDATE deliveries d SET status = u.status, smtp_reply = u.reply,"
        " finished_at = CASE WHEN u.status = 'deferred' THEN NULL ELSE u.at END"
        " FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[])"
        "   AS u(customer_id, ref, status, reply, at)"
        " WHERE d.notice_id = $1 AND d.kind = $2 AND d.customer_id = u.customer_id"
        "   AND d.contact_ref = u.ref",
        notice_id,
        kind,
        [item.planned.customer_id for item in finished],
        [item.planned.ref for item in finished],
        [item.status for item in finished],
        [item.reply for item in finished],
        [item.at for item in finished],
    )


def accepted_at(outcomes: list[ContactOutcome]) -> datetime | None:
    """When the first contact's server accepted the message: the customer's clock starts here."""
    times = [o.at for o in outcomes if o.status == SendStatus.accepted.value]
    return min(times) if times else None
