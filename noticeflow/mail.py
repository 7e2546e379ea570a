"""Mail: rendering (Jinja2, text and HTML) and sending one message over SMTP (aiosmtplib)."""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from email import policy
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import aiosmtplib
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PackageLoader, StrictUndefined

SMTP_POLICY = policy.compat32.clone(linesep="\r\n")
# How long a contact may keep getting only temporary (4xx) replies before its delivery is recorded
# as failed for good (NOTICEFLOW_SMTP_GIVE_UP_AFTER): the customer becomes `undelivered` (rule 4).
GIVE_UP_AFTER = timedelta(hours=72)


class MailKind(StrEnum):
    notice = "notice"
    acknowledgement = "acknowledgement"
    resolution = "resolution"
    postponement = "postponement"
    cancellation = "cancellation"
    activation = "activation"
    deactivation = "deactivation"


def message_id(notice_id: str, customer_id: str, email: str, kind: str, mail_from: str) -> str:
    """Deterministic Message-ID: a retry after an unknown outcome carries the same id."""
    digest = hashlib.sha256(
        f"{notice_id}\x1f{customer_id}\x1f{email}\x1f{kind}".encode()
    ).hexdigest()
    domain = mail_from.rsplit("@", 1)[-1] or "noticeflow.localhost"
    return f"<{digest[:32]}@{domain}>"


class MailRenderer:
    """Renders the text and HTML parts; templates can be overridden from a directory."""

    def __init__(self, override_dir: Path | None = None) -> None:
        loaders: list[Any] = [PackageLoader("noticeflow", "templates/mail")]
        if override_dir:
            loaders.insert(0, FileSystemLoader(str(override_dir)))
        self._env = Environment(
            loader=ChoiceLoader(loaders), undefined=StrictUndefined, autoescape=False
        )
        self._html_env = self._env.overlay(autoescape=True)

    def render(self, template: str, context: dict[str, Any]) -> tuple[str, str, str]:
        """Returns (subject, text, html)."""
        text_template = self._env.get_template(f"{template}.txt.j2")
        module = text_template.make_module(context)
        text = str(module)
        subject = getattr(module, "subject", "")
        html = self._html_env.get_template(f"{template}.html.j2").render(context)
        return str(subject).strip(), text, html


@dataclass(frozen=True)
class OutgoingMail:
    sender: str
    recipient: str
    data: bytes


def build_message(
    *, mail_from: str, to: str, subject: str, text: str, html: str, msg_id: str, date: datetime
) -> OutgoingMail:
    """A text + HTML message (multipart/alternative, UTF-8, base64 parts) as wire bytes.

    Written out directly: building it with the email package's MIME classes was the largest
    single cost of a sending worker in bench/notify.py. Header values that would need folding or
    encoding beyond an RFC 2047 subject (non-ASCII or very long addresses) take the email
    package's path instead. A line break in an address or the Message-ID raises ValueError (it
    could only ever inject a header); one in the subject becomes a space.
    """
    headers = (mail_from, to, msg_id)
    for name, value in (("From", mail_from), ("To", to), ("Message-ID", msg_id)):
        if "\r" in value or "\n" in value:  # never a valid address: refuse, never inject a header
            raise ValueError(f"the {name} header value contains a line break")
    subject = _unfold(subject)
    if not all(value.isascii() and len(value) < 900 for value in headers):
        return _build_with_email_package(
            mail_from=mail_from, to=to, subject=subject, text=text, html=html, msg_id=msg_id,
            date=date,
        )  # fmt: skip
    boundary = "==nf_" + hashlib.sha256(msg_id.encode()).hexdigest()[:24]
    head = (
        f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n'
        "MIME-Version: 1.0\r\n"
        f"From: {mail_from}\r\n"
        f"To: {to}\r\n"
        f"Subject: {_subject_header(subject)}\r\n"
        f"Message-ID: {msg_id}\r\n"
        f"Date: {format_datetime(date)}\r\n"
        "Auto-Submitted: auto-generated\r\n"
        "\r\n"
    )
    data = b"".join((
        head.encode("ascii"),
        _part(boundary, "text/plain", text),
        _part(boundary, "text/html", html),
        f"--{boundary}--\r\n".encode("ascii"),
    ))  # fmt: skip
    return OutgoingMail(mail_from, to, data)


def _unfold(subject: str) -> str:
    """A subject is one line: a line break (from a template or a customer's name) becomes a space."""
    if "\r" not in subject and "\n" not in subject:
        return subject
    return re.sub(r"[ \t]*[\r\n]+[ \t]*", " ", subject).strip()


ADDRESS_LIKE = re.compile(r"[^\s<>()\[\]'\",;:]+@[^\s<>()\[\]'\",;:]+")


def scrub(text: str, address: str = "", keep: str = "", limit: int = 500) -> str:
    """A reply or error text fit for the ledger, the events and the logs: one line, bounded, and
    without e-mail addresses (servers echo the recipient; rule 13): ``address`` wherever it
    appears and anything that looks like one — except ``keep`` (our own Message-ID, which some
    servers echo and which identifies nothing personal)."""
    kept = keep.strip("<>")
    if address:
        text = re.sub(re.escape(address), "<address>", text, flags=re.IGNORECASE)
    line = " ".join(text.split())
    line = ADDRESS_LIKE.sub(
        lambda found: found.group(0) if kept and found.group(0) == kept else "<address>", line
    )
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _part(boundary: str, content_type: str, body: str) -> bytes:
    # base64 never contains "-", so no body line can look like the boundary.
    encoded = base64.encodebytes(body.encode("utf-8")).replace(b"\n", b"\r\n")
    return (
        f"--{boundary}\r\n"
        f'Content-Type: {content_type}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode("ascii") + encoded


@functools.lru_cache(maxsize=256)
def _subject_header(subject: str) -> str:
    """The Subject value, RFC 2047-encoded and folded when it needs to be (cached: one per notice)."""
    if subject.isascii() and len(subject) < 70:
        return subject
    charset = "us-ascii" if subject.isascii() else "utf-8"
    return Header(subject, charset, header_name="Subject").encode(linesep="\r\n")


def _build_with_email_package(
    *, mail_from: str, to: str, subject: str, text: str, html: str, msg_id: str, date: datetime
) -> OutgoingMail:
    message = MIMEMultipart("alternative")
    message["From"] = mail_from
    message["To"] = to
    message["Subject"] = subject if subject.isascii() else Header(subject, "utf-8")  # type: ignore[assignment]
    message["Message-ID"] = msg_id
    message["Date"] = format_datetime(date)
    message["Auto-Submitted"] = "auto-generated"
    message.attach(MIMEText(text, "plain", "utf-8"))
    message.attach(MIMEText(html, "html", "utf-8"))
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
class SendResult:
    status: SendStatus
    reply: str


TRANSACTION_TIMEOUT = 600.0


class TemporarySmtpError(Exception):
    """A 4xx reply or a dropped connection: worth retrying later."""


class SmtpUnavailable(TemporarySmtpError):
    """The mail server cannot be reached (connect, TLS or login failed): says nothing about the
    contact, so it never counts towards giving up on one; the sending activity stops and retries."""


class SmtpSession:
    """One reusable SMTP connection for a batch of messages."""

    def __init__(self, target: SmtpTarget) -> None:
        self._target = target
        self._client: aiosmtplib.SMTP | None = None

    async def __aenter__(self) -> SmtpSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None and self._client.is_connected:
            try:
                await self._client.quit()
            except aiosmtplib.SMTPException:
                self._client.close()
        self._client = None

    def _drop(self) -> None:
        """Close the connection (not just forget it): the next message opens a fresh one."""
        if self._client is not None and self._client.is_connected:
            self._client.close()
        self._client = None

    async def _connected(self) -> aiosmtplib.SMTP:
        if self._client is None or not self._client.is_connected:
            target = self._target
            self._client = aiosmtplib.SMTP(
                hostname=target.hostname,
                port=target.port,
                use_tls=target.use_tls,
                start_tls=target.start_tls,
                username=target.username,
                password=target.password,
                timeout=30,
            )
            await self._client.connect()
        return self._client

    async def send(self, mail: OutgoingMail) -> SendResult:
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
            _errors, reply = await client.sendmail(
                mail.sender,
                [mail.recipient],
                mail.data,
                mail_options=["SMTPUTF8"] if utf8 else [],
                # RFC 5321 4.5.3.2.6: up to 10 minutes for the reply to the message. Giving up
                # sooner makes the server's slowness a duplicate (it may still take the message).
                timeout=TRANSACTION_TIMEOUT,
            )
            return SendResult(SendStatus.accepted, f"250 {reply}")  # DATA accepted is always 250
        except aiosmtplib.SMTPRecipientsRefused as refused:
            first = refused.recipients[0]
            return self._classify(first.code, first.message)
        except aiosmtplib.SMTPResponseException as error:
            return self._classify(error.code, error.message)
        except aiosmtplib.SMTPNotSupported as error:  # the same server will refuse it every time
            return SendResult(SendStatus.failed, f"not sent: {error} (non-ASCII address)")
        except ValueError as error:  # an address that cannot go on an SMTP command line
            self._drop()  # the envelope may be half-written: never reuse this connection
            return SendResult(  # (the type, not the text: that quotes the address)
                SendStatus.failed,
                f"not sent: the address cannot be used in an SMTP envelope ({type(error).__name__})",
            )
        except (aiosmtplib.SMTPException, OSError) as error:
            self._drop()
            raise TemporarySmtpError(f"connection problem: {error}") from error

    def _classify(self, code: int, text: str) -> SendResult:
        reply = f"{code} {text}"
        if 500 <= code < 600:
            return SendResult(SendStatus.failed, reply)
        self._drop()
        raise TemporarySmtpError(reply)
