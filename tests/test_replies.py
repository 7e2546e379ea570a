"""Replies end to end on real parts: the notice mail's Reply-To (mailed by the real sending
activities into aiosmtpd), a real SMTP client sending a reply to the running inbound endpoint,
PostgreSQL keeping it sealed, ops' classification into the intake of record, and the real intake
activity judging it by the mail's receipt time. Refusals (forged token, foreign domain, oversized,
unreadable text, erased customer), erasure and the auto-act setting."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiosmtplib
import pytest
from structlog.testing import capture_logs
from temporalio.testing import ActivityEnvironment

from activities.sending import SendingActivities
from noticeflow import db, repository
from noticeflow.contracts import AudienceRequest, SendRequest
from noticeflow.crypto import ERASED
from noticeflow.domain.errors import InputError
from noticeflow.domain.replies import ReplyAddress
from noticeflow.mail import build_message
from noticeflow.replies import inbound, store, tokens
from noticeflow.replies.inbound import InboundServer
from tests import helpers
from worker.main import make_deps

REPLY_ADDRESS = "reply@replies.vendor.example"
ADDRESS = ReplyAddress.parse(REPLY_ADDRESS)
SECRET_WORDS = "Jane Roe objects: no AI processing of Initech's HR data"


@pytest.fixture
async def mailed(pool, smtp_sink):
    """The seed-like notice snapshotted and mailed by the real activities, Reply-To on."""
    deps = make_deps(pool, smtp_sink.url, "privacy@vendor.example", reply_address=REPLY_ADDRESS)
    now = datetime.now(UTC)
    spec = helpers.notice(now)
    await repository.upsert_customers(pool, helpers.customers())
    await repository.create_notice(pool, spec, "alice", now)
    env, sending = ActivityEnvironment(), SendingActivities(deps)
    await env.run(sending.snapshot_audience, AudienceRequest(spec=spec, at=now))
    await env.run(sending.send_notices, SendRequest(spec=spec, at=now))
    return deps, spec


@pytest.fixture
async def endpoint(pool):
    async with InboundServer(pool, ADDRESS, port=0, max_bytes=50_000) as server:
        yield server


def reply_to_of(smtp_sink, contact: str) -> str:
    for message in smtp_sink.messages():
        if message["To"] == contact:
            return str(message["Reply-To"])
    raise AssertionError(f"no mail to {contact}")


def a_reply(to: str, sender: str, text: str, **headers: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = f"Jane Roe <{sender}>"
    message["To"] = to
    message["Subject"] = "Re: Sub-Processor Notification - OpenAI"
    message["Message-ID"] = f"<{secrets.token_hex(8)}@initech.example>"
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(text)
    return message


async def send(server: InboundServer, message: Any, sender: str, to: str) -> str:
    """Send with a real SMTP client; the server's reply to the message."""
    _, reply = await aiosmtplib.send(
        message, hostname="127.0.0.1", port=server.port, sender=sender, recipients=[to]
    )
    return reply


QUOTED = (
    f"{SECRET_WORDS}.\n\n"
    "On Mon, 30 Nov 2026 at 12:00, Privacy <privacy@vendor.example> wrote:\n"
    "> We intend to engage OpenAI, LLC as a sub-processor.\n\n"
    "-- \nJane Roe, DPO\n"
)


async def test_each_customer_gets_its_own_reply_address_that_resolves_to_ids(
    mailed, smtp_sink, pool
):
    _, spec = mailed
    acme = {reply_to_of(smtp_sink, c) for c in ("privacy@acme.example", "dpo@acme.example")}
    initech = reply_to_of(smtp_sink, "dpo@initech.example")
    assert len(acme) == 1  # one address per (notice, customer), whichever contact
    (acme_address,) = acme
    assert acme_address != initech
    for address, customer in ((acme_address, "acme"), (initech, "initech")):
        token = ADDRESS.token_of(address)
        assert token is not None, address
        # ids only, and none of them readable in it
        assert customer not in address and spec.notice_id not in address
        assert await tokens.resolve(pool, token) == tokens.Resolved(spec.notice_id, customer)
    # the table holds ids and tokens only
    rows = await pool.fetch("SELECT * FROM reply_tokens")
    assert {r["customer_id"] for r in rows} == {"acme", "globex", "initech", "umbrella"}
    assert not await tokens.fill(pool)  # filled once per notice and key


async def test_a_reply_becomes_an_item_and_an_objection_judged_by_the_mail_receipt_time(
    mailed, smtp_sink, pool, endpoint, caplog
):
    deps, spec = mailed
    to = reply_to_of(smtp_sink, "dpo@initech.example")
    before = datetime.now(UTC)
    caplog.set_level(logging.DEBUG)
    with capture_logs() as logs:
        answer = await send(
            endpoint, a_reply(to, "dpo@initech.example", QUOTED), "dpo@initech.example", to
        )
    after = datetime.now(UTC)
    # no personal data in our log lines, nor in aiosmtpd's (it logs every command it reads)
    logged = json.dumps(logs, default=str) + caplog.text
    assert "reply received" in logged
    for plain in (SECRET_WORDS, "dpo@initech.example", "Jane Roe", to):
        assert plain not in logged
    assert answer.startswith("2.0.0 reply received (rp-"), answer
    (reply,) = await store.listing(pool, notice_id=spec.notice_id)
    assert (reply.notice_id, reply.customer_id, reply.status) == (spec.notice_id, "initech", "new")
    assert before <= reply.received_at <= after
    assert reply.body == SECRET_WORDS + "."  # quotes and signature stripped
    assert "wrote:" in (reply.full_text or "")
    assert reply.sender == "dpo@initech.example" and reply.contact_match
    # sealed at rest: nothing of it in clear in the table, nor in the intake, the events or logs
    stored = json.dumps([dict(r) for r in await pool.fetch("SELECT * FROM replies")], default=str)
    for plain in (SECRET_WORDS, "dpo@initech.example", "Jane Roe", "Sub-Processor Notification"):
        assert plain not in stored
    # nothing is acted on before ops classify it
    assert not await pool.fetchval("SELECT count(*) FROM intake WHERE channel = 'reply'")

    classified, receipt = await store.classify(pool, reply.reply_id, "objection", "alice")
    assert receipt is not None and classified.status == "classified"
    assert (receipt.action, receipt.channel, receipt.customer_id) == ("object", "reply", "initech")
    assert receipt.received_at == reply.received_at  # the mail's, not the click's
    await helpers.take_intake(deps, spec)
    row = await pool.fetchrow(
        "SELECT data FROM events WHERE event_type = 'objection_received'"
        " AND data->>'customer_id' = 'initech'"
    )
    event = json.loads(row["data"]) if isinstance(row["data"], str) else row["data"]
    assert event["timely"] is True and event["channel"] == "reply"
    assert datetime.fromisoformat(event["received_at"]) == reply.received_at
    assert SECRET_WORDS not in json.dumps(event)  # the reason is sealed in the event
    # the same click again: the same receipt; another classification: refused, saying why
    _again, same = await store.classify(pool, reply.reply_id, "objection", "alice")
    assert same is not None and same.receipt_id == receipt.receipt_id
    with pytest.raises(InputError, match="already classified as objection"):
        await store.classify(pool, reply.reply_id, "opt_in", "alice")


async def test_a_question_is_marked_handled_without_action(mailed, smtp_sink, pool, endpoint):
    _, spec = mailed
    to = reply_to_of(smtp_sink, "legal@globex.example")
    await send(
        endpoint, a_reply(to, "legal@globex.example", "Which region?"), "legal@globex.example", to
    )
    (reply,) = await store.listing(pool, notice_id=spec.notice_id)
    classified, receipt = await store.classify(pool, reply.reply_id, "question", "alice")
    assert receipt is None and classified.classified_as == "question"
    assert classified.classified_by == "alice"
    assert not await pool.fetchval("SELECT count(*) FROM intake WHERE channel = 'reply'")
    with pytest.raises(InputError, match="unknown classification"):
        await store.classify(pool, reply.reply_id, "spam", "alice")
    with pytest.raises(InputError, match="no reply"):
        await store.classify(pool, "rp-nope", "question", "alice")
    with pytest.raises(InputError, match=r"unknown classification .*; who classifies \(by\)"):
        await store.classify(pool, reply.reply_id, "spam", " \n ")


async def test_the_same_mail_delivered_twice_is_one_reply(mailed, smtp_sink, pool, endpoint):
    to = reply_to_of(smtp_sink, "dpo@initech.example")
    message = a_reply(to, "dpo@initech.example", "We object.")
    first = await send(endpoint, message, "dpo@initech.example", to)
    second = await send(endpoint, message, "dpo@initech.example", to)
    assert first == second
    assert await pool.fetchval("SELECT count(*) FROM replies") == 1


async def test_a_mail_without_message_id_delivered_twice_is_one_reply_and_one_receipt(
    mailed, smtp_sink, pool
):
    """No Message-ID (some clients and gateways send none): a retry after a lost 250 is found by a
    keyed hash of From, Date, Subject and text; with auto-act on it is one objection, not two."""
    to = reply_to_of(smtp_sink, "dpo@initech.example")
    message = a_reply(to, "dpo@initech.example", "Object.")
    del message["Message-ID"]
    message["Date"] = "Mon, 30 Nov 2026 12:00:00 +0000"
    async with InboundServer(pool, ADDRESS, port=0, auto_act=True) as acting:
        first = await send(acting, message, "dpo@initech.example", to)
        second = await send(acting, message, "dpo@initech.example", to)
        # another mail (other words, or the same words sent later) is another reply
        other = a_reply(to, "dpo@initech.example", "Which region?")
        del other["Message-ID"]
        other["Date"] = "Mon, 30 Nov 2026 12:00:00 +0000"
        third = await send(acting, other, "dpo@initech.example", to)
        message.replace_header("Date", "Mon, 30 Nov 2026 12:05:00 +0000")
        fourth = await send(acting, message, "dpo@initech.example", to)
    assert first == second and len({first, third, fourth}) == 3, (first, third, fourth)
    assert await pool.fetchval("SELECT count(*) FROM replies") == 3
    receipts = await pool.fetch(
        "SELECT receipt_id FROM intake WHERE channel = 'reply' AND action = 'object'"
    )
    assert len(receipts) == 2  # the first mail and the one sent later; the retry is none
    refs = {r["message_ref"] for r in await pool.fetch("SELECT message_ref FROM replies")}
    assert None not in refs and len(refs) == 3


async def test_forged_unknown_and_foreign_addresses_are_refused_and_nothing_is_kept(
    mailed, smtp_sink, pool, endpoint
):
    real = ADDRESS.token_of(reply_to_of(smtp_sink, "dpo@initech.example"))
    assert real is not None
    forged = real[:-1] + ("a" if real[-1] != "a" else "b")  # one character off
    for to, code, words in (
        (ADDRESS.for_token(forged), 550, "unknown reply address"),
        (ADDRESS.for_token("a" * 24), 550, "unknown reply address"),
        ("reply@replies.vendor.example", 550, "unknown reply address"),
        ("reply+not-a-token@replies.vendor.example", 550, "unknown reply address"),
        ("dpo@initech.example", 550, "relaying denied"),
    ):
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
            await send(
                endpoint, a_reply(to, "x@attacker.example", "opt in"), "x@attacker.example", to
            )
        (recipient,) = refused.value.recipients
        assert recipient.code == code and words in recipient.message, (to, recipient)
    assert await pool.fetchval("SELECT count(*) FROM replies") == 0


async def test_a_mail_to_a_good_and_a_forged_reply_address_is_kept_for_the_good_one(
    mailed, smtp_sink, pool, endpoint
):
    """The forged address is refused at RCPT; DATA carries the good one only: 250, kept once."""
    _, spec = mailed
    good = reply_to_of(smtp_sink, "dpo@initech.example")
    token = ADDRESS.token_of(good)
    assert token is not None
    forged = ADDRESS.for_token(token[:-1] + ("a" if token[-1] != "a" else "b"))
    errors, answer = await aiosmtplib.send(
        a_reply(good, "dpo@initech.example", "We object."), hostname="127.0.0.1",
        port=endpoint.port, sender="dpo@initech.example", recipients=[good, forged],
    )  # fmt: skip
    assert list(errors) == [forged] and errors[forged].code == 550, errors
    assert answer.startswith("2.0.0 reply received (rp-"), answer
    (reply,) = await store.listing(pool)
    assert (reply.notice_id, reply.customer_id, reply.status) == (spec.notice_id, "initech", "new")


async def test_a_customer_erased_between_rcpt_and_data_does_not_bounce_the_others_reply(
    mailed, smtp_sink, pool, endpoint
):
    """Two customers' reply addresses accepted at RCPT; one customer is erased before DATA: the
    other's reply is kept and the sender told 250 (a 550 would bounce a reply that was kept), the
    erased one's recorded as a rejection with ids only."""
    _, spec = mailed
    initech = reply_to_of(smtp_sink, "dpo@initech.example")
    acme = reply_to_of(smtp_sink, "privacy@acme.example")
    message = a_reply(initech, "dpo@initech.example", "We object.")
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=endpoint.port)
    async with client:
        await client.ehlo()
        await client.mail("dpo@initech.example")
        for to in (initech, acme):
            assert (await client.rcpt(to)).code == 250
        await repository.erase_customer(pool, "acme")
        answer = await client.data(message.as_bytes())
    assert answer.code == 250 and "reply received" in answer.message, answer
    kept = await store.listing(pool, status="new")
    assert [(r.notice_id, r.customer_id) for r in kept] == [(spec.notice_id, "initech")]
    (rejected,) = await store.listing(pool, status="rejected")
    assert rejected.customer_id == "acme" and rejected.body is None


class Outage:
    """A TCP relay to the test PostgreSQL (its Unix socket) that can be cut and restored: through
    it the endpoint's database really goes away (open connections reset, new ones refused on a
    closed port) and comes back on the same port; or hang: nothing forwarded, nothing closed."""

    def __init__(self, database_url: str) -> None:
        parsed = urlsplit(database_url)
        (self.socket_path,) = (
            path
            for path in Path(parse_qs(parsed.query)["host"][0]).glob(".s.PGSQL.*")
            if path.suffix != ".lock"
        )
        self.database = parsed.path
        self.user = parsed.username
        self.port = 0
        self.server: asyncio.Server | None = None
        self.links: list[asyncio.StreamWriter] = []
        self.flowing = asyncio.Event()  # cleared: hung (nothing forwarded, nothing closed)
        self.flowing.set()

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}{self.database}?sslmode=disable"

    async def restore(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        for writer in self.links:
            writer.transport.abort()
        self.links.clear()

    def hang(self) -> None:
        """PostgreSQL hung (as under `kill -STOP`): connections stay open and new ones are taken,
        but nothing is forwarded either way until :meth:`resume`."""
        self.flowing.clear()

    def resume(self) -> None:
        self.flowing.set()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.links.append(writer)
        await self.flowing.wait()  # a hung server accepts, and then says nothing
        up_reader, up_writer = await asyncio.open_unix_connection(str(self.socket_path))
        self.links.append(up_writer)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    await self.flowing.wait()
                    sink.write(data)
                    await sink.drain()
            except OSError:
                pass
            finally:
                sink.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_the_database_unreachable_is_451_and_the_retry_is_kept_once(
    mailed, smtp_sink, pool, database_url
):
    """PostgreSQL goes away (a real outage: the endpoint's connections reset, its port closed):
    a mail is answered 451 4.3.0 at RCPT, or at DATA when it went away after RCPT, so the sender
    retries; once it is back the retry is kept, once."""
    _, spec = mailed
    await tokens.fill(pool)
    to = reply_to_of(smtp_sink, "dpo@initech.example")
    message = a_reply(to, "dpo@initech.example", "We object.")
    outage = Outage(database_url)
    await outage.restore()
    through = await db.create_pool(outage.url, min_size=1, max_size=2)
    try:
        async with InboundServer(through, ADDRESS, port=0) as server:
            await outage.cut()  # down before the mail: RCPT cannot resolve the address
            with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
                await send(server, message, "dpo@initech.example", to)
            (recipient,) = refused.value.recipients
            assert (recipient.code, recipient.message) == (451, inbound.TEMPORARY[4:])

            await outage.restore()  # up at RCPT, down at DATA
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port)
            async with client:
                await client.ehlo()
                await client.mail("dpo@initech.example")
                assert (await client.rcpt(to)).code == 250
                await outage.cut()
                with pytest.raises(aiosmtplib.SMTPDataError) as data_refused:
                    await client.data(message.as_bytes())
            assert data_refused.value.code == 451, data_refused.value
            assert await pool.fetchval("SELECT count(*) FROM replies") == 0

            await outage.restore()  # back: the sender's retry is kept, once
            answer = await send(server, message, "dpo@initech.example", to)
            again = await send(server, message, "dpo@initech.example", to)
    finally:
        await through.close()
        if outage.server is not None:
            outage.server.close()
    assert answer.startswith("2.0.0 reply received (rp-") and again == answer, (answer, again)
    (reply,) = await store.listing(pool)
    assert (reply.notice_id, reply.customer_id, reply.body) == (
        spec.notice_id, "initech", "We object.",
    )  # fmt: skip


async def test_a_hung_database_is_451_within_the_bound_and_the_retry_is_kept_once(
    mailed, smtp_sink, pool, database_url
):
    """PostgreSQL hangs (not refusing: as under `kill -STOP` of the postmaster): the endpoint does
    not wait with the sender, it answers 451 4.3.0 within its database bound, at RCPT, or at DATA
    when it hung after RCPT; once it answers again, the retry is kept, once."""
    _, spec = mailed
    await tokens.fill(pool)
    to = reply_to_of(smtp_sink, "dpo@initech.example")
    message = a_reply(to, "dpo@initech.example", "We object.")
    outage = Outage(database_url)
    await outage.restore()
    through = await db.create_pool(outage.url, min_size=1, max_size=4)
    bound = 1.5
    loop = asyncio.get_running_loop()
    try:
        async with InboundServer(through, ADDRESS, port=0, db_timeout=bound) as server:
            outage.hang()  # hung before the mail: RCPT cannot resolve the address
            started = loop.time()
            with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
                await aiosmtplib.send(
                    message, hostname="127.0.0.1", port=server.port,
                    sender="dpo@initech.example", recipients=[to], timeout=20,
                )  # fmt: skip
            assert loop.time() - started < bound + 3
            (recipient,) = refused.value.recipients
            assert (recipient.code, recipient.message) == (451, inbound.TEMPORARY[4:])

            outage.resume()  # answering at RCPT, hung at DATA
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port, timeout=20)
            async with client:
                await client.ehlo()
                await client.mail("dpo@initech.example")
                assert (await client.rcpt(to)).code == 250
                outage.hang()
                started = loop.time()
                with pytest.raises(aiosmtplib.SMTPDataError) as data_refused:
                    await client.data(message.as_bytes())
                assert loop.time() - started < bound + 3
            assert data_refused.value.code == 451, data_refused.value

            outage.resume()  # answering again: the sender's retry is kept, once
            answer = await send(server, message, "dpo@initech.example", to)
            again = await send(server, message, "dpo@initech.example", to)
    finally:
        outage.resume()
        try:
            await asyncio.wait_for(through.close(), 10)
        except TimeoutError:
            through.terminate()
        if outage.server is not None:
            outage.server.close()
    assert answer.startswith("2.0.0 reply received (rp-") and again == answer, (answer, again)
    (reply,) = await store.listing(pool, notice_id=spec.notice_id)
    assert (reply.customer_id, reply.body) == ("initech", "We object.")


async def test_an_oversized_mail_is_refused(mailed, smtp_sink, pool, endpoint):
    to = reply_to_of(smtp_sink, "dpo@initech.example")
    big = a_reply(
        to, "dpo@initech.example", "object\n" + "x" * 80 + "\n" * 0 + ("y" * 70 + "\n") * 1000
    )
    too_big = (552, "5.3.4 message too big: at most 50000 bytes")
    # declared too big at MAIL FROM (aiosmtplib sends SIZE=): refused at once, with the
    # documented enhanced status code, not aiosmtpd's own words
    with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
        await send(endpoint, big, "dpo@initech.example", to)
    assert (refused.value.code, refused.value.message) == too_big
    # not declared: refused at the end of DATA (not aiosmtpd's "552 Error: Too much mail data")
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=endpoint.port)
    async with client:
        await client.ehlo()
        await client.mail("dpo@initech.example")
        assert (await client.rcpt(to)).code == 250
        with pytest.raises(aiosmtplib.SMTPResponseException) as at_data:
            await client.data(big.as_bytes())
    assert (at_data.value.code, at_data.value.message) == too_big
    assert await pool.fetchval("SELECT count(*) FROM replies WHERE status <> 'rejected'") == 0


async def test_a_text_that_is_not_utf8_is_a_recorded_rejection(mailed, smtp_sink, pool, endpoint):
    _, spec = mailed
    to = reply_to_of(smtp_sink, "dpo@initech.example")
    raw = (
        f"From: dpo@initech.example\r\nTo: {to}\r\nSubject: Re\r\nMIME-Version: 1.0\r\n"
        'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n'
    ).encode() + b"Wir widersprechen \xff\xfe caf\xe9\r\n"
    with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
        await aiosmtplib.send(
            raw, hostname="127.0.0.1", port=endpoint.port, sender="dpo@initech.example",
            recipients=[to],
        )  # fmt: skip
    assert refused.value.code == 550 and "UTF-8" in refused.value.message
    (reply,) = await store.listing(pool, status="rejected")
    assert (reply.notice_id, reply.customer_id) == (spec.notice_id, "initech")
    assert reply.reason == "unreadable text: the text is not valid utf-8"
    assert reply.body is None and reply.sender is None  # nothing of it kept
    # a text in the charset it declares is read
    latin = raw.replace(b'charset="utf-8"', b'charset="iso-8859-1"').replace(b"\xff\xfe ", b"")
    await aiosmtplib.send(
        latin, hostname="127.0.0.1", port=endpoint.port, sender="dpo@initech.example",
        recipients=[to],
    )  # fmt: skip
    (kept,) = await store.listing(pool, status="new")
    assert kept.body == "Wir widersprechen café"


async def test_erasure_makes_replies_unreadable_and_refuses_later_ones(
    mailed, smtp_sink, pool, endpoint
):
    _, _spec = mailed
    to = reply_to_of(smtp_sink, "dpo@initech.example")
    await send(endpoint, a_reply(to, "dpo@initech.example", QUOTED), "dpo@initech.example", to)
    (reply,) = await store.listing(pool)
    await store.classify(pool, reply.reply_id, "objection", "alice")
    await repository.erase_customer(pool, "initech")
    erased = await store.get(pool, reply.reply_id)
    assert erased is not None
    for value in (erased.sender, erased.subject, erased.body, erased.full_text):
        assert value == ERASED
    # who classified it is the vendor's user, not the customer's data: ops stay accountable
    assert erased.classified_by == "alice"
    assert await pool.fetchval(
        "SELECT classified_by FROM replies WHERE reply_id = $1", reply.reply_id
    ) == "alice"  # fmt: skip
    stored = json.dumps([dict(r) for r in await pool.fetch("SELECT * FROM replies")], default=str)
    for plain in (SECRET_WORDS, "dpo@initech.example", "Jane Roe"):
        assert plain not in stored
    # a reply after the erasure: refused, recorded with ids only
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        await send(
            endpoint, a_reply(to, "dpo@initech.example", "object"), "dpo@initech.example", to
        )
    assert "no longer in use" in refused.value.recipients[0].message
    (rejection,) = await store.listing(pool, status="rejected")
    assert rejection.customer_id == "initech" and "erased" in (rejection.reason or "")
    assert rejection.body is None


async def test_an_exact_command_from_a_listed_contact_acts_only_when_configured(
    mailed, smtp_sink, pool, endpoint
):
    deps, spec = mailed
    to = reply_to_of(smtp_sink, "privacy@acme.example")
    # off (the default): it waits for ops like any reply
    await send(endpoint, a_reply(to, "privacy@acme.example", "opt in"), "privacy@acme.example", to)
    (waiting,) = await store.listing(pool, status="new")
    assert waiting.contact_match and waiting.classified_as is None
    async with InboundServer(pool, ADDRESS, port=0, auto_act=True) as acting:
        # not a listed contact, or not exact, or an automatic answer: it waits for ops
        await send(acting, a_reply(to, "intern@acme.example", "Opt In"), "intern@acme.example", to)
        await send(
            acting, a_reply(to, "privacy@acme.example", "opt in please"), "privacy@acme.example", to
        )
        await send(
            acting, a_reply(to, "privacy@acme.example", "opt in", Auto_Submitted="auto-replied"),
            "privacy@acme.example", to,
        )  # fmt: skip
        # a command with more words after it: those words may change its meaning (to ops)
        for text in ("Object\n\nsorry, wrong reply \u2014 we accept", "opt in\nbut only for goals"):
            await send(
                acting, a_reply(to, "privacy@acme.example", text), "privacy@acme.example", to
            )
        assert not await pool.fetchval("SELECT count(*) FROM intake WHERE channel = 'reply'")
        # exact (the whole own words), from a listed contact (From and envelope): acted on at once
        answer = await send(
            acting,
            a_reply(to, "dpo@acme.example", " Opt  IN \n\nOn Mon, Privacy wrote:\n> object"),
            "dpo@acme.example",
            to,
        )
    reply_id = answer.split("(")[1].rstrip(")")
    acted = await store.get(pool, reply_id)
    assert acted is not None
    assert (acted.status, acted.classified_as, acted.classified_by) == (
        "classified",
        "opt_in",
        "auto",
    )
    receipt = await pool.fetchrow(
        "SELECT action, channel, received_at FROM intake WHERE receipt_id = $1", acted.receipt_id
    )
    assert (receipt["action"], receipt["channel"]) == ("opt_in", "reply")
    assert receipt["received_at"] == acted.received_at
    await helpers.take_intake(deps, spec)
    assert await pool.fetchval(
        "SELECT opted_in FROM recipients WHERE notice_id = $1 AND customer_id = 'acme'",
        spec.notice_id,
    )
    assert len(await store.listing(pool, status="new")) == 6


def test_the_message_carries_reply_to_only_when_given():
    common: dict[str, Any] = {
        "mail_from": "privacy@vendor.example", "to": "dpo@initech.example", "subject": "Notice",
        "text": "t", "html": "<p>t</p>", "msg_id": "<x@vendor.example>",
        "date": datetime(2026, 11, 30, tzinfo=UTC),
    }  # fmt: skip
    assert b"Reply-To" not in build_message(**common).data
    with_reply = build_message(**common, reply_to=ADDRESS.for_token("a" * 24)).data
    assert f"Reply-To: {ADDRESS.for_token('a' * 24)}\r\n".encode() in with_reply
    with pytest.raises(ValueError, match="Reply-To"):
        build_message(**common, reply_to="reply+x@a\r\nBcc: evil@example.com")
