"""Webhooks: subscriptions, the outbox, signed delivery (Standard Webhooks), and the SSRF rule.

* **Subscriptions** (`noticeflow webhooks add|list|remove|test`): a URL, the events it wants, and
  a Standard Webhooks secret (``whsec_`` + base64 of 32 random bytes) shown once at ``add`` and
  stored sealed (AES-256-GCM under a key derived from the key-encryption key, the subscription id
  as associated data), never logged.
* **The outbox**: :func:`fill_outbox` follows the event store's global order ``(tx_id,
  position)`` with its own checkpoint (``projection_checkpoints`` row ``webhooks``) and writes
  one ``webhook_deliveries`` row per (live subscription, matching event) in the transaction that
  moves the checkpoint: nothing is skipped, nothing written twice. The body carries ids, dates
  and the event's position only — never a name, an address or free text.
* **Delivery**: :class:`Deliverer` POSTs a subscription's pending deliveries in order, each
  signed (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``). The ``webhook-id`` is a
  hash of (subscription, event): a retry carries the same id. A 2xx is delivered; a timeout, a
  connection error, 408, 425, 429 or 5xx is retried (:class:`RetryLater`, with a growing delay the
  activity hands to Temporal) until ``give_up_after`` (24 h) has passed since the first attempt;
  any other answer, a redirect, or a refused address fails the delivery for good. Then the next
  one proceeds. Every attempt is a ``webhook_attempts`` row.
* **SSRF**: a target whose host resolves to any address that is not globally routable (loopback,
  private, link-local, shared, reserved, multicast...) is refused at ``add`` and again at every
  attempt (against DNS rebinding: the connection goes to the address just checked), unless
  ``NOTICEFLOW_WEBHOOKS_ALLOW_PRIVATE=true``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import ipaddress
import json
import os
import re
import secrets
import socket
import string
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from standardwebhooks import Webhook

from noticeflow import eventstore as es
from noticeflow import keyring
from noticeflow.contracts import (
    WEBHOOK_WAKE_SIGNAL,
    WEBHOOK_WORKFLOW_TYPE,
    notice_id_of,
    webhook_task_queue,
    webhook_workflow_id,
)
from noticeflow.domain.errors import InputError
from noticeflow.domain.subscriptions import idna_domain
from noticeflow.follower import follow

log = structlog.get_logger(__name__)

# --- the events ----------------------------------------------------------------------------------

EVENTS: dict[str, str] = {
    "notice.sent": "a notice was mailed to its audience (its window is open)",
    "notice.postponed": "a notice's effective date moved later",
    "notice.cancelled": "a notice was cancelled",
    "subprocessor.enabled": "a sub-processor is now in use for a customer",
    "subprocessor.disabled": "a sub-processor is no longer in use for a customer",
    "objection.received": "a customer objected (or, on a DORA contract, requested changes)",
}
TEST_EVENT = "webhook.test"  # `webhooks test`: sent at once, not retried
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
SECRET_USE = "webhook-secrets"  # keyring.material("kek", SECRET_USE) seals the secrets
CHECKPOINT = "webhooks"  # its row in projection_checkpoints
OUTBOX_LOCK = 7_346_020
MAX_URL = 2000
TIMEOUT = 10.0  # seconds for one POST, overall (resolve, connect, send, the answer's head)
READ_LIMIT = 4096  # bytes of an answer's body read at most (and dropped)
BODY_SECONDS = 1.0  # and for at most this long, once the status is in
HEARTBEAT_SECONDS = 5.0  # the activity's heartbeat while a POST is under way
RETRY_FIRST = timedelta(seconds=5)  # then doubling, at most RETRY_MAX apart
RETRY_MAX = timedelta(hours=1)
GIVE_UP_AFTER = timedelta(hours=24)
REMOVED = "removed"  # why a delivery workflow ended (its result)
UNREADABLE = "secret unreadable"
RETRIED_STATUSES = frozenset({408, 425, 429})  # and every 5xx


class WebhookError(InputError):
    """Bad input to a webhook command: one readable line (or block), exit 2."""


# --- validation ----------------------------------------------------------------------------------


def parse_events(values: Iterable[str] | None) -> tuple[list[str], list[str]]:
    """The event names asked for (comma-separated or repeated; none: every event), and the
    problems."""
    names = [part.strip() for value in values or [] for part in value.split(",") if part.strip()]
    if not names:
        return list(EVENTS), []
    unknown = [name for name in dict.fromkeys(names) if name not in EVENTS]
    problems = [
        f"--events: unknown event {name[:60]!r} (allowed: {', '.join(EVENTS)})" for name in unknown
    ]
    return [name for name in EVENTS if name in names], problems


def url_problems(url: str) -> list[str]:
    """What is wrong with a target URL's form (its addresses are checked by :func:`resolve`)."""
    head, at, tail = url.partition("@")
    hidden = head.split("://", 1)[0] + "://***@" + tail if at and "://" in head else url
    shown = hidden[:80] + ("…" if len(hidden) > 80 else "")  # never a password it carried
    if len(url) > MAX_URL:
        return [f"URL: longer than {MAX_URL} characters"]
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        return [f"URL {shown!r}: contains spaces or control characters"]
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        return [f"URL {shown!r}: cannot be read ({error})"]
    problems = []
    if parts.scheme not in ("http", "https"):
        problems.append(f"URL {shown!r}: must start with https:// (or http://)")
    if not parts.hostname:
        problems.append(f"URL {shown!r}: names no host")
    elif ascii_host(url) is None:
        problems.append(f"URL {shown!r}: its host {idna_domain(parts.hostname)[1]}")
    if parts.username is not None or parts.password is not None:
        problems.append("URL: must not carry a user name or password (user:password@host)")
    if parts.fragment:
        problems.append(f"URL {shown!r}: must not have a #fragment")
    if port == 0:
        problems.append(f"URL {shown!r}: port 0 is not a port")
    return problems


def ascii_host(url: str) -> str | None:
    """The URL's host as the resolver, the ``Host`` header and SNI must see it: an IP address as
    written, a name lower-case and, if internationalised, in its IDNA2008 form (UTS 46 mapping;
    Python's resolver and TLS would take IDNA2003, reaching ``strasse`` for ``straße``). None if
    IDNA2008 refuses the name."""
    host = urlsplit(url).hostname or ""
    if ":" in host:
        return host  # an IPv6 literal
    return idna_domain(host)[0]


def _kind(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """The kind of a non-public address (None: globally routable)."""
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_unspecified:
        return "unspecified"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "site-local"
    if ip.is_private:
        return "private"
    if ip.is_reserved or not ip.is_global or any(ip in net for net in _NOT_GLOBAL):
        return "reserved"
    return None


# Not globally routable, yet is_global on some Pythons (3.11 knew only 192.0.0.0/29 of the
# first, and none of the others): IETF protocol assignments (the whole /24, its anycast service
# addresses too), the deprecated 6to4 relay anycast, local-use IPv4/IPv6 translation,
# documentation (2024), SRv6 segment identifiers. Site-local fec0::/10 is named as such above.
_NOT_GLOBAL = tuple(
    ipaddress.ip_network(net)
    for net in ("192.0.0.0/24", "192.88.99.0/24", "64:ff9b:1::/48", "3fff::/20", "5f00::/16")
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # the well-known prefix: the IPv4 address reached


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def address_problem(address: str) -> str | None:
    """Why a resolved address may not be a webhook target (None: a public address). An IPv6
    address that carries an IPv4 one (IPv4-mapped ``::ffff:a.b.c.d``, 6to4 ``2002::/16``, Teredo
    ``2001::/32``, whose client address is what a relay reaches) is judged by that IPv4 address
    too; a NAT64 one (``64:ff9b::/96``) by that IPv4 address alone."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in _NAT64:  # a DNS64 answer: judged by the IPv4 address the translator reaches
            nat64 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
            kind = _kind(nat64)
            return kind and f"{ip}, a NAT64 address embedding {nat64}, {_a(kind)} address"
        else:
            embedded = [("6to4", ip.sixtofour), ("Teredo", ip.teredo[1] if ip.teredo else None)]
            for how, inner in embedded:
                kind = _kind(inner) if inner is not None else None
                if kind:
                    return f"{ip}, a {how} address embedding {inner}, {_a(kind)} address"
    kind = _kind(ip)
    return None if kind is None else f"{ip}, {_a(kind)} address"


async def resolve(host: str, port: int, allow_private: bool) -> list[str]:
    """Every address ``host`` resolves to, each checked: a :class:`Refused` names the first that
    is not public (unless ``allow_private``), or the failure to resolve."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    except (OSError, UnicodeError) as error:
        raise Unresolved(f"cannot resolve {host[:80]}: {error}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise Unresolved(f"{host[:80]} resolves to no address")
    if not allow_private:
        for address in addresses:
            problem = address_problem(address)
            if problem:
                raise Refused(
                    f"{host[:80]} resolves to {problem}: webhook targets must be public"
                    " (NOTICEFLOW_WEBHOOKS_ALLOW_PRIVATE=true allows others, for local use)"
                )
    return addresses


class Refused(Exception):
    """A target that resolves to an address not allowed (lasting)."""


class Unresolved(Exception):
    """A target whose host does not resolve now (may be transient)."""


def _port(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _escapes(text: str) -> str:
    """Percent-escapes in one form (RFC 3986 6.2.2): an unreserved character decoded, the hex of
    the others upper-case."""

    def one(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else "%" + match.group(1).upper()

    return re.sub(r"%([0-9A-Fa-f]{2})", one, text)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 5.2.4: ``.`` and ``..`` segments resolved, as httpx does before it sends a
    request (``/./hook`` and ``/x/../hook`` are POSTed as ``/hook``)."""
    out: list[str] = []
    segments = path.split("/")
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == ".":
            if last:
                out.append("")
        elif segment == "..":
            if len(out) > 1:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(segment)
    return "/".join(out)


def target_key(url: str) -> str:
    """What the duplicate check compares: two URLs with one key are one target. The scheme and
    the host lower-case, the host in IDNA (ASCII) form without a trailing dot, an IP address in
    its canonical form (IPv6 compressed; an IPv4 address written short or in hex, as
    ``127.1``, as the resolver reads it), the scheme's default port dropped, an empty path ``/``,
    percent-escapes in one form, dot segments removed (RFC 3986 5.2.4, after unreserved escapes
    are decoded), an IPv4-mapped IPv6 address as its IPv4 address, trailing slashes of the path
    and an empty query not counted.
    The path's case and its other slashes are kept as given (``/Hook`` and ``//hook`` are other
    targets than ``/hook``), and so is the query. The URL stored and POSTed to stays as given."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        parsed = httpx.URL(url)
        host, port = parsed.raw_host.decode("ascii"), parsed.port
    except (httpx.InvalidURL, UnicodeError, ValueError):
        host, port = parts.hostname or "", parts.port
    host = host.lower().rstrip(".") or host
    if not host.isascii() or "xn--" in host:
        host = idna_domain(host)[0] or host
    try:
        ip = ipaddress.ip_address(host)
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        host = (mapped or ip).compressed  # [::ffff:127.0.0.1] is 127.0.0.1
    except ValueError:
        if all(re.fullmatch(r"0x[0-9a-f]*|[0-9]+", label) for label in host.split(".")):
            with contextlib.suppress(OSError):
                host = socket.inet_ntoa(socket.inet_aton(host))
    if ":" in host:
        host = f"[{host}]"
    if port == _DEFAULT_PORTS.get(scheme):
        port = None
    path = _remove_dot_segments(_escapes(parts.path)).rstrip("/") or "/"
    query = _escapes(parts.query)
    return f"{scheme}://{host}{f':{port}' if port else ''}{path}{f'?{query}' if query else ''}"


async def same_target(c: asyncpg.Pool | asyncpg.Connection, url: str) -> str | None:
    """The live subscription whose URL names the same target as ``url`` (:func:`target_key`)."""
    key = target_key(url)
    rows = await c.fetch(
        "SELECT subscription_id, url FROM webhook_subscriptions WHERE removed_at IS NULL"
        " ORDER BY created_at, subscription_id"
    )
    return next((r["subscription_id"] for r in rows if target_key(r["url"]) == key), None)


def _already(existing: str) -> str:
    return (
        f"URL: already subscribed as {existing} (the same target; its secret was shown when it"
        f" was added): `noticeflow webhooks remove {existing}` first to replace it"
    )


# --- secrets ---------------------------------------------------------------------------------------


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(os.urandom(SECRET_BYTES)).decode()


def _aad(subscription_id: str) -> bytes:
    return b"noticeflow/webhook-secret/v1\x1f" + subscription_id.encode()


def seal_secret(subscription_id: str, secret: str) -> tuple[bytes, str]:
    """``(sealed, key id)``: the secret under the current key-encryption key's webhook key."""
    key = keyring.installed().current("kek", SECRET_USE)
    nonce = os.urandom(12)
    sealed = nonce + AESGCM(key).encrypt(nonce, secret.encode(), _aad(subscription_id))
    return sealed, keyring.Keyring.key_id(key)


class SecretKeyMissing(WebhookError):
    """The key that sealed a webhook's secret is not configured here: configuration, transient
    (retried until the key is set)."""


class SecretUnreadable(WebhookError):
    """A webhook's stored secret does not open under its key (the row was altered): lasting."""


def open_secret(subscription_id: str, sealed: bytes, key_id: str) -> str:
    key = keyring.installed().by_id("kek", key_id, SECRET_USE)
    if key is None:
        raise SecretKeyMissing(
            f"the secret of webhook {subscription_id} was sealed by a key-encryption key this"
            " process does not have: set it in NOTICEFLOW_PREVIOUS_KEY_ENCRYPTION_KEYS"
        )
    try:
        return AESGCM(key).decrypt(sealed[:12], sealed[12:], _aad(subscription_id)).decode()
    except InvalidTag:
        raise SecretUnreadable(
            f"the stored secret of webhook {subscription_id} does not open: the row was altered"
        ) from None


def message_id(subscription_id: str, event_key: str) -> str:
    """The ``webhook-id``: the same for every attempt at one event for one subscription."""
    digest = hashlib.sha256(f"{subscription_id}\x1f{event_key}".encode()).digest()
    return "msg_" + base64.b32encode(digest[:20]).decode().lower().rstrip("=")


# --- subscriptions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Subscription:
    subscription_id: str
    url: str
    events: list[str]
    created_at: datetime
    removed_at: datetime | None = None


async def validate(
    url: str, events: Sequence[str] | None, allow_private: bool
) -> tuple[list[str], list[str]]:
    """The events chosen and every problem with a new subscription's URL and events (its form,
    then every address its host resolves to), without the database."""
    chosen, problems = parse_events(events)
    form = url_problems(url)
    if not form:
        try:
            await resolve(ascii_host(url) or "", _port(url), allow_private)
        except (Refused, Unresolved) as error:
            form.append(f"URL: {error}")
    return chosen, form + problems


async def add(
    pool: asyncpg.Pool, url: str, events: Sequence[str] | None, allow_private: bool
) -> tuple[Subscription, str]:
    """A new subscription and its secret (shown once). Refused, changing nothing: a bad URL, an
    unknown event, a target that is not public, a URL already subscribed (every problem at
    once). A second ``add`` of a subscribed URL is refused rather than answered with the first
    subscription: its secret was shown once, and its events may differ."""
    chosen, problems = await validate(url, events, allow_private)
    existing = None if url_problems(url) else await same_target(pool, url)
    if existing:
        problems.append(_already(existing))
    if problems:
        raise WebhookError(problem_block("cannot add the webhook", problems))
    subscription_id = "wh_" + secrets.token_hex(8)
    secret = new_secret()
    sealed, key_id = seal_secret(subscription_id, secret)
    try:
        async with pool.acquire() as c, c.transaction():
            # The outbox pass's lock (fill_outbox): no pass is between its read of the
            # subscriptions and its move of the checkpoint while this one is added, and its
            # created_at is taken after the lock — so every event recorded at or after it is read
            # by a pass that sees it (none is skipped past by a pass that did not).
            await c.execute("SELECT pg_advisory_xact_lock($1)", OUTBOX_LOCK)
            # Every add holds this lock: checked again under it, two adds of one target at
            # once cannot both pass (the unique index only knows the URL's text).
            existing = await same_target(c, url)
            if existing:
                raise WebhookError(problem_block("cannot add the webhook", [_already(existing)]))
            row = await c.fetchrow(
                "INSERT INTO webhook_subscriptions (subscription_id, url, events, secret_sealed,"
                " secret_key_id, created_at) VALUES ($1, $2, $3, $4, $5, clock_timestamp())"
                " RETURNING created_at",
                subscription_id,
                url,
                chosen,
                sealed,
                key_id,
            )
    except asyncpg.UniqueViolationError:
        raise WebhookError("cannot add the webhook: URL: already subscribed") from None
    return Subscription(subscription_id, url, chosen, row["created_at"]), secret


def problem_block(head: str, problems: list[str]) -> str:
    """One refusal's text: its head and every problem (one line, or a bulleted block)."""
    if len(problems) == 1:
        return f"{head}: {problems[0]}"
    return f"{head} ({len(problems)} problems):\n  - " + "\n  - ".join(problems)


async def listing(pool: asyncpg.Pool, include_removed: bool = False) -> list[dict[str, Any]]:
    """Every subscription with its delivery counts and last attempt (no secret)."""
    rows = await pool.fetch(
        "SELECT s.subscription_id, s.url, s.events, s.created_at, s.removed_at,"
        " count(d.*) FILTER (WHERE d.status = 'pending') AS pending,"
        " count(d.*) FILTER (WHERE d.status = 'delivered') AS delivered,"
        " count(d.*) FILTER (WHERE d.status = 'failed') AS failed,"
        " max(d.last_attempt_at) AS last_attempt_at"
        " FROM webhook_subscriptions s LEFT JOIN webhook_deliveries d USING (subscription_id)"
        " WHERE $1 OR s.removed_at IS NULL"
        " GROUP BY s.subscription_id ORDER BY s.created_at, s.subscription_id",
        include_removed,
    )
    return [
        {
            "id": row["subscription_id"],
            "url": row["url"],
            "events": list(row["events"]),
            "created_at": row["created_at"],
            "removed_at": row["removed_at"],
            "pending": row["pending"],
            "delivered": row["delivered"],
            "failed": row["failed"],
            "last_attempt_at": row["last_attempt_at"],
        }
        for row in rows
    ]


def check_id(subscription_id: str) -> None:
    if not (
        subscription_id.startswith("wh_")
        and len(subscription_id) == 19
        and all(c in "0123456789abcdef" for c in subscription_id[3:])
    ):
        raise WebhookError(
            f"{subscription_id[:40]!r} is not a webhook id (wh_ and 16 hex digits, as"
            " `noticeflow webhooks list` shows)"
        )


async def remove(pool: asyncpg.Pool, subscription_id: str) -> tuple[bool, int]:
    """Stop a subscription: no further POST (its pending deliveries are cancelled). Returns
    (whether it was live, deliveries cancelled); an unknown id is a :class:`WebhookError`."""
    check_id(subscription_id)
    async with pool.acquire() as c, c.transaction():
        row = await c.fetchrow(
            "UPDATE webhook_subscriptions SET removed_at = coalesce(removed_at, now())"
            " WHERE subscription_id = $1 RETURNING removed_at = now() AS now_removed",
            subscription_id,
        )
        if row is None:
            raise WebhookError(f"no webhook {subscription_id} (see `noticeflow webhooks list`)")
        cancelled = await c.execute(
            "UPDATE webhook_deliveries SET status = 'cancelled', finished_at = now(),"
            " next_attempt_at = NULL WHERE subscription_id = $1 AND status = 'pending'",
            subscription_id,
        )
    return bool(row["now_removed"]), int(cancelled.rsplit(" ", 1)[1])


async def wake_removed(client: Any, subscription_id: str) -> bool:
    """Wake a removed webhook's workflow so that it ends now (a plain signal: a workflow that
    is not running is not started). False when there was none to wake."""
    try:
        await client.get_workflow_handle(webhook_workflow_id(subscription_id)).signal(
            WEBHOOK_WAKE_SIGNAL
        )
    except Exception:  # not found, or already ended: nothing to stop
        return False
    return True


async def _subscription(c: asyncpg.Connection | asyncpg.Pool, subscription_id: str) -> Any:
    return await c.fetchrow(
        "SELECT subscription_id, url, secret_sealed, secret_key_id, removed_at"
        " FROM webhook_subscriptions WHERE subscription_id = $1",
        subscription_id,
    )


# --- the outbox ----------------------------------------------------------------------------------


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return str(value.astimezone(UTC).isoformat().replace("+00:00", "Z"))


@dataclass(frozen=True)
class Mapped:
    """A stored event as a webhook event: its type, its key for the outbox, its data."""

    event_type: str
    key: str
    data: dict[str, Any]


async def _first_sending(c: asyncpg.Connection, e: es.StoredEvent) -> bool:
    """Whether this ``window_open`` is the notice's first (a postponement records its phase
    again: that is no new sending)."""
    earlier = await c.fetchval(
        "SELECT 1 FROM events WHERE stream_id = $1 AND stream_version < $2"
        " AND event_type = 'phase_changed'"
        " AND data->>'phase' IN ('window_open', 'awaiting_effective_date', 'active') LIMIT 1",
        e.stream_id,
        e.version,
    )
    return earlier is None


# The stored events a webhook event may come from (map_event): the outbox reads no others' data.
MAPPED_TYPES = (
    "phase_changed", "notice_postponed", "notice_cancelled", "subprocessor_enabled",
    "subprocessor_disabled", "objection_received",
)  # fmt: skip


async def map_event(c: asyncpg.Connection, e: es.StoredEvent) -> Mapped | None:
    """The webhook event a stored event is, if any: ids, dates and flags only."""
    notice_id = notice_id_of(e.stream_id)
    if notice_id is None:
        return None
    d = e.data
    key = str(e.event_id)
    if e.event_type == "phase_changed" and d.get("phase") == "window_open":
        if not await _first_sending(c, e):
            return None
        return Mapped(
            "notice.sent",
            f"notice.sent/{notice_id}",
            {
                "notice_id": notice_id,
                "sent_at": _iso(e.occurred_at),
                "effective_at": _iso(d.get("effective_at")),
                "window_closes_at": _iso(d.get("window_closes_at")),
            },
        )
    if e.event_type == "notice_postponed":
        return Mapped(
            "notice.postponed",
            key,
            {
                "notice_id": notice_id,
                "postponed_at": _iso(e.occurred_at),
                "effective_at_before": _iso(d.get("from")),
                "effective_at": _iso(d.get("to")),
            },
        )
    if e.event_type == "notice_cancelled":
        return Mapped(
            "notice.cancelled",
            key,
            {
                "notice_id": notice_id,
                "cancelled_at": _iso(e.occurred_at),
                "phase_before": d.get("phase"),
            },
        )
    if e.event_type == "subprocessor_enabled":
        return Mapped(
            "subprocessor.enabled",
            key,
            {
                "notice_id": notice_id,
                "customer_id": d["customer_id"],
                "subprocessor": d["subprocessor"],
                "enabled_at": _iso(e.occurred_at),
                "ground": d.get("because"),
            },
        )
    if e.event_type == "subprocessor_disabled":
        return Mapped(
            "subprocessor.disabled",
            key,
            {
                "notice_id": notice_id,
                "customer_id": d["customer_id"],
                "subprocessor": d["subprocessor"],
                "disabled_at": _iso(e.occurred_at),
                "ground": d.get("because"),
            },
        )
    if e.event_type == "objection_received":
        return Mapped(
            "objection.received",
            key,
            {
                "notice_id": notice_id,
                "customer_id": d["customer_id"],
                "received_at": _iso(d.get("received_at")),
                "timely": bool(d.get("timely")),
                "deadline": _iso(d.get("deadline")),
                "request": d.get("request") or "objection",
                "channel": d.get("channel"),
            },
        )
    return None


def body_of(mapped: Mapped, e: es.StoredEvent) -> str:
    """The JSON body, as POSTed on every attempt (Standard Webhooks' type, timestamp, data)."""
    data = {
        **mapped.data,
        "event": {
            "id": str(e.event_id),
            "stream": e.stream_id,
            "version": e.version,
            "position": e.position,
        },
    }
    return json.dumps(
        {"type": mapped.event_type, "timestamp": _iso(e.occurred_at), "data": data},
        separators=(",", ":"),
        sort_keys=True,
    )


async def fill_outbox(pool: asyncpg.Pool, page: int = 1000) -> set[str]:
    """Write the deliveries of every event after the checkpoint; returns the subscriptions that
    got new ones. One follower at a time (an advisory lock), and no subscription added during a
    pass: each page reads the subscriptions and the events in two statements (READ COMMITTED),
    so a subscription committed between them, with events recorded after it, would have those
    events passed by the checkpoint unwritten. :func:`add` takes the same lock, and dates the
    subscription after it."""
    woken: set[str] = set()
    async with pool.acquire() as c:
        while True:
            async with c.transaction():
                await c.execute("SELECT pg_advisory_xact_lock($1)", OUTBOX_LOCK)
                count = await _fill_page(c, page, woken)
            if count < page:
                return woken


async def _fill_page(c: asyncpg.Connection, page: int, woken: set[str]) -> int:
    row = await c.fetchrow(
        "SELECT tx_id, position FROM projection_checkpoints WHERE name = $1", CHECKPOINT
    )
    after = es.Checkpoint(row["tx_id"], row["position"]) if row else es.Checkpoint()
    subscriptions = await c.fetch(
        "SELECT subscription_id, events, created_at FROM webhook_subscriptions"
        " WHERE removed_at IS NULL"
    )
    if not subscriptions:  # nobody listens: move past everything committed, read nothing
        last = await c.fetchrow(
            "SELECT tx_id, position FROM events"
            " WHERE tx_id < pg_snapshot_xmin(pg_current_snapshot())"
            " ORDER BY tx_id DESC, position DESC LIMIT 1"
        )
        if last is not None and (last["tx_id"], last["position"]) > (after.tx_id, after.position):
            await _move(c, es.Checkpoint(last["tx_id"], last["position"]))
        return 0
    # Only the types a webhook event comes from are read with their data (map_event); the
    # checkpoint moves past every event of the page (a delivery event per customer mailed).
    events, last, read = await es.read_of_types(c, after, page, MAPPED_TYPES)
    heads = {
        r["stream_id"]: r["version"]
        for r in await c.fetch(
            "SELECT stream_id, version FROM event_streams WHERE stream_id = ANY($1::text[])",
            sorted({e.stream_id for e in events}),
        )
    }
    rows = []
    for e in events:
        if e.version > heads.get(e.stream_id, 0):
            continue  # no head covers it: not appended by the product (the projector skips it too)
        mapped = await map_event(c, e)
        if mapped is None:
            continue
        body = body_of(mapped, e)
        for s in subscriptions:
            # A subscription hears what happens after it was added, not the store's past.
            if mapped.event_type in s["events"] and e.recorded_at >= s["created_at"]:
                sid = s["subscription_id"]
                rows.append(
                    (sid, mapped.key, message_id(sid, mapped.key), mapped.event_type,
                     e.event_id, body)
                )  # fmt: skip
    if rows:
        inserted = await c.fetch(
            "INSERT INTO webhook_deliveries (subscription_id, event_key, message_id, event_type,"
            " event_id, body) SELECT * FROM unnest($1::text[], $2::text[], $3::text[],"
            " $4::text[], $5::uuid[], $6::text[]) ON CONFLICT DO NOTHING RETURNING subscription_id",
            *(list(column) for column in zip(*rows, strict=True)),
        )
        woken.update(r["subscription_id"] for r in inserted)
    if last is not None:
        await _move(c, last)
    return read


async def _move(c: asyncpg.Connection, to: es.Checkpoint) -> None:
    await c.execute(
        "INSERT INTO projection_checkpoints (name, tx_id, position) VALUES ($1, $2, $3)"
        " ON CONFLICT (name) DO UPDATE SET tx_id = $2, position = $3",
        CHECKPOINT,
        to.tx_id,
        to.position,
    )


async def waiting(pool: asyncpg.Pool) -> list[str]:
    """Live subscriptions whose oldest pending delivery is due: never attempted, or its next
    attempt's time has come (the sweep wakes their workflows). One in retry backoff is not: its
    activity is waiting for Temporal's retry already, and a wake would only lengthen its history
    (a signal a minute for each dead endpoint)."""
    rows = await pool.fetch(
        "SELECT s.subscription_id FROM webhook_subscriptions s"
        " CROSS JOIN LATERAL (SELECT d.next_attempt_at FROM webhook_deliveries d"
        "  WHERE d.subscription_id = s.subscription_id AND d.status = 'pending'"
        "  ORDER BY d.delivery_id LIMIT 1) oldest"
        " WHERE s.removed_at IS NULL"
        " AND (oldest.next_attempt_at IS NULL OR oldest.next_attempt_at <= now())"
    )
    return sorted(r["subscription_id"] for r in rows)


Wake = Callable[[Sequence[str]], Awaitable[None]]


def temporal_waker(client: Any, task_queue: str) -> Wake:
    """Wake (signal-with-start) each subscription's delivery workflow on the webhooks' queue."""

    async def wake(subscription_ids: Sequence[str]) -> None:
        for subscription_id in subscription_ids:
            try:
                await client.start_workflow(
                    WEBHOOK_WORKFLOW_TYPE,
                    subscription_id,
                    id=webhook_workflow_id(subscription_id),
                    task_queue=webhook_task_queue(task_queue),
                    start_signal=WEBHOOK_WAKE_SIGNAL,
                    static_summary=f"deliver webhook {subscription_id}",
                )
            except Exception as error:  # the sweep tries again
                log.warning(
                    "could not wake a webhook's delivery",
                    subscription_id=subscription_id,
                    error_type=type(error).__name__,
                )

    return wake


async def run_outbox(
    pool: asyncpg.Pool,
    wake: Wake,
    stop: asyncio.Event,
    poll_seconds: float = 2.0,
    sweep_seconds: float = 60.0,
) -> None:
    """Keep the outbox filled until ``stop``, woken by the store's NOTIFY (polling as a
    fallback); every ``sweep_seconds`` wake every subscription that still has a delivery pending
    (a wake lost while Temporal was away)."""
    swept = float("-inf")  # the first round sweeps (the monotonic clock may be near 0)

    async def step() -> None:
        nonlocal swept
        new = await fill_outbox(pool)
        if time.monotonic() - swept >= sweep_seconds:
            new |= set(await waiting(pool))
            swept = time.monotonic()  # after it: a failed sweep is tried again next round
        if new:
            await wake(sorted(new))

    await follow(pool, stop, step, what="webhook outbox", poll_seconds=poll_seconds)


# --- delivery ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """One POST: ``delivered``, ``retry`` (transient) or ``failed`` (lasting)."""

    outcome: str
    status_code: int | None
    error: str | None
    duration_ms: int
    # What went wrong when there was no answer, in a word for the logs (never the URL or host):
    # "refused", "unresolved", "timeout" or the connection error's type.
    error_type: str | None = None


def sign(secret: str, msg_id: str, at: datetime, body: str) -> dict[str, str]:
    """The Standard Webhooks headers for one attempt (the timestamp is the attempt's)."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, at, body),
        "content-type": "application/json",
        "user-agent": "noticeflow-webhooks/1",
    }


async def post(
    url: str, secret: str, msg_id: str, body: str, allow_private: bool, timeout: float = TIMEOUT
) -> Outcome:
    """POST one signed message to an address just checked (never a redirect), within
    ``timeout`` seconds overall: resolving, connecting, sending and the answer's status line and
    headers together (httpx's own timeout bounds each read only, so a receiver that drips bytes,
    or a lookup that hangs, would hold the attempt for ever). At most :data:`READ_LIMIT` bytes
    of the answer's body are read, never kept."""
    started = time.monotonic()

    def done(
        outcome: str, status: int | None = None, error: str | None = None, kind: str | None = None
    ) -> Outcome:
        return Outcome(outcome, status, error, int((time.monotonic() - started) * 1000), kind)

    try:
        async with asyncio.timeout(timeout):
            host = ascii_host(url)
            if host is None:  # stored before IDNA2008 was asked: never resolve a guess
                error = "refused: the host is not a valid internationalised domain name (IDNA2008)"
                return done("failed", error=error, kind="refused")
            try:
                addresses = await resolve(host, _port(url), allow_private)
            except Refused as error:
                return done("failed", error=f"refused: {error}", kind="refused")
            except Unresolved as error:
                return done("retry", error=str(error), kind="unresolved")
            headers = sign(secret, msg_id, datetime.now(UTC), body)
            try:
                status = await post_to(addresses, url, headers, body, timeout)
            except httpx.TimeoutException:
                return done("retry", error="no answer in time", kind="timeout")
            except (httpx.HTTPError, OSError) as error:
                kind = type(error).__name__
                return done("retry", error=f"connection failed ({kind})", kind=kind)
    except TimeoutError:
        return done("retry", error=f"no answer within {timeout:g} s", kind="timeout")
    if 200 <= status < 300:
        return done("delivered", status)
    if status >= 500 or status in RETRIED_STATUSES:
        return done("retry", status, f"HTTP {status}")
    if 300 <= status < 400:
        return done("failed", status, f"HTTP {status}: redirects are not followed")
    return done("failed", status, f"HTTP {status}")


async def post_to(
    addresses: Sequence[str], url: str, headers: dict[str, str], body: str, timeout: float
) -> int:
    """POST to each checked address of the URL's host in turn until one connects (a dead IPv6
    address does not fail a host whose IPv4 one works), with the original ``Host`` and, over
    HTTPS, the original name for SNI and the certificate. Returns the status code once the
    answer's head is in (then reads at most :data:`READ_LIMIT` bytes of its body, for a moment
    at most, and closes); raises the last connection error when none connects, or the error of
    the one that did. The caller bounds the whole (:func:`post`)."""
    parts = urlsplit(url)
    host = ascii_host(url) or ""
    netloc = parts.netloc.rpartition("@")[2]
    if not netloc.isascii():  # the name as resolved (IDNA2008), never the raw Unicode
        netloc = f"{host}:{parts.port}" if parts.port else host
    headers = {**headers, "host": netloc}
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    last: Exception | None = None
    async with httpx.AsyncClient(
        timeout=timeout, follow_redirects=False, trust_env=False
    ) as client:
        for address in addresses:
            literal = f"[{address}]" if ":" in address else address
            netloc = f"{literal}:{parts.port}" if parts.port else literal
            pinned = parts._replace(netloc=netloc).geturl()
            try:
                async with client.stream(
                    "POST", pinned, content=body.encode(), headers=headers, extensions=extensions
                ) as response:
                    await _read_some(response)
                    return response.status_code
            except (httpx.ConnectError, httpx.ConnectTimeout) as error:
                last = error  # nothing was sent to this address: the next one
    assert last is not None
    raise last


async def _read_some(response: httpx.Response) -> None:
    """Read (and drop) at most READ_LIMIT bytes of a body, for at most BODY_SECONDS: the status
    is the answer; a huge or endless body, or one that stalls, does not hold the attempt."""
    read = 0
    with contextlib.suppress(httpx.HTTPError, TimeoutError):
        async with asyncio.timeout(BODY_SECONDS):
            async for chunk in response.aiter_raw():
                read += len(chunk)
                if read >= READ_LIMIT:
                    break


def retry_delay(attempts: int, first: timedelta = RETRY_FIRST) -> timedelta:
    """How long after its ``attempts``-th failure a delivery is tried again: ``first``,
    doubling, at most an hour."""
    return min(first * (2 ** min(max(attempts - 1, 0), 30)), RETRY_MAX)


class RetryLater(Exception):
    """A delivery failed transiently: try the subscription again after ``delay``. The message is
    one short line of ids and the failure's code or type (never the URL, nor its host): it is
    the activity failure Temporal records."""

    def __init__(self, subscription_id: str, delay: timedelta, reason: str) -> None:
        super().__init__(f"webhook {subscription_id}: {reason}; next attempt in {delay}")
        self.delay = delay


@dataclass(frozen=True)
class Round:
    delivered: int = 0
    failed: int = 0
    more: bool = False  # stopped at the batch's end with deliveries still pending
    stopped: bool = False  # removed (or unknown), or its secret unreadable: the workflow ends
    reason: str | None = None  # why it stopped: REMOVED or UNREADABLE


class Deliverer:
    """Delivers one subscription's pending deliveries, oldest first."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        allow_private: bool = False,
        give_up_after: timedelta = GIVE_UP_AFTER,
        retry_first: timedelta = RETRY_FIRST,
        timeout: float = TIMEOUT,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
    ) -> None:
        self.pool = pool
        self.heartbeat_seconds = heartbeat_seconds
        self.allow_private = allow_private
        self.give_up_after = give_up_after
        self.retry_first = retry_first
        self.timeout = timeout

    async def deliver_pending(
        self,
        subscription_id: str,
        batch: int = 100,
        progress: Callable[..., None] | None = None,
    ) -> Round:
        """Deliver up to ``batch`` pending deliveries in order. A transient failure records its
        attempt and raises :class:`RetryLater` (the next attempt goes to that same delivery);
        a lasting one, or one past ``give_up_after``, fails it and the next proceeds."""
        delivered = failed = 0
        for _ in range(batch):
            sub = await _subscription(self.pool, subscription_id)
            if sub is None or sub["removed_at"] is not None:
                if sub is not None:
                    await remove(self.pool, subscription_id)  # cancels what is still pending
                return Round(delivered, failed, stopped=True, reason=REMOVED)
            row = await self.pool.fetchrow(
                "SELECT delivery_id, message_id, body, attempts, first_attempt_at"
                " FROM webhook_deliveries WHERE subscription_id = $1 AND status = 'pending'"
                " ORDER BY delivery_id LIMIT 1",
                subscription_id,
            )
            if row is None:
                return Round(delivered, failed)
            try:
                secret = open_secret(
                    subscription_id, bytes(sub["secret_sealed"]), sub["secret_key_id"]
                )
            except SecretUnreadable:
                # Nothing can be signed for it again: its pending deliveries fail (recorded),
                # and the workflow ends. A later event starts another, which does the same.
                failed += await self._fail_pending(subscription_id, UNREADABLE)
                log.warning("webhook secret unreadable", subscription_id=subscription_id)
                return Round(delivered, failed, stopped=True, reason=UNREADABLE)
            at = datetime.now(UTC)
            # The give-up clock starts before the POST: an attempt that never records its end
            # (a worker killed mid-POST) still counts against the delivery's 24 h.
            first = await self.pool.fetchval(
                "UPDATE webhook_deliveries SET first_attempt_at = coalesce(first_attempt_at, $2)"
                " WHERE delivery_id = $1 RETURNING first_attempt_at",
                row["delivery_id"],
                at,
            )
            async with _beating(progress, self.heartbeat_seconds, row["delivery_id"]):
                outcome = await post(
                    sub["url"],
                    secret,
                    row["message_id"],
                    row["body"],
                    self.allow_private,
                    self.timeout,
                )
            attempt = row["attempts"] + 1
            delay = retry_delay(attempt, self.retry_first)
            final = outcome.outcome
            if final == "retry" and at + delay - first > self.give_up_after:
                final = "failed"  # the time given to this delivery is up: the next proceeds
            next_at = at + delay if final == "retry" else None
            await self._record(row["delivery_id"], attempt, at, outcome, final, next_at)
            ids = {
                "subscription_id": subscription_id,
                "delivery_id": row["delivery_id"],
                "attempt": attempt,
                "status_code": outcome.status_code,
                "error_type": outcome.error_type,
            }
            if progress is not None:
                progress(row["delivery_id"])
            if final == "retry":
                # One line for a failed attempt (Temporal's own log of the activity failure is a
                # traceback: the activity raises it as benign, which Temporal logs at DEBUG).
                assert next_at is not None
                log.warning(
                    "webhook delivery failed; will retry",
                    **ids,
                    next_attempt_at=next_at,
                    retry_in_seconds=delay.total_seconds(),
                )
                what = f"HTTP {outcome.status_code}" if outcome.status_code else outcome.error_type
                raise RetryLater(
                    subscription_id,
                    delay,
                    f"delivery {row['delivery_id']} attempt {attempt} failed ({what})",
                )
            log.info("webhook attempt", **ids, outcome=final)
            delivered += final == "delivered"
            failed += final == "failed"
        more = bool(
            await self.pool.fetchval(
                "SELECT 1 FROM webhook_deliveries WHERE subscription_id = $1"
                " AND status = 'pending' LIMIT 1",
                subscription_id,
            )
        )
        return Round(delivered, failed, more=more)

    async def _fail_pending(self, subscription_id: str, reason: str) -> int:
        """Fail every pending delivery of the subscription, without a POST, for ``reason``."""
        done = await self.pool.execute(
            "UPDATE webhook_deliveries SET status = 'failed', last_error = $2, finished_at = now(),"
            " next_attempt_at = NULL WHERE subscription_id = $1 AND status = 'pending'",
            subscription_id,
            f"{reason}: its stored secret does not open (the row was altered); not sent",
        )
        return int(done.rsplit(" ", 1)[1])

    async def _record(
        self,
        delivery_id: int,
        attempt: int,
        at: datetime,
        outcome: Outcome,
        final: str,
        next_at: datetime | None,
    ) -> None:
        error = outcome.error
        if final == "failed" and outcome.outcome == "retry":
            error = f"{error}; gave up after {self.give_up_after} of attempts"
        async with self.pool.acquire() as c, c.transaction():
            await c.execute(
                "INSERT INTO webhook_attempts (delivery_id, attempt, attempted_at, status_code,"
                " error, duration_ms, outcome, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6,"
                " $7, $8) ON CONFLICT DO NOTHING",
                delivery_id,
                attempt,
                at,
                outcome.status_code,
                error,
                outcome.duration_ms,
                final,
                next_at,
            )
            await c.execute(
                "UPDATE webhook_deliveries SET attempts = $2, last_attempt_at = $3,"
                " first_attempt_at = coalesce(first_attempt_at, $3), last_status_code = $4,"
                " last_error = $5, next_attempt_at = $6,"
                " status = CASE WHEN $7 = 'retry' THEN status ELSE $7 END,"
                " finished_at = CASE WHEN $7 = 'retry' THEN NULL ELSE $3 END"
                " WHERE delivery_id = $1",
                delivery_id,
                attempt,
                at,
                outcome.status_code,
                error,
                next_at,
                final,
            )


@contextlib.asynccontextmanager
async def _beating(
    progress: Callable[..., None] | None, every: float, *details: Any
) -> AsyncIterator[None]:
    """Call ``progress`` (the activity's heartbeat) every ``every`` seconds while the body runs,
    from a small task of its own: a POST under way is not taken for a dead activity."""
    if progress is None:
        yield
        return

    async def beat() -> None:
        while True:
            await asyncio.sleep(every)
            progress(*details)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def send_test(pool: asyncpg.Pool, subscription_id: str, allow_private: bool) -> Outcome:
    """`webhooks test`: one signed ``webhook.test`` event POSTed now (not retried), recorded as
    a delivery with its attempt."""
    check_id(subscription_id)
    sub = await _subscription(pool, subscription_id)
    if sub is None:
        raise WebhookError(f"no webhook {subscription_id} (see `noticeflow webhooks list`)")
    if sub["removed_at"] is not None:
        raise WebhookError(f"webhook {subscription_id} was removed")
    secret = open_secret(subscription_id, bytes(sub["secret_sealed"]), sub["secret_key_id"])
    at = datetime.now(UTC)
    key = f"{TEST_EVENT}/{secrets.token_hex(8)}"
    msg_id = message_id(subscription_id, key)
    body = json.dumps(
        {"type": TEST_EVENT, "timestamp": _iso(at), "data": {"subscription_id": subscription_id}},
        separators=(",", ":"),
        sort_keys=True,
    )
    outcome = await post(sub["url"], secret, msg_id, body, allow_private)
    final = "delivered" if outcome.outcome == "delivered" else "failed"
    async with pool.acquire() as c, c.transaction():
        delivery_id = await c.fetchval(
            "INSERT INTO webhook_deliveries (subscription_id, event_key, message_id, event_type,"
            " body, status, attempts, first_attempt_at, last_attempt_at, last_status_code,"
            " last_error, finished_at) VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7, $8, $9, $7)"
            " RETURNING delivery_id",
            subscription_id,
            key,
            msg_id,
            TEST_EVENT,
            body,
            final,
            at,
            outcome.status_code,
            outcome.error,
        )
        await c.execute(
            "INSERT INTO webhook_attempts (delivery_id, attempt, attempted_at, status_code, error,"
            " duration_ms, outcome) VALUES ($1, 1, $2, $3, $4, $5, $6)",
            delivery_id,
            at,
            outcome.status_code,
            outcome.error,
            outcome.duration_ms,
            final,
        )
    return outcome


async def deliveries(
    pool: asyncpg.Pool, subscription_id: str | None = None
) -> list[dict[str, Any]]:
    """The deliveries (newest last), for tests and `webhooks list --deliveries`."""
    rows = await pool.fetch(
        "SELECT delivery_id, subscription_id, message_id, event_type, event_id, body, status,"
        " attempts, first_attempt_at, last_attempt_at, next_attempt_at, last_status_code,"
        " last_error, finished_at FROM webhook_deliveries"
        " WHERE $1::text IS NULL OR subscription_id = $1 ORDER BY delivery_id",
        subscription_id,
    )
    return [dict(row) for row in rows]
