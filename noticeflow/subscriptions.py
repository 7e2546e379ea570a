"""E-mail subscriptions to the public sub-processor list (issue 14 item 2, docs/public.md).

* **Subscribers** (:func:`subscribe`): anyone, from the public page, with double opt-in. The
  address is stored sealed with a key of the subscriber's own (a root key wrapped by the
  key-encryption key, as customer keys are: :mod:`noticeflow.crypto`), and found again by a keyed
  hash (HMAC under a key derived from the key-encryption key), so subscribing twice finds the
  first subscription and says nothing about it. Confirmation mails to one address are bounded
  (:data:`CONFIRM_MAX`, at least :data:`CONFIRM_INTERVAL` apart); an unconfirmed subscription is
  erased after :data:`PENDING_KEPT`.
* **Links** (:class:`Tokens`) carry the subscriber's random id only, signed with the link key
  (itsdangerous, a salt of their own): ``/subscribe/confirm/<token>`` (expires after
  :data:`CONFIRM_VALID`) and ``/unsubscribe/<token>`` (RFC 8058 one-click; does not expire).
* **Erasure** (:func:`erase`): deletes the subscriber's key and blanks the sealed address and its
  hash; unsubscribing erases. What is left is an id, a status and dates.
* **The outbox** (:func:`fill_outbox`): follows the event store in its global order ``(tx_id,
  position)`` from its own checkpoint (``projection_checkpoints`` row ``subscriptions``), as the
  webhooks' outbox does, and writes one ``subscriber_mails`` row per confirmed subscriber for a
  notice's first audience snapshot (mailing started: ``sent``), and after that for each
  postponement and its cancellation, in the transaction that moves the checkpoint.
* **Delivery** (:class:`SubscriberMailer`): claims due rows (a lease, ``FOR UPDATE SKIP LOCKED``:
  several workers never send one row at once), sends each with a Message-ID that is a hash of
  (subscriber, mail key) — a retry is recognisable — and records the outcome: a temporary
  failure is retried with backoff on that row only (1 min doubling, at most an hour apart, given
  up after a day), a permanent one fails that row, and so does any other error building or
  sending that one mail (recorded with the error's type); no row ever holds another, and nothing
  here touches a notice (it runs beside the notices, in the worker, on its own SMTP connection).

No address is ever logged, put in a URL, a Temporal payload or a metric: ids only.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import enum
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import structlog
from itsdangerous import BadData, URLSafeSerializer

from noticeflow import crypto, keyring, public_list
from noticeflow.contracts import notice_id_of
from noticeflow.domain.errors import InputError
from noticeflow.domain.public_list import KIND_WORDS, Change, PublicList, change_words
from noticeflow.domain.subscriptions import normalise_address
from noticeflow.follower import EVENTS_CHANNEL, follow
from noticeflow.keyring import PUBLIC_KEYS
from noticeflow.mail import (
    MailRenderer,
    OutgoingMail,
    SendStatus,
    SmtpSession,
    SmtpTarget,
    SmtpUnavailable,
    TemporarySmtpError,
)
from noticeflow.mailer import RelayPace

log = structlog.get_logger(__name__)

SALT = "noticeflow.subscription-link.v1"
TOKEN_MAX = 300
_TOKEN_SHAPE = re.compile(r"^\.?[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+$")
ID_SHAPE = re.compile(r"^sub_[0-9a-f]{16}$")
CONFIRM_VALID = timedelta(days=2)
PENDING_KEPT = timedelta(days=7)  # an unconfirmed subscription is erased after this
CONFIRM_INTERVAL = timedelta(minutes=10)  # at most one confirmation mail per address per ...
CONFIRM_MAX = 3  # ... and at most this many per subscription (then it expires, unconfirmed)
RETRY_FIRST = timedelta(minutes=1)
RETRY_MAX = timedelta(hours=1)
GIVE_UP_AFTER = timedelta(hours=24)
LEASE = timedelta(minutes=10)  # a claimed row is someone's for this long (then: at-least-once)
UNAVAILABLE_RETRY = timedelta(seconds=30)  # the mail server cannot be reached at all
# Errors of the database itself, not of one mail: they end the round (the loop tries again).
DATABASE_DOWN = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, ConnectionError)
CHECKPOINT = "subscriptions"
OUTBOX_LOCK = 7_346_023
SUBSCRIBE_LOCK = 7_346_024
INDEX_USE = "subscriber-index"
FIELD_EMAIL = "subscribers.email"
NOTIFY_CHANNEL = "noticeflow_subscriptions"
EVENT_TYPES = ("audience_snapshotted", "notice_postponed", "notice_cancelled")
LIVE = ("pending", "confirmed")


class SubscriptionError(InputError):
    """Bad input (an address, an id): every problem, in words without the address."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        head = "cannot subscribe" if problems else ""
        text = (
            self.problems[0]
            if len(self.problems) == 1
            else f"{head} ({len(self.problems)} problems):\n  - " + "\n  - ".join(self.problems)
        )
        super().__init__(text)


# --- links -------------------------------------------------------------------------------------


class InvalidToken(Exception):
    """A malformed, forged or expired subscription link; ``kind`` says which (for the log)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Confirmation:
    subscriber_id: str
    expires_at: datetime


class Tokens:
    """Signed links for subscribers: the subscriber's random id, a purpose, and for a
    confirmation its expiry; never the address. Keys: the link keys (the first signs)."""

    def __init__(self, keys: str | Sequence[str], public_url: str) -> None:
        keys = [keys] if isinstance(keys, str) else list(keys)
        if not keys or not all(isinstance(k, str) and k.strip() for k in keys):
            raise ValueError("a link-signing key must not be empty")
        if any(k.strip() in PUBLIC_KEYS for k in keys):
            raise ValueError("a link-signing key must not be a public development key")
        self._serializer = URLSafeSerializer(list(reversed(keys)), salt=SALT)
        self.public_url = public_url.rstrip("/")

    def confirm_url(self, subscriber_id: str, expires_at: datetime) -> str:
        token = self._serializer.dumps(["c", subscriber_id, int(expires_at.timestamp())])
        return f"{self.public_url}/subscribe/confirm/{token}"

    def unsubscribe_url(self, subscriber_id: str) -> str:
        return f"{self.public_url}/unsubscribe/{self._serializer.dumps(['u', subscriber_id])}"

    def _load(self, token: str) -> list[Any]:
        if not isinstance(token, str) or len(token) > TOKEN_MAX or not _TOKEN_SHAPE.match(token):
            raise InvalidToken("malformed", "the link is not shaped like one of ours (cut short?)")
        try:
            value = self._serializer.loads(token)
        except BadData as error:
            kind = "forged" if type(error).__name__ == "BadSignature" else "malformed"
            raise InvalidToken(kind, "the link's signature does not match") from None
        if not isinstance(value, list) or not value or not isinstance(value[0], str):
            raise InvalidToken("malformed", "the link's content is malformed")
        return value

    def read_confirmation(self, token: str) -> Confirmation:
        """What a confirmation link says, expired or not (the caller decides)."""
        value = self._load(token)
        if (
            len(value) != 3
            or value[0] != "c"
            or not isinstance(value[1], str)
            or not ID_SHAPE.match(value[1])
            or isinstance(value[2], bool)
            or not isinstance(value[2], int)
        ):
            raise InvalidToken("malformed", "this is not a confirmation link")
        try:
            expires = datetime.fromtimestamp(value[2], UTC)
        except (OverflowError, OSError, ValueError):
            raise InvalidToken("malformed", "the link's content is malformed") from None
        return Confirmation(value[1], expires)

    def read_unsubscribe(self, token: str) -> str:
        value = self._load(token)
        if len(value) != 2 or value[0] != "u" or not isinstance(value[1], str):
            raise InvalidToken("malformed", "this is not an unsubscribe link")
        if not ID_SHAPE.match(value[1]):
            raise InvalidToken("malformed", "this is not an unsubscribe link")
        return value[1]


def fingerprint(token: str) -> str:
    """A short one-way name for a token, fit for a log line."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:12]


# --- keys and the address --------------------------------------------------------------------


def _owner(subscriber_id: str) -> str:
    """The name a subscriber's key is wrapped and seals for: never a customer id's shape."""
    return f"subscriber:{subscriber_id}"


def email_indexes(address: str) -> list[str]:
    """The keyed hash of an address under every key-encryption key this process has (the
    current first): a subscription made before a key rotation is still found."""
    normal = address.strip().lower().encode()
    return [
        hmac.new(key, normal, hashlib.sha256).hexdigest()[:40]
        for key in keyring.installed().material("kek", INDEX_USE)
    ]


async def _load_key(c: asyncpg.Connection | asyncpg.Pool, subscriber_id: str) -> Any:
    row = await c.fetchrow(
        "SELECT wrapped, kek_id FROM subscriber_keys WHERE subscriber_id = $1", subscriber_id
    )
    if row is None:
        return None
    owner = _owner(subscriber_id)
    root = crypto.default_wrapper().unwrap(owner, row["kek_id"], bytes(row["wrapped"]))
    return crypto.CustomerKey(owner, root)


def check_id(subscriber_id: str) -> None:
    if not isinstance(subscriber_id, str) or not ID_SHAPE.match(subscriber_id):
        raise SubscriptionError(
            [
                f"{str(subscriber_id)[:40]!r} is not a subscriber id (sub_ and 16 hex digits, as"
                " `noticeflow subscribers list` shows)"
            ]
        )


# --- subscribing, confirming, unsubscribing, erasing -------------------------------------------


class Outcome(enum.StrEnum):
    """What :func:`subscribe` did (for tests and the CLI; the public page shows none of it)."""

    new = "new"  # a new pending subscription, a confirmation mail queued
    resent = "resent"  # still pending: another confirmation mail queued
    limited = "limited"  # still pending, and mails to it are at their bound: nothing sent
    already = "already"  # confirmed already: nothing sent


async def subscribe(pool: asyncpg.Pool, text: object) -> tuple[str, Outcome]:
    """Subscribe an address (double opt-in): ``(subscriber id, outcome)``. A bad address is a
    :class:`SubscriptionError` naming every problem; nothing else is said about the address."""
    address, problems = normalise_address(text)
    if problems or address is None:
        raise SubscriptionError(problems)
    indexes = email_indexes(address)
    async with pool.acquire() as c, c.transaction():
        await c.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))", SUBSCRIBE_LOCK, indexes[0]
        )
        row = await c.fetchrow(
            "SELECT subscriber_id, status, confirmations_sent, last_confirmation_at, now() AS now"
            " FROM subscribers WHERE email_index = ANY($1::text[]) FOR UPDATE",
            indexes,
        )
        if row is None:
            subscriber_id = "sub_" + secrets.token_hex(8)
            owner = _owner(subscriber_id)
            root = os.urandom(32)
            kek_id, wrapped = crypto.default_wrapper().wrap(owner, root)
            sealed = crypto.CustomerKey(owner, root).seal(FIELD_EMAIL, address)
            await c.execute(
                "INSERT INTO subscribers (subscriber_id, email_sealed, email_index) VALUES ($1, $2, $3)",
                subscriber_id,
                sealed,
                indexes[0],
            )
            await c.execute(
                "INSERT INTO subscriber_keys (subscriber_id, wrapped, kek_id) VALUES ($1, $2, $3)",
                subscriber_id,
                wrapped,
                kek_id,
            )
            await _queue_confirmation(c, subscriber_id, 1)
            outcome = Outcome.new
        else:
            subscriber_id = row["subscriber_id"]
            if row["status"] == "confirmed":
                outcome = Outcome.already
            elif row["confirmations_sent"] >= CONFIRM_MAX or (
                row["last_confirmation_at"] is not None
                and row["now"] - row["last_confirmation_at"] < CONFIRM_INTERVAL
            ):
                outcome = Outcome.limited
            else:
                await _queue_confirmation(c, subscriber_id, row["confirmations_sent"] + 1)
                outcome = Outcome.resent
        if outcome in (Outcome.new, Outcome.resent):
            await c.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)
    return subscriber_id, outcome


async def _queue_confirmation(c: asyncpg.Connection, subscriber_id: str, n: int) -> None:
    await c.execute(
        "UPDATE subscribers SET confirmations_sent = $2, last_confirmation_at = now()"
        " WHERE subscriber_id = $1",
        subscriber_id,
        n,
    )
    await c.execute(
        "INSERT INTO subscriber_mails (subscriber_id, kind, mail_key) VALUES ($1, 'confirm', $2)"
        " ON CONFLICT DO NOTHING",
        subscriber_id,
        f"confirm/{n}",
    )


class Confirmed(enum.StrEnum):
    confirmed = "confirmed"
    already = "already"
    expired = "expired"  # the link's time is up (subscribe again)
    gone = "gone"  # unsubscribed, erased or expired unconfirmed


async def confirmation_state(
    pool: asyncpg.Pool, tokens: Tokens, token: str, now: datetime | None = None
) -> tuple[str, Confirmed | None]:
    """What pressing the link's button would do, changing nothing (the GET page): ``None`` when
    it would confirm, else what :func:`confirm` would answer (already, gone, expired). An
    expired link never shows a button that can only fail."""
    link = tokens.read_confirmation(token)
    now = now or datetime.now(UTC)
    status = await pool.fetchval(
        "SELECT status FROM subscribers WHERE subscriber_id = $1", link.subscriber_id
    )
    if status == "confirmed":
        return link.subscriber_id, Confirmed.already
    if status != "pending":
        return link.subscriber_id, Confirmed.gone
    if now >= link.expires_at:
        return link.subscriber_id, Confirmed.expired
    return link.subscriber_id, None


async def confirm(
    pool: asyncpg.Pool, tokens: Tokens, token: str, now: datetime | None = None
) -> tuple[str, Confirmed]:
    """Confirm a subscription from its link (:class:`InvalidToken` for a bad one)."""
    link = tokens.read_confirmation(token)
    now = now or datetime.now(UTC)
    async with pool.acquire() as c, c.transaction():
        # Serialised with the outbox's passes (which hold this lock exclusively): a confirmation
        # never commits in the middle of a pass, and its time is taken after the lock, so every
        # event a pass already read was recorded before it (owed nothing) and every later one is
        # read by a pass that sees it confirmed. Without this, a confirmation committing after a
        # pass read an event but before it read the subscribers, with a now() from before the
        # event, would be owed that event and never get it (the checkpoint had moved on).
        await c.execute("SELECT pg_advisory_xact_lock_shared($1)", OUTBOX_LOCK)
        status = await c.fetchval(
            "SELECT status FROM subscribers WHERE subscriber_id = $1 FOR UPDATE",
            link.subscriber_id,
        )
        if status == "confirmed":
            result = Confirmed.already
        elif status != "pending":
            result = Confirmed.gone
        elif now >= link.expires_at:
            result = Confirmed.expired
        else:
            await c.execute(
                "UPDATE subscribers SET status = 'confirmed', confirmed_at = clock_timestamp()"
                " WHERE subscriber_id = $1",
                link.subscriber_id,
            )
            await c.execute(
                "UPDATE subscriber_mails SET status = 'cancelled', finished_at = now()"
                " WHERE subscriber_id = $1 AND kind = 'confirm' AND status = 'pending'",
                link.subscriber_id,
            )
            result = Confirmed.confirmed
    return link.subscriber_id, result


async def unsubscribe(pool: asyncpg.Pool, tokens: Tokens, token: str) -> tuple[str, bool]:
    """One-click unsubscribe (RFC 8058): erases the subscriber; ``(id, whether it was live)``.
    Idempotent: a second click finds nothing left to erase."""
    subscriber_id = tokens.read_unsubscribe(token)
    return subscriber_id, await erase(pool, subscriber_id, "unsubscribe", missing_ok=True)


ENDED_STATUS = {"unsubscribe": "unsubscribed", "operator": "erased", "expired": "expired"}


async def erase(
    pool: asyncpg.Pool, subscriber_id: str, by: str = "operator", missing_ok: bool = False
) -> bool:
    """Erase a subscriber: its key is deleted and its sealed address and the address's hash are
    blanked (what remains is an id, a status and dates); its pending mails are cancelled.
    Returns whether it was live (False: erased already)."""
    check_id(subscriber_id)
    async with pool.acquire() as c, c.transaction():
        status = await c.fetchval(
            "SELECT status FROM subscribers WHERE subscriber_id = $1 FOR UPDATE", subscriber_id
        )
        if status is None:
            if missing_ok:
                return False
            raise SubscriptionError([f"no subscriber {subscriber_id} (see `subscribers list`)"])
        if status not in LIVE:
            return False
        await c.execute("DELETE FROM subscriber_keys WHERE subscriber_id = $1", subscriber_id)
        await c.execute(
            "UPDATE subscribers SET status = $2, email_sealed = NULL, email_index = NULL,"
            " ended_at = now(), ended_by = $3 WHERE subscriber_id = $1",
            subscriber_id,
            ENDED_STATUS[by],
            by,
        )
        await c.execute(
            "UPDATE subscriber_mails SET status = 'cancelled', finished_at = now()"
            " WHERE subscriber_id = $1 AND status = 'pending'",
            subscriber_id,
        )
    return True


async def expire_pending(pool: asyncpg.Pool, kept: timedelta = PENDING_KEPT) -> int:
    """Erase the subscriptions left unconfirmed for longer than ``kept``."""
    ids = await pool.fetch(
        "SELECT subscriber_id FROM subscribers WHERE status = 'pending'"
        " AND created_at < now() - $1::interval",
        kept,
    )
    erased = 0
    for row in ids:
        if await erase(pool, row["subscriber_id"], "expired", missing_ok=True):
            erased += 1
            log.info("unconfirmed subscriber erased", subscriber_id=row["subscriber_id"])
    return erased


async def find_by_email(pool: asyncpg.Pool, text: str) -> str | None:
    """The live subscriber with this address, if any (for `subscribers erase --email`)."""
    address, problems = normalise_address(text)
    if problems or address is None:
        raise SubscriptionError(problems)
    value: str | None = await pool.fetchval(
        "SELECT subscriber_id FROM subscribers WHERE email_index = ANY($1::text[])",
        email_indexes(address),
    )
    return value


async def listing(pool: asyncpg.Pool, show_addresses: bool = False) -> list[dict[str, Any]]:
    """Every subscriber: id, status, dates and mail counts; the address only when asked."""
    rows = await pool.fetch(
        "SELECT s.subscriber_id, s.status, s.created_at, s.confirmed_at, s.ended_at, s.ended_by,"
        " s.email_sealed,"
        " count(m.*) FILTER (WHERE m.status = 'sent' AND m.kind <> 'confirm') AS mails_sent,"
        " count(m.*) FILTER (WHERE m.status = 'pending') AS mails_pending,"
        " count(m.*) FILTER (WHERE m.status = 'failed') AS mails_failed"
        " FROM subscribers s LEFT JOIN subscriber_mails m USING (subscriber_id)"
        " GROUP BY s.subscriber_id ORDER BY s.created_at, s.subscriber_id"
    )
    result = []
    for row in rows:
        item = {
            "id": row["subscriber_id"],
            "status": row["status"],
            "created_at": row["created_at"],
            "confirmed_at": row["confirmed_at"],
            "ended_at": row["ended_at"],
            "ended_by": row["ended_by"],
            "mails_sent": row["mails_sent"],
            "mails_pending": row["mails_pending"],
            "mails_failed": row["mails_failed"],
        }
        if show_addresses:
            key = await _load_key(pool, row["subscriber_id"])
            item["email"] = (
                crypto.open_sealed(key, FIELD_EMAIL, row["email_sealed"])
                if row["email_sealed"]
                else None
            )
        result.append(item)
    return result


# --- the outbox --------------------------------------------------------------------------------

_READ = (
    "SELECT tx_id, position, stream_id, stream_version, event_id, event_type, recorded_at"
    " FROM events WHERE (tx_id, position) > ($1::text::xid8, $2)"
    " AND tx_id < pg_snapshot_xmin(pg_current_snapshot())"
    " ORDER BY tx_id, position LIMIT $3"
)  # every event, the few relevant ones picked here: the checkpoint then moves past all it read
# (filtered in SQL, a pass read every delivery event after the last relevant one again, each
# time: at 20,000 customers, 56 events read per customer mailed)


async def fill_outbox(pool: asyncpg.Pool, page: int = 1000) -> int:
    """Write the mails owed for every relevant event after the checkpoint (one follower at a
    time: an advisory lock). Returns how many rows were written."""
    written = 0
    async with pool.acquire() as c:
        while True:
            async with c.transaction():
                await c.execute("SELECT pg_advisory_xact_lock($1)", OUTBOX_LOCK)
                count, new = await _fill_page(c, page)
            written += new
            if count < page:
                return written


async def _fill_page(c: asyncpg.Connection, page: int) -> tuple[int, int]:
    row = await c.fetchrow(
        "SELECT tx_id, position FROM projection_checkpoints WHERE name = $1", CHECKPOINT
    )
    after = (row["tx_id"], row["position"]) if row else (0, 0)
    read = await c.fetch(_READ, str(after[0]), after[1], page)
    events = [e for e in read if e["event_type"] in EVENT_TYPES]
    heads = {
        r["stream_id"]: r["version"]
        for r in await c.fetch(
            "SELECT stream_id, version FROM event_streams WHERE stream_id = ANY($1::text[])",
            sorted({e["stream_id"] for e in events}),
        )
    }
    written = 0
    for e in events:
        notice_id = notice_id_of(e["stream_id"])
        if notice_id is None or e["stream_version"] > heads.get(e["stream_id"], 0):
            continue  # not a notice's, or not appended by the product (the projector skips it)
        if e["event_type"] == "audience_snapshotted":
            kind, key = "sent", f"{notice_id}/sent"
        else:
            sent = await c.fetchval(
                "SELECT 1 FROM events WHERE stream_id = $1 AND stream_version < $2"
                " AND event_type = 'audience_snapshotted' LIMIT 1",
                e["stream_id"],
                e["stream_version"],
            )
            if sent is None:
                continue  # never mailed: not on the public list, nothing to tell subscribers
            if e["event_type"] == "notice_postponed":
                kind, key = "postponed", f"{notice_id}/postponed/{e['event_id']}"
            else:
                kind, key = "cancelled", f"{notice_id}/cancelled"
        result = await c.execute(
            "INSERT INTO subscriber_mails (subscriber_id, kind, notice_id, mail_key, event_id)"
            " SELECT subscriber_id, $1, $2, $3, $4 FROM subscribers"
            " WHERE status = 'confirmed' AND confirmed_at <= $5"
            " ON CONFLICT DO NOTHING",
            kind,
            notice_id,
            key,
            e["event_id"],
            e["recorded_at"],
        )
        written += int(result.rsplit(" ", 1)[1])
    if read:
        await c.execute(
            "INSERT INTO projection_checkpoints (name, tx_id, position) VALUES ($1, $2, $3)"
            " ON CONFLICT (name) DO UPDATE SET tx_id = $2, position = $3",
            CHECKPOINT,
            read[-1]["tx_id"],
            read[-1]["position"],
        )
    return len(read), written


# --- delivery ----------------------------------------------------------------------------------


def message_id(subscriber_id: str, mail_key: str, mail_from: str) -> str:
    """The same for every attempt at one mail: a hash of (subscriber, mail key) — ids only."""
    digest = hashlib.sha256(f"subscriber\x1f{subscriber_id}\x1f{mail_key}".encode()).hexdigest()
    domain = mail_from.rsplit("@", 1)[-1] or "noticeflow.localhost"
    return f"<{digest[:32]}.list@{domain}>"


def retry_delay(attempts: int, first: timedelta = RETRY_FIRST) -> timedelta:
    return min(first * (2 ** min(max(attempts - 1, 0), 30)), RETRY_MAX)


@dataclass
class Round:
    sent: int = 0
    failed: int = 0
    retried: int = 0
    cancelled: int = 0
    claimed: int = 0


# Headers written as the wire wants them: one line each up to RFC 5322's 998 characters. The default
# (78) made the email package fold a long Subject onto a continuation line and RFC 2047-encode the
# List-Unsubscribe URL (it has no space to fold at), which RFC 2369/8058 clients do not read as a
# link. The parts' transfer encodings are chosen by set_content under the message's own policy.
WIRE_POLICY = email.policy.SMTP.clone(max_line_length=998)

# What became of the change, by mail kind. The change itself is worded by kind as on the page and
# in the feed (domain/public_list.py change_words): "Sub-processor removal: X", never one phrase
# for an addition and a removal alike.
STATES = {"sent": "announced", "postponed": "postponed", "cancelled": "cancelled"}


def copy_title(kind: str, change: Change) -> str:
    """A copy's headline and (after "[Informational] ") subject: "Sub-processor removal: X",
    "Postponed — New sub-processor: X", "Cancelled — Sub-processor replacement: X (replacing Y)"
    (the cancelled form is the feed's)."""
    words = change_words(change)
    return words if kind == "sent" else f"{STATES[kind].capitalize()} — {words}"


@dataclass
class SubscriberMailer:
    """Sends the subscribers' mails that are due (see the module's docstring)."""

    pool: asyncpg.Pool
    smtp: SmtpTarget
    mail_from: str
    tokens: Tokens
    renderer: MailRenderer = field(default_factory=MailRenderer)
    give_up_after: timedelta = GIVE_UP_AFTER
    retry_first: timedelta = RETRY_FIRST
    # The relay's shared pace (NOTICEFLOW_SMTP_RELAY_RATE), the one the notices' mail keeps: a
    # burst of copies takes its slots like any mail and cannot eat the relay's quota.
    pace: RelayPace | None = None
    pipelining: bool = True  # NOTICEFLOW_SMTP_PIPELINING, as the notices' mail
    _list: public_list.Cache = field(default_factory=public_list.Cache)

    @classmethod
    def configured(
        cls,
        pool: asyncpg.Pool,
        smtp_url: str,
        mail_from: str,
        keys: str | Sequence[str],
        public_url: str,
        template_dir: Path | None = None,
        relay_rate: float | None = None,
        pipelining: bool = True,
    ) -> SubscriberMailer:
        smtp = SmtpTarget.from_url(smtp_url)
        return cls(
            pool,
            smtp,
            mail_from,
            Tokens(keys, public_url),
            MailRenderer(template_dir),
            # keyed as noticeflow.mailer.Mailer keys it (host:port): one pace per relay
            pace=RelayPace(f"{smtp.hostname}:{smtp.port}", relay_rate, 1) if relay_rate else None,
            pipelining=pipelining,
        )

    async def send_due(self, batch: int = 100) -> Round:
        """Claim up to ``batch`` due mails and send them, each recorded on its own."""
        rows = await self.pool.fetch(
            "UPDATE subscriber_mails SET next_attempt_at = now() + $2::interval"
            " WHERE mail_id IN (SELECT mail_id FROM subscriber_mails WHERE status = 'pending'"
            "   AND next_attempt_at <= now() ORDER BY next_attempt_at, mail_id LIMIT $1"
            "   FOR UPDATE SKIP LOCKED)"
            " RETURNING mail_id, subscriber_id, kind, notice_id, mail_key, attempts,"
            " first_attempt_at",
            batch,
            LEASE,
        )
        done = Round(claimed=len(rows))
        if not rows:
            return done
        listing: PublicList | None = None
        if any(r["kind"] != "confirm" for r in rows):
            listing = await self._list.current(self.pool)
        changes = {
            c.notice_id: c for c in (*listing.upcoming, *listing.past)
        } if listing else {}  # fmt: skip
        rows = sorted(rows, key=lambda r: r["mail_id"])
        async with SmtpSession(self.smtp, self.pipelining) as session:
            for index, row in enumerate(rows):
                try:
                    await self._one(session, row, changes, done)
                except SmtpUnavailable:
                    # Says nothing about an address: put this and the rest back, try later.
                    left = [r["mail_id"] for r in rows[index:]]
                    await self.pool.execute(
                        "UPDATE subscriber_mails SET next_attempt_at = now() + $2::interval"
                        " WHERE mail_id = ANY($1::bigint[]) AND status = 'pending'",
                        left,
                        UNAVAILABLE_RETRY,
                    )
                    log.warning("subscriber mail: mail server unavailable", mails=len(left))
                    break
                except DATABASE_DOWN:
                    raise  # says nothing about this row: the loop retries the round
                except Exception as error:
                    # A template that will not render, a key that will not unwrap, a message that
                    # cannot be built: this row's alone. Failed for good (retrying would fail the
                    # same way and stall its batch every lease), the next row goes on.
                    await self._broken(row, error, done)
        return done

    async def _broken(self, row: Any, error: Exception, done: Round) -> None:
        words = f"could not build or send the mail: {type(error).__name__}"
        await self._finish(row["mail_id"], "failed", words, row["attempts"] + 1, datetime.now(UTC))
        done.failed += 1
        log.warning(  # ids and the error's type only: its message may quote an address
            "subscriber mail",
            mail_id=row["mail_id"],
            subscriber_id=row["subscriber_id"],
            kind=row["kind"],
            notice_id=row["notice_id"],
            attempt=row["attempts"] + 1,
            outcome="failed",
            error_type=type(error).__name__,
        )

    async def _one(
        self, session: SmtpSession, row: Any, changes: dict[str, Change], done: Round
    ) -> None:
        mail_id, subscriber_id, kind = row["mail_id"], row["subscriber_id"], row["kind"]
        subscriber = await self.pool.fetchrow(
            "SELECT status, email_sealed FROM subscribers WHERE subscriber_id = $1", subscriber_id
        )
        wanted = "pending" if kind == "confirm" else "confirmed"
        key = await _load_key(self.pool, subscriber_id) if subscriber else None
        if subscriber is None or subscriber["status"] != wanted or key is None:
            await self._finish(mail_id, "cancelled", "the subscriber is no longer " + wanted)
            done.cancelled += 1
            return
        change = changes.get(row["notice_id"] or "")
        if kind != "confirm" and change is None:
            await self._finish(mail_id, "cancelled", "the notice is not on the public list")
            done.cancelled += 1
            return
        address = key.unseal(FIELD_EMAIL, subscriber["email_sealed"])
        mail = self.build(subscriber_id, address, kind, row["mail_key"], change)
        if self.pace is not None:
            await self.pace.wait(self.pool)  # the relay's slot, shared with the notices' mail
        at = datetime.now(UTC)
        attempt = row["attempts"] + 1
        try:
            result = await session.send(mail)
        except SmtpUnavailable:
            raise
        except TemporarySmtpError as error:
            first = row["first_attempt_at"] or at
            delay = retry_delay(attempt, self.retry_first)
            words = f"temporary failure ({error.reply.summary if error.reply else error})"
            if at + delay - first > self.give_up_after:
                await self._finish(mail_id, "failed", f"{words}; gave up", attempt, at)
                done.failed += 1
                outcome = "failed"
            else:
                await self.pool.execute(
                    "UPDATE subscriber_mails SET attempts = $2, last_attempt_at = $3,"
                    " first_attempt_at = coalesce(first_attempt_at, $3), last_error = $4,"
                    " next_attempt_at = $5 WHERE mail_id = $1",
                    mail_id,
                    attempt,
                    at,
                    words,
                    at + delay,
                )
                done.retried += 1
                outcome = "retry"
        else:
            if result.status == SendStatus.accepted:
                await self._finish(mail_id, "sent", None, attempt, at)
                done.sent += 1
                outcome = "sent"
            else:
                words = f"refused permanently ({result.reply.summary})"
                await self._finish(mail_id, "failed", words, attempt, at)
                done.failed += 1
                outcome = "failed"
        log.info(
            "subscriber mail",
            mail_id=mail_id,
            subscriber_id=subscriber_id,
            kind=kind,
            notice_id=row["notice_id"],
            attempt=attempt,
            outcome=outcome,
        )

    async def _finish(
        self,
        mail_id: int,
        status: str,
        error: str | None,
        attempt: int | None = None,
        at: datetime | None = None,
    ) -> None:
        await self.pool.execute(
            "UPDATE subscriber_mails SET status = $2, last_error = $3,"
            " attempts = coalesce($4, attempts), last_attempt_at = coalesce($5, last_attempt_at),"
            " first_attempt_at = coalesce(first_attempt_at, $5), finished_at = now()"
            " WHERE mail_id = $1",
            mail_id,
            status,
            error,
            attempt,
            at,
        )

    def build(
        self,
        subscriber_id: str,
        address: str,
        kind: str,
        mail_key: str,
        change: Change | None,
        now: datetime | None = None,
    ) -> OutgoingMail:
        """One subscriber mail as wire bytes, with RFC 8058's one-click unsubscribe headers."""
        now = now or datetime.now(UTC)
        base = self.tokens.public_url
        unsubscribe_url = self.tokens.unsubscribe_url(subscriber_id)
        context: dict[str, Any] = {
            "kind": kind,
            "public_url": f"{base}/subprocessors",
            "unsubscribe_url": unsubscribe_url,
        }
        if kind == "confirm":
            expires = now + CONFIRM_VALID
            context |= {
                "confirm_url": self.tokens.confirm_url(subscriber_id, expires),
                "expires_at": expires,
                "kept_days": PENDING_KEPT.days,
            }
            template = "subscriber_confirm"
        else:
            assert change is not None
            context |= {
                "change": change,
                "title": copy_title(kind, change),
                # for a template written before "title": "<kind words> <state>: <name>"
                "headline": f"{KIND_WORDS.get(change.kind, change.kind)} {STATES[kind]}",
                "entry_url": f"{base}/subprocessors#notice-{change.notice_id}",
            }
            template = "subscriber_notice"
        subject, text, html = self.renderer.render(template, context)
        message = EmailMessage(policy=email.policy.SMTP)
        domain = self.mail_from.rsplit("@", 1)[-1] or "noticeflow.localhost"
        message["From"] = self.mail_from
        message["To"] = address
        message["Subject"] = " ".join(subject.split())
        message["Message-ID"] = message_id(subscriber_id, mail_key, self.mail_from)
        message["Date"] = format_datetime(now)
        message["Auto-Submitted"] = "auto-generated"
        message["List-Id"] = f"Sub-processor changes <subprocessors.{domain}>"
        message["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        message.set_content(text)
        message.add_alternative(html, subtype="html")
        return OutgoingMail(self.mail_from, address, message.as_bytes(policy=WIRE_POLICY))


def one_click_problem(public_url: str) -> str | None:
    """Why subscribers' one-click unsubscribe will not work from this public URL (None: it
    will): RFC 8058 wants List-Unsubscribe to be an https URI. Loopback and ``.localhost`` hosts
    (``noticeflow up``, tests) are left alone: no mailbox provider reaches them anyway."""
    parts = urlsplit(public_url)
    if parts.scheme == "https":
        return None
    host = (parts.hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return None
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_loopback:
            return None
    return (
        f"NOTICEFLOW_PUBLIC_URL is {parts.scheme or 'not a URL'}://, not https://: subscribers'"
        " List-Unsubscribe links are not https URIs, so mailbox providers will not offer RFC 8058"
        " one-click unsubscribe (docs/public.md)"
    )


async def run(
    pool: asyncpg.Pool,
    mailer: SubscriberMailer,
    stop: asyncio.Event,
    poll_seconds: float = 2.0,
    sweep_seconds: float = 3600.0,
) -> None:
    """Keep the outbox filled and the due mails sent until ``stop``: woken by the store's NOTIFY
    and a new subscription's, polling as a fallback (retries come due with time); every
    ``sweep_seconds`` erase the subscriptions left unconfirmed. A failure is logged (codes only)
    and the loop goes on."""
    problem = one_click_problem(mailer.tokens.public_url)
    if problem:
        log.warning("subscriber mail: no one-click unsubscribe", problem=problem)
    swept = float("-inf")  # the first round sweeps (the monotonic clock may be near 0)

    async def step() -> None:
        nonlocal swept
        await fill_outbox(pool)
        while (await mailer.send_due()).claimed >= 100 and not stop.is_set():
            pass
        if time.monotonic() - swept >= sweep_seconds:
            await expire_pending(pool)
            swept = time.monotonic()  # after it: a failed sweep is tried again next round

    await follow(
        pool,
        stop,
        step,
        what="subscriber mail",
        channels=(EVENTS_CHANNEL, NOTIFY_CHANNEL),
        poll_seconds=poll_seconds,
    )
