"""The mailer's pipelined SMTP path (RFC 2920), taken when the server advertises PIPELINING.

A message is then one write of MAIL, RCPT and DATA and one of the content. It must send what
aiosmtplib's sendmail sends and reach the same outcome for every reply: the same accepted or
failed result with the same code, status and text, the same TemporarySmtpError for a 4xx or a
dropped connection. Checked against the real aiosmtpd sink (advertising PIPELINING) and against a
scripted server that answers whatever it is told, with and without pipelining.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from noticeflow.mail import (
    OutgoingMail,
    SmtpResult,
    SmtpSession,
    SmtpTarget,
    TemporarySmtpError,
    build_message,
)
from noticeflow.sink import SmtpSink

FROM = "privacy@vendor.example"


def message(to: str = "ops@acme.example", n: int = 1) -> OutgoingMail:
    return build_message(
        mail_from=FROM,
        to=to,
        subject="A notice",
        # a line starting with "." is dot-stuffed on the wire and arrives as it was
        text="Dear customer,\n.a line with a leading dot\n" * 40,
        html="<p>Dear customer,</p>\n" * 40,
        msg_id=f"<{n:032d}@vendor.example>",
        date=datetime(2026, 11, 30, 12, tzinfo=UTC),
    )


async def test_the_sink_gets_the_same_bytes_pipelined_or_not(tmp_path):
    received = {}
    for pipelining in (False, True):
        with SmtpSink(tmp_path / str(pipelining), pipelining=pipelining) as sink:
            async with SmtpSession(SmtpTarget.from_url(sink.url)) as session:
                results = [await session.send(message(n=n)) for n in range(3)]
                assert session.pipelining is pipelining
            assert {r.status.value for r in results} == {"accepted"}
            files = sorted((tmp_path / str(pipelining)).glob("*.eml"))
            received[pipelining] = [path.read_bytes() for path in files]
    assert len(received[True]) == 3
    assert received[True] == received[False]
    assert b"\r\n.a line" not in received[True][0]  # (base64: the text is inside, encoded)


@pytest.mark.parametrize(
    "ending",
    [b"", b"\r\n.the last line, a leading dot", b"\r\nlast line\r", b"\r\nlast line\n"],
)
async def test_content_without_a_final_crlf_gets_one_pipelined_or_not(tmp_path, ending):
    """The end of data (".") always starts a line of its own: content whose last line has no
    CRLF gets one, as aiosmtplib gives it, instead of the terminator joining that line (the
    server would then wait for the end of data for ten minutes)."""
    data = message().data.removesuffix(b"\r\n") + ending
    assert not data.endswith(b"\r\n")
    received = {}
    for pipelining in (False, True):
        with SmtpSink(tmp_path / str(pipelining), pipelining=pipelining) as sink:
            async with SmtpSession(SmtpTarget.from_url(sink.url)) as session:
                async with asyncio.timeout(30):
                    result = await session.send(OutgoingMail(FROM, "ops@acme.example", data))
                assert session.pipelining is pipelining
            assert result.status.value == "accepted"
            (path,) = (tmp_path / str(pipelining)).glob("*.eml")
            received[pipelining] = path.read_bytes()
    assert received[True] == received[False]
    assert received[True].endswith(b"\r\n")


async def test_refusals_and_deferrals_on_the_pipelined_path(tmp_path):
    with SmtpSink(tmp_path / "mail", pipelining=True) as sink:
        async with SmtpSession(SmtpTarget.from_url(sink.url)) as session:
            refused = await session.send(message("ops@acme.invalid"))
            assert refused.status.value == "failed"
            assert (refused.reply.code, refused.reply.status) == (550, "5.1.1")
            assert refused.reply.text.endswith("Recipient address rejected: mailbox unavailable")
            # the connection is closed after a refusal; the next message opens another
            assert (await session.send(message(n=2))).status.value == "accepted"
            assert session.pipelining
            with pytest.raises(TemporarySmtpError) as deferred:
                await session.send(message("tempfail-1@acme.example"))
            assert deferred.value.reply is not None and deferred.value.reply.code == 451
            assert (await session.send(message("jöran@acme.example", 3))).status.value == (
                "accepted"
            )
            unusable = await session.send(message("a b@acme.example", 4))
            assert unusable.status.value == "failed"
            assert "cannot be used in an SMTP envelope" in unusable.reply.text
        assert len(list((tmp_path / "mail").glob("*.eml"))) == 2


async def test_a_non_ascii_address_fails_where_the_server_has_no_smtputf8(tmp_path):
    with SmtpSink(tmp_path / "mail", smtputf8=False, pipelining=True) as sink:
        async with SmtpSession(SmtpTarget.from_url(sink.url)) as session:
            result = await session.send(message("jöran@acme.example"))
    assert result.status.value == "failed" and "non-ASCII address" in result.reply.text


@contextlib.asynccontextmanager
async def scripted(
    replies: dict[str, bytes], pipelining: bool, reads: list[list[str]] | None = None
) -> AsyncIterator[str]:
    """A server answering each command (by its verb) with the reply given, in the order the
    commands come: pipelined or not, it does not care. The end of the content is "END". A reply
    ending in "CLOSE" is written (what comes before it, if anything) and the server hangs up, as
    Exim's drop ACL does after its refusal. ``reads``: for each read from the socket, the verbs
    of the commands it completed (pipelined, MAIL, RCPT and DATA arrive in one)."""

    async def answer(writer: asyncio.StreamWriter, reply: bytes) -> bool:
        """Writes the reply; False when the server hangs up after it."""
        closing = reply.endswith(b"CLOSE")
        if closing:
            reply = reply.removesuffix(b"CLOSE")
        if reply:
            writer.write(reply)
            await writer.drain()
        return not closing

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pending = bytearray()
        chunks: list[list[str]] = [] if reads is None else reads

        async def next_line() -> bytes:
            """The next line; a read only when none is complete (b"": the client hung up)."""
            while (end := pending.find(b"\n")) == -1:
                if not (chunk := await reader.read(65536)):
                    return b""
                pending.extend(chunk)
                chunks.append([])
            line = bytes(pending[: end + 1])
            del pending[: end + 1]
            return line

        writer.write(b"220 scripted ESMTP\r\n")
        in_data = False
        while line := await next_line():
            if in_data:
                if line == b".\r\n":
                    in_data = False
                    if not await answer(writer, replies.get("END", b"250 2.0.0 queued\r\n")):
                        break
                continue
            verb = line.split(b" ", 1)[0].split(b":", 1)[0].strip().upper().decode()
            chunks[-1].append(verb)
            if verb == "EHLO":
                extensions = b"250-PIPELINING\r\n" if pipelining else b""
                writer.write(b"250-scripted\r\n" + extensions + b"250 8BITMIME\r\n")
            elif verb == "QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            else:
                reply = replies.get(verb, b"354 go ahead\r\n" if verb == "DATA" else b"250 ok\r\n")
                if not await answer(writer, reply):
                    break
                in_data = verb == "DATA" and reply.startswith(b"354")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"smtp://127.0.0.1:{port}"
    finally:
        server.close()


async def outcome(url: str) -> SmtpResult | tuple[str, object]:
    async with SmtpSession(SmtpTarget.from_url(url)) as session:
        try:
            return await session.send(message())
        except TemporarySmtpError as error:
            return (str(error), error.reply)


@pytest.mark.parametrize(
    "replies",
    [
        {},
        {"END": b"250-2.0.0 first line\r\n250 2.0.0 Ok: queued as 12AB\r\n"},
        {"MAIL": b"553 5.7.1 <privacy@vendor.example>: Sender address rejected\r\n"},
        {"RCPT": b"550-5.1.1 no such user\r\n550 5.1.1 here either\r\n"},
        {"RCPT": b"550 5.1.1 no such user\r\n", "DATA": b"354 taken all the same\r\n"},
        {"RCPT": b"451 4.7.1 greylisted\r\n"},
        {"DATA": b"554 5.5.1 no valid recipients\r\n"},
        {"END": b"552 5.3.4 message too big\r\n"},
        {"END": b"421 4.3.2 shutting down\r\n"},
        {"RCPT": b"CLOSE"},
        {"END": b"CLOSE"},
        # a refusal and the server hangs up at once (Exim's drop ACL): the refusal is the outcome
        {"MAIL": b"554 5.7.1 rejected by policy\r\nCLOSE"},
        {"RCPT": b"550 5.1.1 no such user\r\nCLOSE"},
        {"DATA": b"554 5.5.1 no valid recipients\r\nCLOSE"},
        {"MAIL": b"421 4.7.0 too many connections, closing\r\nCLOSE"},
        {"RCPT": b"451 4.7.1 greylisted\r\nCLOSE"},
        {"END": b"554 5.7.1 spam\r\nCLOSE"},
    ],
)
async def test_every_reply_has_the_outcome_it_has_without_pipelining(replies):
    outcomes = []
    for pipelining in (False, True):
        async with scripted(replies, pipelining) as url:
            outcomes.append(await outcome(url))
    without, pipelined = outcomes
    assert pipelined == without
    # ... and it is the right one: the first refusal decides, 5xx failed, 4xx tried again later
    refusals = [reply[:3] for reply in replies.values() if reply[:1] in (b"4", b"5")]
    if refusals and refusals[0].startswith(b"5"):
        assert isinstance(pipelined, SmtpResult) and pipelined.status.value == "failed"
        assert pipelined.reply.code == int(refusals[0])
    elif refusals:
        assert not isinstance(pipelined, SmtpResult)
        assert getattr(pipelined[1], "code", None) == int(refusals[0])


async def test_with_pipelining_off_the_commands_go_one_at_a_time(monkeypatch):
    """NOTICEFLOW_SMTP_PIPELINING=false (for a relay that advertises PIPELINING but mishandles
    it), through the worker's settings and Mailer: a server advertising PIPELINING gets MAIL,
    RCPT and DATA each alone, each after the reply to the one before."""
    from noticeflow.config import Settings
    from worker.main import build_deps

    for setting in ("true", "false"):
        monkeypatch.setenv("NOTICEFLOW_SMTP_PIPELINING", setting)
        reads: list[list[str]] = []
        async with scripted({}, pipelining=True, reads=reads) as url:
            mailer = build_deps(Settings(smtp_url=url), pool=None).mailer
            async with mailer.session() as session:
                result = await session.send(message())
                assert session.pipelining is (setting == "true")
        assert result.status.value == "accepted"
        envelope = [verbs for verbs in reads if {"MAIL", "RCPT", "DATA"} & set(verbs)]
        if setting == "true":
            assert envelope == [["MAIL", "RCPT", "DATA"]]
        else:
            assert envelope == [["MAIL"], ["RCPT"], ["DATA"]]


def self_signed(tmp_path):
    """A certificate for localhost, and the key, as PEM files."""
    from datetime import timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


async def test_pipelining_after_starttls_and_login(tmp_path, monkeypatch):
    """The connection is taken over after aiosmtplib's STARTTLS, login and EHLO: the TLS
    transport carries the pipelined commands."""
    import ssl

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    from noticeflow.sink import PipeliningHandler, free_port

    cert_file, key_file = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))  # the client trusts this certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    port = free_port()
    controller = Controller(
        PipeliningHandler(tmp_path / "mail"), hostname="localhost", port=port,
        tls_context=context, require_starttls=True, auth_require_tls=True,
        authenticator=lambda *args: AuthResult(success=args[4].password == b"secret"),
    )  # fmt: skip
    controller.start()
    try:
        url = f"smtp+starttls://relay:secret@localhost:{port}"
        async with SmtpSession(SmtpTarget.from_url(url)) as session:
            first = await session.send(message(n=1))
            assert session.pipelining and first.status.value == "accepted"
            refused = await session.send(message("ops@acme.invalid", 2))
            assert (refused.status.value, refused.reply.code) == ("failed", 550)
            assert (await session.send(message(n=3))).status.value == "accepted"
            assert session.pipelining
    finally:
        controller.stop()
    assert len(list((tmp_path / "mail").glob("*.eml"))) == 2
