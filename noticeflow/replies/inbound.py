"""The inbound SMTP endpoint: replies to notice mails arrive here (aiosmtpd, in our event loop).

``noticeflow inbound`` runs it alone; ``noticeflow up`` runs it beside the web when a reply address
is configured (always under ``--demo``). In production it sits behind the domain's MX or an inbound
relay that forwards the reply domain to it (docs/replies.md).

Every answer is decided before the sender is told 250, so nothing is lost silently:

* a recipient that is not a reply address of ours: ``550 5.7.1`` (no relaying);
* an unknown or forged token: ``550 5.1.1`` and a security log line (no address, no token);
* a customer erased for good: a recorded rejection (ids only) and ``550 5.1.1``;

* a mail over ``NOTICEFLOW_INBOUND_MAX_BYTES``: ``552 5.3.4`` (aiosmtpd refuses it as it comes;
  its own answer's words are replaced, :class:`_InboundSMTP`);
* a text that cannot be read (not valid UTF-8, or not its declared charset): a recorded rejection
  and ``550 5.6.0`` asking for UTF-8 text;
* the database unreachable, or hung (no answer within ``db_timeout``, 5 s by default, for a
  recipient's lookup or for keeping the mail): ``451 4.3.0``, the sending server retries;
* anything else: kept (:func:`noticeflow.replies.store.receive`), ``250`` with the reply id.

Each recipient is answered at RCPT, so a mail to a good and a refused reply address carries only
the good one into DATA and is kept for it. A customer erased between RCPT and DATA is a recorded
rejection, and the mail is still taken (250) when another recipient's reply was kept.

aiosmtpd logs every command line it reads (addresses included) at INFO; its logger is quieted, and
our own lines carry ids only.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import re
from collections.abc import Awaitable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from email.utils import getaddresses
from typing import Any, AnyStr, TypeVar

import asyncpg
import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session

from noticeflow import keyring
from noticeflow.crypto import erased_ids, load_keys
from noticeflow.domain.replies import ReplyAddress
from noticeflow.replies import store, tokens

logging.getLogger("mail.log").setLevel(logging.WARNING)
log = structlog.get_logger(__name__)

DEFAULT_PORT = 2526
DEFAULT_MAX_BYTES = 1_000_000
DEFAULT_DB_TIMEOUT = 5.0  # seconds a recipient's lookup, or keeping a mail, may take
FILL_EVERY = 60.0  # seconds between fills of new notices' tokens
TEMPORARY = "451 4.3.0 temporary failure, please try again later"
T = TypeVar("T")


class DatabaseTimeout(Exception):
    """The database gave no answer in time (hung, not refusing): answered 451."""


@dataclass
class _Target:
    notice_id: str
    customer_id: str


@dataclass
class _Accepted:
    targets: list[_Target] = field(default_factory=list)


class UnreadableText(ValueError):
    """The mail's text cannot be decoded (our words in the message: no content)."""


def _decode(part: Message) -> str:
    payload = part.get_payload(decode=True)
    raw = payload if isinstance(payload, bytes) else b""
    charset = part.get_content_charset() or "utf-8"
    try:
        return raw.decode(charset)
    except LookupError:
        raise UnreadableText(f"unknown charset {charset[:40]!r}") from None
    except UnicodeDecodeError:
        raise UnreadableText(f"the text is not valid {charset[:40]}") from None


_TAG = re.compile(r"<[^>]*>")
_BLOCK = re.compile(r"<\s*(br|/p|/div|/li|/tr|/h[1-6])\b[^>]*>", re.IGNORECASE)
_QUOTE_BLOCK = re.compile(r"<blockquote\b.*?</blockquote\s*>", re.IGNORECASE | re.DOTALL)
_HEAD = re.compile(r"<(head|style|script)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)


def html_to_text(markup: str) -> str:
    """The words of an HTML-only reply: quoted blocks (``<blockquote>``), head, styles and scripts
    dropped, line breaks kept, tags removed, entities resolved."""
    text = _HEAD.sub("", markup)
    text = _QUOTE_BLOCK.sub("\n", text)
    text = _BLOCK.sub("\n", text)
    return html.unescape(_TAG.sub("", text))


def text_of(message: Message) -> str:
    """The mail's text: its first text/plain part that is no attachment, else its first text/html
    part as text ("" when it has neither). UnreadableText when that part cannot be decoded."""
    plain = markup = None
    for part in message.walk():
        if part.is_multipart() or part.get_content_disposition() == "attachment":
            continue
        kind = part.get_content_type()
        if kind == "text/plain" and plain is None:
            plain = part
        elif kind == "text/html" and markup is None:
            markup = part
    if plain is not None:
        return _decode(plain)
    if markup is not None:
        return html_to_text(_decode(markup))
    return ""


def _header(message: Message, name: str) -> str:
    try:
        value = message.get(name)
        return "" if value is None else " ".join(str(value).split())
    except Exception:  # a header the parser cannot read: as if absent
        return ""


def _address(message: Message) -> str:
    try:
        found = getaddresses([str(message.get("From", ""))])
    except Exception:
        return ""
    return found[0][1].strip() if found else ""


def read_mail(content: bytes, envelope_from: str) -> store.IncomingReply:
    message = message_from_bytes(content, _class=EmailMessage, policy=policy.default)
    auto = _header(message, "Auto-Submitted").lower()
    return store.IncomingReply(
        sender=_address(message),
        envelope_from=envelope_from,
        subject=_header(message, "Subject"),
        text=text_of(message),
        message_id=_header(message, "Message-ID")[:500],
        date=_header(message, "Date")[:200],
        size_bytes=len(content),
        auto_submitted=bool(auto) and auto != "no",
    )


class InboundHandler:
    """aiosmtpd handler: RCPT resolves each reply address; DATA keeps the reply for each."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        address: ReplyAddress,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        auto_act: bool = False,
        ring: keyring.Keyring | None = None,
        db_timeout: float = DEFAULT_DB_TIMEOUT,
    ) -> None:
        self.pool = pool
        self.address = address
        self.max_bytes = max_bytes
        self.auto_act = auto_act
        self.ring = ring
        self.db_timeout = db_timeout
        self._abandoned: set[asyncio.Future[Any]] = set()

    async def _bounded(self, work: Awaitable[T]) -> T:
        """``work`` (database steps) within ``db_timeout``, or DatabaseTimeout. The sender is
        answered at once when it expires; the abandoned work is cancelled and left to unwind in
        the background (against a hung server even its cleanup may wait: never the sender)."""
        task = asyncio.ensure_future(work)
        done, _ = await asyncio.wait({task}, timeout=self.db_timeout)
        if not done:
            task.cancel()
            self._abandoned.add(task)
            task.add_done_callback(self._forget)
            raise DatabaseTimeout
        return task.result()

    def _forget(self, task: asyncio.Future[Any]) -> None:
        self._abandoned.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: an abandoned step's error is no one's to handle

    def _accepted(self, envelope: Envelope) -> _Accepted:
        found = getattr(envelope, "noticeflow_replies", None)
        if found is None:
            found = _Accepted()
            envelope.noticeflow_replies = found  # type: ignore[attr-defined]
        return found

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if not self.address.is_ours(address):
            return "550 5.7.1 relaying denied: only reply addresses are taken here"
        token = self.address.token_of(address)
        try:
            resolved, refusal = await self._bounded(self._resolve(token, session))
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError, DatabaseTimeout) as error:
            log.warning("reply endpoint: database unavailable", error=type(error).__name__)
            return TEMPORARY
        if refusal is not None or resolved is None:
            return refusal or "550 5.1.1 unknown reply address"
        targets = self._accepted(envelope).targets
        if all(
            t.notice_id != resolved.notice_id or t.customer_id != resolved.customer_id
            for t in targets
        ):
            targets.append(_Target(resolved.notice_id, resolved.customer_id))
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def _resolve(
        self, token: str | None, session: Session
    ) -> tuple[tokens.Resolved | None, str | None]:
        """A recipient's (notice, customer), or the refusal to answer it with."""
        resolved = await tokens.resolve(self.pool, token, self.ring) if token else None
        if resolved is None:
            log.warning("reply address unknown", security=True, peer=_peer(session))
            return None, "550 5.1.1 unknown reply address"
        key = await load_keys(self.pool, [resolved.customer_id])
        if resolved.customer_id not in key and await erased_ids(self.pool, [resolved.customer_id]):
            await store.record_rejection(
                self.pool,
                resolved.notice_id,
                resolved.customer_id,
                "customer erased: the reply was refused and not kept",
            )
            return None, "550 5.1.1 this reply address is no longer in use"
        return resolved, None

    async def _keep(self, targets: list[_Target], content: bytes, envelope: Envelope) -> Any:
        """Keep the mail for each recipient: the replies, or the 550 answer for an unreadable
        text (recorded as a rejection for each)."""
        try:
            mail = read_mail(content, str(envelope.mail_from or ""))
        except UnreadableText as error:
            for target in targets:
                await store.record_rejection(
                    self.pool, target.notice_id, target.customer_id,
                    f"unreadable text: {error}", len(content),
                )  # fmt: skip
            return f"550 5.6.0 cannot read the message: {error}; please send UTF-8 text"
        return [
            await store.receive(self.pool, t.notice_id, t.customer_id, mail, auto_act=self.auto_act)
            for t in targets
        ]

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        targets = self._accepted(envelope).targets
        if len(content) > self.max_bytes:
            return f"552 5.3.4 message too big: at most {self.max_bytes} bytes"
        try:
            kept = await self._bounded(self._keep(targets, content, envelope))
            if isinstance(kept, str):
                return kept
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError, DatabaseTimeout) as error:
            log.warning("reply endpoint: database unavailable", error=type(error).__name__)
            return TEMPORARY
        except Exception as error:  # a bug must not wedge the sender: it is told, we are told
            log.error("reply not kept", error=type(error).__name__)
            return "554 5.3.0 the reply could not be processed"
        # One answer for the whole mail (SMTP has no per-recipient answer after DATA): a reply
        # kept for any recipient is 250, since a 550 would bounce a reply we keep and a retry
        # would not reach the refused one either. Only when none was kept (every customer
        # erased since RCPT) is it refused.
        ids = " ".join(reply.reply_id for reply in kept if reply.status != store.REJECTED)
        if not ids:
            return "550 5.1.1 this reply address is no longer in use"
        return f"250 2.0.0 reply received ({ids})"


def _peer(session: Session) -> str:
    peer: Any = session.peer
    return str(peer[0]) if isinstance(peer, tuple) and peer else "?"


class _InboundSMTP(SMTP):
    """aiosmtpd's protocol, answering a mail over the size limit with the enhanced status code
    (``552 5.3.4``) instead of its own words: at MAIL FROM when the sender declares a SIZE over it,
    and at the end of DATA when the mail turned out larger (aiosmtpd discards it as it comes)."""

    _OWN = (
        "552 Error: Too much mail data",
        "552 Error: message size exceeds fixed maximum message size",
    )

    async def push(self, status: AnyStr) -> None:
        text = status.decode() if isinstance(status, bytes) else status
        if text in self._OWN:
            status = f"552 5.3.4 message too big: at most {self.data_size_limit} bytes"  # type: ignore[assignment]
        await super().push(status)


class InboundServer:
    """The endpoint on ``host:port`` in the running event loop; ``async with`` starts and stops
    it, and fills the reply tokens of new notices every :data:`FILL_EVERY` seconds."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        address: ReplyAddress,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        auto_act: bool = False,
        ring: keyring.Keyring | None = None,
        db_timeout: float = DEFAULT_DB_TIMEOUT,
    ) -> None:
        self.handler = InboundHandler(
            pool, address, max_bytes=max_bytes, auto_act=auto_act, ring=ring, db_timeout=db_timeout
        )
        self.host, self.port, self.max_bytes = host, port, max_bytes
        self._server: asyncio.Server | None = None
        self._filler: asyncio.Task[None] | None = None

    def _protocol(self) -> SMTP:
        return _InboundSMTP(
            self.handler,
            data_size_limit=self.max_bytes,
            enable_SMTPUTF8=True,
            hostname=self.handler.address.domain,
            ident="noticeflow inbound",
            timeout=60,
        )

    async def __aenter__(self) -> InboundServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._filler = asyncio.create_task(self._fill_now_and_then())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._filler is not None:
            self._filler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._filler
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _fill_now_and_then(self) -> None:
        while True:
            try:
                await tokens.fill(self.handler.pool, self.handler.ring)
            except Exception as error:  # the next round tries again; a miss fills too
                log.warning("reply tokens not filled", error=type(error).__name__)
            await asyncio.sleep(FILL_EVERY)


async def serve(settings: Any, stop: asyncio.Event, pool: asyncpg.Pool | None = None,
                started: asyncio.Future[str] | None = None) -> None:  # fmt: skip
    """Serve the endpoint with ``settings`` (reply address, host, port, limits) until ``stop``."""
    from noticeflow import db

    address = ReplyAddress.parse(settings.reply_address)
    own = pool is None
    pool = pool or await db.create_pool(settings.require_database_url())
    try:
        server = InboundServer(
            pool, address, settings.inbound_host, settings.inbound_port,
            max_bytes=settings.inbound_max_bytes, auto_act=settings.reply_auto_act,
            db_timeout=float(getattr(settings, "inbound_db_timeout", None) or DEFAULT_DB_TIMEOUT),
        )  # fmt: skip
        try:
            async with server:
                if started is not None and not started.done():
                    started.set_result(f"smtp://{server.host}:{server.port}")
                log.info("reply endpoint listening", port=server.port)
                await stop.wait()
        except OSError as error:
            if started is not None and not started.done():
                started.set_exception(error)
                return
            raise
    finally:
        if own:
            await pool.close()
