"""Mail to one customer's contacts through the delivery ledger.

The ledger row is written *before* the SMTP conversation (status ``sending``) and finished after it,
so a retried activity never mails a contact twice unless the earlier outcome is unknown; then the
Message-ID is the same and receivers can de-duplicate.
"""

from __future__ import annotations

import asyncio
import time
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
        session: SmtpSession,
        notice_id: str,
        recipient: Recipient,
        kind: str,
        template: str,
        context: dict[str, Any],
    ) -> list[ContactOutcome]:
        """Mail every contact of one customer; a 5xx for one contact does not stop the others."""
        context = {**context, "customer_name": recipient.name, "customer_id": recipient.customer_id}
        subject, text, html = self.renderer.render(template, context)
        outcomes = []
        for position, address in recipient.contacts:
            outcomes.append(
                await self._mail_contact(
                    pool,
                    session,
                    notice_id,
                    recipient,
                    position,
                    address,
                    kind,
                    (subject, text, html),
                )
            )
        return outcomes

    async def _mail_contact(
        self,
        pool: asyncpg.Pool,
        session: SmtpSession,
        notice_id: str,
        recipient: Recipient,
        position: int,
        address: str,
        kind: str,
        content: tuple[str, str, str],
    ) -> ContactOutcome:
        customer_id = recipient.customer_id
        msg_id = message_id(notice_id, customer_id, address, kind, self.mail_from)
        key = (notice_id, customer_id, blind_index(recipient.key, address), kind)
        done = await pool.fetchrow(
            "SELECT status, smtp_reply, finished_at FROM deliveries WHERE notice_id = $1"
            " AND customer_id = $2 AND contact_ref = $3 AND kind = $4 AND status <> 'sending'",
            *key,
        )
        if done is not None:
            return ContactOutcome(
                position, msg_id, done["status"], done["smtp_reply"], done["finished_at"]
            )
        await pool.execute(
            "INSERT INTO deliveries (notice_id, customer_id, contact_ref, kind, message_id, status,"
            " first_attempt_at, email) VALUES ($1, $2, $3, $4, $5, 'sending', $6, $7)"
            " ON CONFLICT (notice_id, customer_id, contact_ref, kind)"
            " DO UPDATE SET attempts = deliveries.attempts + 1",
            *key,
            msg_id,
            utcnow(),
            seal(recipient.key, customer_id, address),
        )
        subject, text, html = content
        message = build_message(
            mail_from=self.mail_from,
            to=address,
            subject=subject,
            text=text,
            html=html,
            msg_id=msg_id,
            date=utcnow(),
        )
        await self.limiter.wait()
        result = await session.send(message)
        finished = utcnow()
        # Customer id and contact position only: addresses never go to logs (rule 13).
        log.info(
            "mail",
            customer_id=customer_id,
            contact=position,
            kind=kind,
            status=result.status.value,
            message_id=msg_id,
            reply=result.reply[:80],
        )
        await pool.execute(
            "UPDATE deliveries SET status = $5, smtp_reply = $6, finished_at = $7"
            " WHERE notice_id = $1 AND customer_id = $2 AND contact_ref = $3 AND kind = $4",
            *key,
            result.status.value,
            result.reply,
            finished,
        )
        return ContactOutcome(position, msg_id, result.status.value, result.reply, finished)


def accepted_at(outcomes: list[ContactOutcome]) -> datetime | None:
    """When the first contact's server accepted the message: the customer's clock starts here."""
    times = [o.at for o in outcomes if o.status == SendStatus.accepted.value]
    return min(times) if times else None
