"""Mail: rendering (Jinja2, text and HTML) and sending one message over SMTP (aiosmtplib)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import re
import secrets
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from email import policy
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote, urlparse

import aiosmtplib
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import (
    COMMAND_INJECTION_REGEX,
    PERIOD_REGEX,
    normalize_message_line_endings,
)
from jinja2 import (
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    PackageLoader,
    StrictUndefined,
    nodes,
)
from markupsafe import escape

from noticeflow.crypto import ERASED, CustomerKey, Field, open_sealed
from noticeflow.domain.language import DEFAULT as DEFAULT_LANGUAGE
from noticeflow.domain.language import language_of

SMTP_POLICY = policy.compat32.clone(linesep="\r\n")
# How long a contact may keep getting only temporary (4xx) replies before its delivery is recorded
# as failed for good (NOTICEFLOW_SMTP_GIVE_UP_AFTER): the customer becomes `undelivered` (rule 4).
GIVE_UP_AFTER = timedelta(hours=72)


def message_id(key: CustomerKey, notice_id: str, email: str, kind: str, mail_from: str) -> str:
    """Deterministic Message-ID, keyed with the customer's own key (its ``ids`` subkey): a retry
    after an unknown outcome carries the same id, and without the key no guess list of addresses
    recovers the one behind an id. (A ledger row keeps the id it was first written with.)"""
    digest = key.ident("message-id", notice_id, email.lower(), kind)
    domain = mail_from.rsplit("@", 1)[-1] or "noticeflow.localhost"
    return f"<{digest[:32]}@{domain}>"


class MailRenderer:
    """Renders the text and HTML parts; templates can be overridden from a directory."""

    def __init__(self, override_dir: Path | None = None) -> None:
        loaders: list[Any] = [PackageLoader("noticeflow", "templates/mail")]
        if override_dir:
            loaders.insert(0, FileSystemLoader(str(override_dir)))
        # Loaded once per process (no stat of the template files per message): a worker mails
        # one notice with the templates it started with; a changed NOTICEFLOW_TEMPLATE_DIR is
        # read by the next worker start.
        self._env = Environment(
            loader=ChoiceLoader(loaders),
            undefined=StrictUndefined,
            autoescape=False,
            auto_reload=False,
        )
        self._html_env = self._env.overlay(autoescape=True)

        self._only_printed: dict[tuple[str, frozenset[str]], bool] = {}

    def render(self, template: str, context: dict[str, Any]) -> tuple[str, str, str]:
        """Returns (subject, text, html), from the templates of the context's ``language`` (a
        BCP 47 tag: ``<language>/<template>``; English, the default, at the top level)."""
        subject, text, html = self._render(template, context)
        return subject.strip(), text, html

    def _render(self, template: str, context: dict[str, Any]) -> tuple[str, str, str]:
        """The subject as the template set it (not stripped), the text and the HTML."""
        template = localised(template, context.get("language"))
        text_template = self._env.get_template(f"{template}.txt.j2")
        module = text_template.make_module(context)
        text = str(module)
        subject = getattr(module, "subject", "")
        html = self._html_env.get_template(f"{template}.html.j2").render(context)
        return str(subject), text, html

    def batch(self) -> BatchRenderer:
        """A renderer for many customers' mails at once (see BatchRenderer)."""
        return BatchRenderer(self)

    def only_printed(self, template: str, names: frozenset[str]) -> bool:
        """Whether both parts of ``template`` (a localised name) use each of ``names`` only
        printed as it is (``{{ name }}``: no filter, test, condition or assignment) and include,
        import and capture nothing: then rendering with a placeholder for them and putting the
        values in its place gives exactly what rendering with the values gives."""
        known = self._only_printed.get((template, names))
        if known is None:
            known = self._only_printed[(template, names)] = all(
                _only_printed(env, f"{template}{suffix}", names)
                for env, suffix in ((self._env, ".txt.j2"), (self._html_env, ".html.j2"))
            )
        return known


def _only_printed(env: Environment, name: str, names: frozenset[str]) -> bool:
    if env.loader is None:
        return False
    source, _filename, _uptodate = env.loader.get_source(env, name)
    tree = env.parse(source)
    captures = (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport, nodes.AssignBlock,
                nodes.FilterBlock, nodes.Macro, nodes.CallBlock, nodes.Scope)  # fmt: skip
    if any(True for _node in tree.find_all(captures)):
        return False
    used = sum(1 for node in tree.find_all(nodes.Name) if node.name in names)
    printed = sum(
        1
        for output in tree.find_all(nodes.Output)
        for node in output.nodes
        if isinstance(node, nodes.Name) and node.name in names
    )
    return used == printed


def _personal(name: str) -> bool:
    """A context value that is one customer's own (the rest is the same for many of them)."""
    return name in ("customer_name", "customer_id") or name.endswith("_url")


def _frozen(value: Any) -> Any:
    """A context value as part of a cache key: equal values, equal keys; an object of another
    kind stands for itself (the cache keeps it, so its id is not reused meanwhile)."""
    if value is None or isinstance(value, (str, int, float, datetime)):
        return value
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, *(_frozen(item) for item in value))
    if isinstance(value, dict):
        return ("dict", *((key, _frozen(item)) for key, item in sorted(value.items())))
    return ("object", id(value), value.__class__)


class BatchRenderer:
    """Renders many customers' mails, each template once per distinct shared context.

    Only the customer's name, id and links (``*_url``) differ between most customers' mails:
    the parts are rendered once with placeholders for those, and each customer's values are put
    in their place (HTML-escaped in the HTML part, as the template escapes them). Only for
    templates that print those values as they are (MailRenderer.only_printed), and each cached
    rendering is checked once against a real one (and not used unless equal); anything else is
    rendered for each customer. Rendering was a tenth of a sending worker's CPU per mail."""

    def __init__(self, renderer: MailRenderer) -> None:
        self._renderer = renderer
        self._cache: dict[Any, _Parts | None] = {}
        self._keep: list[Any] = []  # what a key names by id lives as long as the cache

    def render(self, template: str, context: dict[str, Any]) -> tuple[str, str, str]:
        personal = {name: value for name, value in context.items() if _personal(name)}
        if (
            not personal
            or not all(isinstance(v, str) and _SLOT not in v for v in personal.values())
            or not self._renderer.only_printed(
                localised(template, context.get("language")), frozenset(personal)
            )
        ):
            return self._renderer.render(template, context)
        shared = {name: value for name, value in context.items() if name not in personal}
        key = (template, tuple(sorted(personal)), _frozen(shared))
        if key in self._cache:
            cached = self._cache[key]
            if cached is None:
                return self._renderer.render(template, context)
            subject, text, html = _filled(cached, personal)
            return subject.strip(), text, html
        real = self._renderer._render(template, context)
        slots = {name: f"{_SLOT}{i}@" for i, name in enumerate(sorted(personal))}
        try:
            parts = _split(self._renderer._render(template, {**shared, **slots}), slots)
        except Exception:  # (a template that fails on a placeholder: rendered for each)
            parts = None
        same = parts is not None and _filled(parts, personal) == real
        self._cache[key] = parts if same else None
        self._keep.append(shared)
        return real[0].strip(), real[1], real[2]


# A placeholder's start: no template escapes or changes it, and no customer's value holds it.
_SLOT = "@nf-" + secrets.token_hex(8) + "-slot"


# Each part as its text between placeholders and the names of the values in their places.
_Parts = tuple[tuple[list[str], list[str]], ...]


def _split(rendered: tuple[str, str, str], slots: dict[str, str]) -> _Parts:
    by_slot = {slot: name for name, slot in slots.items()}
    pattern = re.compile("|".join(re.escape(slot) for slot in slots.values()))
    parts = []
    for text in rendered:
        pieces = pattern.split(text)
        names = [by_slot[found] for found in pattern.findall(text)]
        parts.append((pieces, names))
    return tuple(parts)


def _filled(parts: _Parts, values: dict[str, str]) -> tuple[str, str, str]:
    """The subject, text and HTML with the values in the placeholders' places (escaped in the
    HTML, as the template escapes a value it prints)."""
    escaped = {name: str(escape(value)) for name, value in values.items()}
    filled = []
    for index, (pieces, names) in enumerate(parts):
        chosen = escaped if index == 2 else values
        out = [pieces[0]]
        for name, piece in zip(names, pieces[1:], strict=True):
            out += (chosen[name], piece)
        filled.append("".join(out))
    subject, text, html = filled
    return subject, text, html


@functools.lru_cache(maxsize=64)
def localised(template: str, language: str | None) -> str:
    """The template's name in a language: ``de/notice`` for German, ``notice`` for English (and
    for a language without templates: noticeflow/domain/language.py says which have them)."""
    base = language_of(language)
    return template if base == DEFAULT_LANGUAGE else f"{base}/{template}"


@dataclass(frozen=True)
class OutgoingMail:
    sender: str
    recipient: str
    data: bytes


def build_message(
    *,
    mail_from: str,
    to: str,
    subject: str,
    text: str,
    html: str,
    msg_id: str,
    date: datetime,
    reply_to: str | None = None,
    calendar: CalendarPart | None = None,
) -> OutgoingMail:
    """A text + HTML message (multipart/alternative, UTF-8, base64 parts) as wire bytes; with
    ``calendar`` (the notice's deadline, noticeflow/calendar.py), multipart/mixed of that and an
    attached ``text/calendar`` part.

    Written out directly: building it with the email package's MIME classes was the largest
    single cost of a sending worker in bench/notify.py. Header values that would need folding or
    encoding beyond an RFC 2047 subject (non-ASCII or very long addresses) take the email
    package's path instead. A line break in an address or the Message-ID raises ValueError (it
    could only ever inject a header); one in the subject becomes a space. ``reply_to``: the
    customer's reply address (docs/replies.md), as a Reply-To header when given.
    """
    headers = (mail_from, to, msg_id, reply_to or "")
    for name, value in (
        ("From", mail_from), ("To", to), ("Message-ID", msg_id), ("Reply-To", reply_to or "")
    ):  # fmt: skip
        if "\r" in value or "\n" in value:  # never a valid address: refuse, never inject a header
            raise ValueError(f"the {name} header value contains a line break")
    subject = _unfold(subject)
    if not all(value.isascii() and len(value) < 900 for value in headers):
        return _build_with_email_package(
            mail_from=mail_from, to=to, subject=subject, text=text, html=html, msg_id=msg_id,
            date=date, reply_to=reply_to, calendar=calendar,
        )  # fmt: skip
    boundary = "==nf_" + hashlib.sha256(msg_id.encode()).hexdigest()[:24]
    head = (
        f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n'
        "MIME-Version: 1.0\r\n"
        f"From: {mail_from}\r\n"
        f"To: {to}\r\n"
        + (f"Reply-To: {reply_to}\r\n" if reply_to else "")
        + f"Subject: {_subject_header(subject)}\r\n"
        f"Message-ID: {msg_id}\r\n"
        f"Date: {_date_header(date.replace(microsecond=0))}\r\n"
        "Auto-Submitted: auto-generated\r\n"
        "\r\n"
    )
    data = b"".join((
        head.encode("ascii"),
        _part(boundary, "text/plain", text),
        _part(boundary, "text/html", html),
        f"--{boundary}--\r\n".encode("ascii"),
    ))  # fmt: skip
    if calendar is not None:
        data = _with_calendar(data, boundary, calendar)
    return OutgoingMail(mail_from, to, data)


@dataclass(frozen=True)
class CalendarPart:
    """An iCalendar object (RFC 5545: CRLF lines) to attach, and its file name."""

    filename: str
    data: bytes


def _with_calendar(data: bytes, boundary: str, calendar: CalendarPart) -> bytes:
    """The alternative parts written by build_message, nested in multipart/mixed (boundary
    ``<boundary>m``) beside the calendar: the first header line (Content-Type) moves into the
    mixed part."""
    head, _, body = data.partition(b"\r\n\r\n")
    outer = f"{boundary}m"
    _alternative, rest = head.split(b"\r\n", 1)  # the first line: the Content-Type
    encoded = base64.encodebytes(calendar.data).replace(b"\n", b"\r\n")
    return b"".join((
        f'Content-Type: multipart/mixed; boundary="{outer}"\r\n'.encode("ascii"),
        rest, b"\r\n\r\n",
        f"--{outer}\r\n"
        f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'.encode("ascii"),
        body,
        f"--{outer}\r\n"
        'Content-Type: text/calendar; charset="utf-8"; method=PUBLISH\r\n'
        f'Content-Disposition: attachment; filename="{calendar.filename}"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n".encode("ascii"),
        encoded,
        f"--{outer}--\r\n".encode("ascii"),
    ))  # fmt: skip


def _unfold(subject: str) -> str:
    """A subject is one line: a line break (from a template or a customer's name) becomes a space.
    Surrounding blanks are dropped: a reader drops the blanks after "Subject:" (RFC 5322 reads
    them as folding white space), so only a stripped subject reads back as it was written."""
    if "\r" not in subject and "\n" not in subject:
        return subject.strip()
    return re.sub(r"[ \t]*[\r\n]+[ \t]*", " ", subject).strip()


ADDRESS_LIKE = re.compile(r"[^\s<>()\[\]'\",;:]+@[^\s<>()\[\]'\",;:]+")


def scrub(text: str, address: str = "", keep: str = "", limit: int = 500) -> str:
    """A reply or error text fit for the ledger, the events and the logs: one line, bounded, and
    without e-mail addresses (servers echo the recipient; rule 13): ``address`` wherever it
    appears and anything that looks like one — except ``keep`` (our own Message-ID, which some
    servers echo and which identifies nothing personal)."""
    kept = keep.strip("<>")
    if address and address.lower() in text.lower():  # (most replies do not echo it)
        text = re.sub(re.escape(address), "<address>", text, flags=re.IGNORECASE)
    line = " ".join(text.split())
    line = ADDRESS_LIKE.sub(
        lambda found: found.group(0) if kept and found.group(0) == kept else "<address>", line
    )
    return line if len(line) <= limit else line[: limit - 1] + "…"


# RFC 3463 enhanced status code (class.subject.detail) at the start of a reply line, after the code.
ENHANCED_STATUS = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")
REPLY_CODE = re.compile(r"([2-5]\d\d)(?:[ -]|$)")


@dataclass(frozen=True)
class SmtpReply:
    """A server's reply (or our own words for a message that never reached one): the code, the
    enhanced status (RFC 3463, e.g. ``5.1.1``; None when the server gave none) and the text.

    The text may echo the recipient's address or name, even after :func:`scrub`: it is stored
    sealed with the customer's key and never logged. Code and status identify nobody: they are
    what logs, error messages and metrics carry (:attr:`summary`)."""

    code: int | None
    status: str | None
    text: str

    @property
    def summary(self) -> str:
        """Code and enhanced status only ("550 5.1.1"): fit for logs and error messages."""
        parts = [str(self.code)] if self.code is not None else []
        if self.status:
            parts.append(self.status)
        return " ".join(parts) or "no reply code"

    def readable(self) -> str:
        """The whole reply as one line ("550 5.1.1 mailbox unavailable"): for those allowed to
        read the text (evidence, tests), never for logs."""
        return " ".join(part for part in (self.summary if self.code else "", self.text) if part)

    def scrubbed(self, address: str = "", keep: str = "") -> SmtpReply:
        return replace(self, text=scrub(self.text, address, keep))


def parse_reply(reply: str, code: int | None = None) -> SmtpReply:
    """A reply as code, enhanced status and text.

    ``reply`` is either the raw reply (``"550-5.1.1 first line\\r\\n550 5.1.1 last line"``: the
    code is read from it) or, with ``code`` given, its text as aiosmtplib hands it over (the lines
    without their codes). The enhanced status is taken from the first line that has one of the
    code's class (a 5.x.x for a 5yz reply) and removed from every line that repeats it; the lines
    are joined with spaces. Anything that is not a reply (no code of 200-599) is all text."""
    lines = [line.strip() for line in reply.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    lines = [line for line in lines if line]
    if code is None:
        found = REPLY_CODE.match(lines[0]) if lines else None
        if found is None:
            return SmtpReply(None, None, " ".join(" ".join(lines).split()))
        code = int(found.group(1))
        lines = [_without_code(line, found.group(1)) for line in lines]
    if not 200 <= code <= 599:
        return SmtpReply(None, None, " ".join(f"{code} {' '.join(lines)}".split()))
    status: str | None = None
    texts = []
    for line in lines:
        enhanced = ENHANCED_STATUS.match(line)
        if enhanced is not None and enhanced.group(1) == str(code)[0]:
            status = status or enhanced.group(0)
            if enhanced.group(0) == status:
                line = line[enhanced.end() :]
        texts.append(line)
    return SmtpReply(code, status, " ".join(" ".join(texts).split()))


# Where a reply's text is sealed in the delivery ledger (the associated data binds it there); in
# an event it is "<event type>.smtp_text".
SMTP_TEXT_FIELD = Field.DELIVERY_SMTP_TEXT


def stored_reply(row: Any, key: CustomerKey | None) -> SmtpReply:
    """A ledger row's reply (``smtp_code``, ``smtp_status``, ``smtp_text``, ``smtp_reply``): the
    text opened, ``[erased]`` once the customer's key is gone. A row written before migration 014
    has its unsealed ``smtp_reply`` instead (or nothing, when its customer was erased by then)."""
    if row["smtp_text"] is None:
        if row["smtp_reply"]:
            return parse_reply(row["smtp_reply"])
        if row["smtp_code"] is None:
            return SmtpReply(None, None, "")  # no outcome yet
        return SmtpReply(row["smtp_code"], row["smtp_status"], "" if key else ERASED)
    return SmtpReply(
        row["smtp_code"], row["smtp_status"], open_sealed(key, SMTP_TEXT_FIELD, row["smtp_text"])
    )


def _without_code(line: str, code: str) -> str:
    """A raw reply line without its code and separator ("550-", "550 ")."""
    if line.startswith(code) and (len(line) == 3 or line[3] in " -"):
        return line[4:]
    return line


def _part(boundary: str, content_type: str, body: str) -> bytes:
    # base64 never contains "-", so no body line can look like the boundary.
    encoded = base64.encodebytes(body.encode("utf-8")).replace(b"\n", b"\r\n")
    return (
        f"--{boundary}\r\n"
        f'Content-Type: {content_type}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode("ascii") + encoded


@functools.lru_cache(maxsize=64)
def _date_header(date: datetime) -> str:
    """The Date value (cached: it changes once a second; formatting it was a tenth of building a
    message)."""
    return format_datetime(date)


@functools.lru_cache(maxsize=256)
def _subject_header(subject: str) -> str:
    """The Subject value, RFC 2047-encoded and folded when it needs to be (cached: one per notice)."""
    if subject.isascii() and len(subject) < 70:
        return subject
    charset = "us-ascii" if subject.isascii() else "utf-8"
    return Header(subject, charset, header_name="Subject").encode(linesep="\r\n")


def _build_with_email_package(
    *,
    mail_from: str,
    to: str,
    subject: str,
    text: str,
    html: str,
    msg_id: str,
    date: datetime,
    reply_to: str | None = None,
    calendar: CalendarPart | None = None,
) -> OutgoingMail:
    alternative = MIMEMultipart("alternative")
    message = alternative if calendar is None else MIMEMultipart("mixed")
    message["From"] = mail_from
    message["To"] = to
    if reply_to:
        message["Reply-To"] = reply_to
    message["Subject"] = subject if subject.isascii() else Header(subject, "utf-8")  # type: ignore[assignment]
    message["Message-ID"] = msg_id
    message["Date"] = format_datetime(date)
    message["Auto-Submitted"] = "auto-generated"
    alternative.attach(MIMEText(text, "plain", "utf-8"))
    alternative.attach(MIMEText(html, "html", "utf-8"))
    if calendar is not None:
        message.attach(alternative)
        part = MIMEText(calendar.data.decode("utf-8"), "calendar", "utf-8")
        part.set_param("method", "PUBLISH")
        part.add_header("Content-Disposition", "attachment", filename=calendar.filename)
        message.attach(part)
    return OutgoingMail(mail_from, to, message.as_bytes(policy=SMTP_POLICY))


@dataclass(frozen=True)
class SmtpTarget:
    hostname: str
    port: int
    use_tls: bool = False
    start_tls: bool | None = None
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_url(cls, url: str) -> SmtpTarget:
        parsed = urlparse(url)
        if parsed.scheme not in {"smtp", "smtps", "smtp+starttls"} or not parsed.hostname:
            raise ValueError(f"SMTP URL must look like smtp://host:port, got {url!r}")
        default_port = {"smtp": 25, "smtps": 465, "smtp+starttls": 587}[parsed.scheme]
        return cls(
            hostname=parsed.hostname,
            port=parsed.port or default_port,
            use_tls=parsed.scheme == "smtps",
            start_tls=parsed.scheme == "smtp+starttls",
            username=unquote(parsed.username) if parsed.username else None,
            password=unquote(parsed.password) if parsed.password else None,
        )


class SendStatus(StrEnum):
    accepted = "accepted"
    failed = "failed"  # permanent (5xx) for this contact


@dataclass(frozen=True)
class SmtpResult:
    """How the server took one message (the activities' counts are contracts.SendResult)."""

    status: SendStatus
    reply: SmtpReply


TRANSACTION_TIMEOUT = 600.0


class TemporarySmtpError(Exception):
    """A 4xx reply or a dropped connection: worth retrying later.

    The message says what happened in words without personal data (codes, never a reply's
    text: it travels to logs and to Temporal as a failure message); ``reply`` holds the server's
    whole reply, when there was one, for the ledger (sealed)."""

    def __init__(self, message: str, reply: SmtpReply | None = None) -> None:
        super().__init__(message)
        self.reply = reply


class SmtpUnavailable(TemporarySmtpError):
    """The mail server cannot be reached (connect, TLS or login failed): says nothing about the
    contact, so it never counts towards giving up on one; the sending activity stops and retries."""


# A reply longer than this without its last line is not a server we can talk to.
REPLY_MAX = 64 * 1024


@contextlib.asynccontextmanager
async def _reading(timeout: float) -> AsyncIterator[None]:
    """Waiting for replies at most ``timeout`` seconds: then aiosmtplib's read timeout error."""
    try:
        async with asyncio.timeout(timeout):
            yield
    except TimeoutError:
        raise aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response") from None


class _Pipeline(asyncio.Protocol):
    """An SMTP connection after EHLO, taken over from aiosmtplib when the server advertises
    PIPELINING (RFC 2920): a message is then one write of MAIL, RCPT and DATA and one of the
    content, instead of four writes each waiting for its reply (aiosmtplib pipelines nothing).
    On loopback the writes were the largest single cost of a sending worker. aiosmtplib still
    connects, negotiates TLS, logs in and says EHLO; this only reads replies in order."""

    def __init__(self, client: aiosmtplib.SMTP) -> None:
        transport = client.transport
        if transport is None:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        self.transport = cast(asyncio.Transport, transport)
        self.size = client.supports_extension("size")
        self.smtputf8 = client.supports_extension("smtputf8")
        self._buffer = bytearray()
        self._replies: deque[tuple[int, str]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._lost: BaseException | None = None
        transport.set_protocol(self)  # aiosmtplib's protocol hears nothing more of it

    @property
    def usable(self) -> bool:
        return self._lost is None and not self.transport.is_closing()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:  # every complete reply in the buffer, in order
            offset, lines = 0, []
            while (end := self._buffer.find(b"\n", offset)) != -1:
                line = bytes(self._buffer[offset : end + 1])
                offset = end + 1
                lines.append(line)
                if line[3:4] != b"-":
                    break
            else:
                if len(self._buffer) > REPLY_MAX:
                    self._fail(aiosmtplib.SMTPResponseException(-1, "Response too long"))
                break
            del self._buffer[:offset]
            try:
                code = int(lines[-1][:3])
            except ValueError:
                self._fail(aiosmtplib.SMTPResponseException(-1, "Malformed SMTP response"))
                break
            # As aiosmtplib hands a reply over: its lines without code and separator.
            text = b"\n".join(line[4:].strip(b" \t\r\n") for line in lines)
            self._replies.append((code, text.decode("utf-8", "surrogateescape")))
        self._wake()

    def eof_received(self) -> bool:  # (the errors' words are aiosmtplib's)
        self._fail(aiosmtplib.SMTPServerDisconnected("Unexpected EOF received"))
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(aiosmtplib.SMTPServerDisconnected("Connection lost"))

    def _fail(self, error: BaseException) -> None:
        if self._lost is None:
            self._lost = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def write(self, data: bytes) -> None:
        if not self.usable:
            raise self._lost or aiosmtplib.SMTPServerDisconnected("Connection lost")
        self.transport.write(data)

    async def reply(self) -> tuple[int, str]:
        """The next reply: (code, text); raises an aiosmtplib error once the connection is gone
        or the server said something that is not a reply."""
        while not self._replies:
            if self._lost is not None:
                raise self._lost
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return self._replies.popleft()

    async def replies(self, count: int, timeout: float) -> list[tuple[int, str]]:
        async with _reading(timeout):
            return [await self.reply() for _ in range(count)]

    def close(self) -> None:
        self._fail(aiosmtplib.SMTPServerDisconnected("Connection closed"))
        self.transport.close()


class SmtpSession:
    """One reusable SMTP connection for a batch of messages. ``pipelining``: pipeline where the
    server advertises PIPELINING (False: one command at a time, whatever it advertises)."""

    def __init__(self, target: SmtpTarget, pipelining: bool = True) -> None:
        self._target = target
        self._pipelining = pipelining
        self._client: aiosmtplib.SMTP | None = None
        self._pipe: _Pipeline | None = None

    @property
    def pipelining(self) -> bool:
        """Whether the open connection pipelines (the server advertised PIPELINING)."""
        return self._pipe is not None and self._pipe.usable

    async def __aenter__(self) -> SmtpSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._pipe is not None and self._pipe.usable:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                self._pipe.write(b"QUIT\r\n")
                await self._pipe.replies(1, 30)
        if self._pipe is not None:
            self._pipe.close()
            self._pipe = None
        if self._client is not None and self._client.is_connected:
            try:
                await self._client.quit()
            except aiosmtplib.SMTPException:
                self._client.close()
        self._client = None

    def _drop(self) -> None:
        """Close the connection (not just forget it): the next message opens a fresh one."""
        if self._pipe is not None:
            self._pipe.close()
            self._pipe = None
        if self._client is not None and self._client.is_connected:
            self._client.close()
        self._client = None

    async def _connected(self) -> aiosmtplib.SMTP | _Pipeline:
        if self._pipe is not None:
            if self._pipe.usable:
                return self._pipe
            self._drop()
        if self._client is None or not self._client.is_connected:
            target = self._target
            client = aiosmtplib.SMTP(
                hostname=target.hostname,
                port=target.port,
                use_tls=target.use_tls,
                start_tls=target.start_tls,
                username=target.username,
                password=target.password,
                timeout=30,
            )
            self._client = client
            await client.connect()
            if client.is_ehlo_or_helo_needed:
                with contextlib.suppress(aiosmtplib.SMTPHeloError):  # sendmail says HELO then
                    await client.ehlo()
            if self._pipelining and client.supports_extension("pipelining"):
                self._pipe, self._client = _Pipeline(client), None
                return self._pipe
        return self._client

    async def _send_pipelined(self, pipe: _Pipeline, mail: OutgoingMail, utf8: bool) -> SmtpResult:
        """MAIL, RCPT and DATA in one write, then the content: what aiosmtplib's sendmail sends
        (the same commands, options and content), with the same outcomes. After any refusal the
        connection is closed rather than reset (the next message opens another)."""
        if utf8 and not pipe.smtputf8:
            raise aiosmtplib.SMTPNotSupported("SMTPUTF8 is not supported by this server")
        encoding = "utf-8" if utf8 else "ascii"
        # ValueError (as in aiosmtplib) for an address that cannot go on a command line.
        sender = quote_address(mail.sender).encode(encoding)
        recipient = quote_address(mail.recipient).encode(encoding)
        for value in (sender, recipient):
            if COMMAND_INJECTION_REGEX.search(value):
                raise ValueError("Command arg contains a prohibited control character")
        content = mail.data
        # What aiosmtplib does to every message (CRLF line ends, a final CRLF, then dot-stuffing),
        # skipped where it would change nothing, as for every message build_message writes.
        # (Without the final CRLF the terminator would join the last line: no end of data.)
        crlf = content.count(b"\r\n")
        if (
            content.count(b"\n") != crlf
            or content.count(b"\r") != crlf
            or not content.endswith(b"\r\n")
        ):
            content = normalize_message_line_endings(content)
        options = [f"size={len(content)}".encode()] if pipe.size else []
        if utf8:
            options.append(b"SMTPUTF8")
        mail_from = b" ".join([b"MAIL", b"FROM:" + sender, *options])
        pipe.write(mail_from + b"\r\nRCPT TO:" + recipient + b"\r\nDATA\r\n")
        # The replies one at a time, stopping at the first refusal: a server may hang up right
        # after refusing (Exim's drop ACL), and its refusal is the outcome, as it is without
        # pipelining (a 554 to MAIL is failed, not a connection problem). The replies not read
        # are never wanted: after a refusal the connection is dropped.
        refusal: tuple[int, str] | None = None
        async with _reading(TRANSACTION_TIMEOUT):
            for accepted in ((250,), (250, 251), (354,)):  # MAIL, RCPT, DATA
                code, text = await pipe.reply()
                if code not in accepted:
                    refusal = (code, text)
                    break
        if refusal is None:
            if content.startswith(b".") or b"\n." in content:
                content = PERIOD_REGEX.sub(b"..", content)
            pipe.write(content + b".\r\n")
            ((code, text),) = await pipe.replies(1, TRANSACTION_TIMEOUT)
            if code == 250:
                return SmtpResult(SendStatus.accepted, parse_reply(text, 250))
            refusal = (code, text)
        self._drop()  # (a server may have taken DATA after a refused RCPT: never reuse it)
        return self._classify(*refusal)

    async def send(self, mail: OutgoingMail) -> SmtpResult:
        """Accepted, or failed for good (5xx, or an envelope this server can never take);
        raises TemporarySmtpError for a 4xx or a dropped connection, SmtpUnavailable when the
        server cannot be reached at all."""
        # A non-ASCII address needs SMTPUTF8 (RFC 6531); without it the envelope cannot be written.
        utf8 = not (mail.sender.isascii() and mail.recipient.isascii())
        try:
            client = await self._connected()
        except (aiosmtplib.SMTPException, OSError) as error:
            self._drop()
            raise SmtpUnavailable(f"cannot reach the mail server: {error}") from error
        try:
            if isinstance(client, _Pipeline):
                return await self._send_pipelined(client, mail, utf8)
            _errors, reply = await client.sendmail(
                mail.sender,
                [mail.recipient],
                mail.data,
                mail_options=["SMTPUTF8"] if utf8 else [],
                # RFC 5321 4.5.3.2.6: up to 10 minutes for the reply to the message. Giving up
                # sooner makes the server's slowness a duplicate (it may still take the message).
                timeout=TRANSACTION_TIMEOUT,
            )
            # DATA accepted is always 250
            return SmtpResult(SendStatus.accepted, parse_reply(reply, 250))
        except aiosmtplib.SMTPRecipientsRefused as refused:
            first = refused.recipients[0]
            return self._classify(first.code, first.message)
        except aiosmtplib.SMTPResponseException as error:
            return self._classify(error.code, error.message)
        except aiosmtplib.SMTPNotSupported as error:  # the same server will refuse it every time
            return SmtpResult(
                SendStatus.failed, SmtpReply(None, None, f"not sent: {error} (non-ASCII address)")
            )
        except ValueError as error:  # an address that cannot go on an SMTP command line
            self._drop()  # the envelope may be half-written: never reuse this connection
            return SmtpResult(  # (the type, not the text: that quotes the address)
                SendStatus.failed,
                SmtpReply(
                    None,
                    None,
                    "not sent: the address cannot be used in an SMTP envelope"
                    f" ({type(error).__name__})",
                ),
            )
        except (aiosmtplib.SMTPException, OSError) as error:
            self._drop()
            # The type only: a half-read reply in the error's text may quote the address.
            raise TemporarySmtpError(
                f"connection problem ({type(error).__name__})",
                SmtpReply(None, None, f"connection problem: {error}"),
            ) from error

    def _classify(self, code: int, text: str) -> SmtpResult:
        reply = parse_reply(text, code)
        if 500 <= code < 600:
            return SmtpResult(SendStatus.failed, reply)
        self._drop()
        raise TemporarySmtpError(reply.summary, reply)
