"""E-mail subscriptions (issue 14 item 2) on real parts: PostgreSQL (the runtime role) and a real
SMTP sink. Double opt-in with bounded confirmation mails; the address stored only sealed with the
subscriber's own key and erased with it; informational copies with RFC 8058 headers and a
deterministic Message-ID; a bouncing or greylisted subscriber holds nobody else; no address in
logs. The HTTP side is tests/web/test_subscribe_pages.py."""

from __future__ import annotations

import asyncio
import email
import email.policy
import functools
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from noticeflow import subscriptions
from noticeflow.domain.public_list import Change, Details, entry_title
from noticeflow.domain.signals import Objection
from noticeflow.domain.subscriptions import normalise_address
from noticeflow.subscriptions import (
    Confirmed,
    InvalidToken,
    Outcome,
    SubscriberMailer,
    SubscriptionError,
    Tokens,
)
from tests import helpers
from tests.conftest import TEST_LINK_KEY

ADDRESS = "Jane.Roe+list@Example.COM"
STORED = "Jane.Roe+list@example.com"
URL = "http://127.0.0.1:8099"


@pytest.fixture
async def clean(pool):
    await pool.execute("DELETE FROM subscriber_mails")
    await pool.execute("DELETE FROM subscriber_keys")
    await pool.execute("DELETE FROM subscribers")
    yield pool


def mailer(pool, smtp_sink, **kwargs) -> SubscriberMailer:
    return SubscriberMailer.configured(
        pool, smtp_sink.url, "privacy@vendor.example", TEST_LINK_KEY, URL, **kwargs
    )


async def stored_text(pool) -> str:
    rows = []
    for table in ("subscribers", "subscriber_keys", "subscriber_mails", "projection_checkpoints"):
        rows += [
            json.dumps(dict(r), default=str) for r in await pool.fetch(f"SELECT * FROM {table}")
        ]
    return "\n".join(rows)


def raw_heads(smtp_sink) -> list[bytes]:
    """The header block of every mail the sink received, as the bytes on the wire: a parsed
    header would hide an RFC 2047-encoded or folded value."""
    return [
        path.read_bytes().split(b"\r\n\r\n", 1)[0].replace(b"\r\n", b"\n")
        for path in sorted(smtp_sink.mail_dir.glob("*.eml"))
    ]


def assert_one_click_raw(head: bytes, url: str = URL) -> None:
    """RFC 2369/8058 headers as a mail client reads them: plain, each on one line; the Subject
    on its line too, without a leading space."""
    lines = head.split(b"\n")
    (unsubscribe,) = [line for line in lines if line.lower().startswith(b"list-unsubscribe:")]
    assert re.fullmatch(
        rb"List-Unsubscribe: <" + re.escape(url.encode()) + rb"/unsubscribe/[^>\s]+>", unsubscribe
    ), head
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in lines, head
    assert b"=?" not in head.replace(b"Subject: =?", b""), head  # nothing else encoded
    (subject,) = [line for line in lines if line.startswith(b"Subject:")]
    assert subject.startswith(b"Subject: ") and not subject.startswith(b"Subject:  "), head
    assert subject[len(b"Subject: ") :].strip(), head  # not folded onto the next line
    assert not any(line.startswith((b" ", b"\t")) for line in lines), head  # nothing folded


def body_of(message) -> str:
    return "\n".join(
        part.get_content()
        for part in message.walk()
        if part.get_content_type() in ("text/plain", "text/html")
    )


# --- the address ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "words"),
    [
        ("", "enter an e-mail address"),
        ("   ", "enter an e-mail address"),
        ("jane", "exactly one @"),
        ("a@b@c.com", "exactly one @"),
        ("@example.com", "nothing before the @"),
        ("jane@", "nothing after the @"),
        ("jane@localhost", "needs a dot"),
        ("jane doe@example.com", "no spaces"),
        ("jane@example.com\r\nBcc: x@evil.com", "line breaks"),
        ("ja..ne@example.com", "not two in a row"),
        ('"jane"@example.com', "before the @ may hold"),
        ("jane@exa_mple.com", "letters, digits and hyphens"),
        ("jane@example.1", "top-level domain"),
        ("jane\x00@example.com", "control characters"),
        ("x" * 65 + "@example.com", "longer than 64"),
        ("a@" + "b" * 2000, "far longer"),
    ],
)
def test_a_bad_address_is_refused_in_words(typed, words):
    address, problems = normalise_address(typed)
    assert address is None
    assert any(words in problem for problem in problems), problems


def test_an_address_is_normalised():
    assert normalise_address(f"  {ADDRESS} ") == (STORED, [])
    assert normalise_address("jane@bücher.example") == ("jane@xn--bcher-kva.example", [])
    assert normalise_address(None)[0] is None


def test_an_internationalised_domain_follows_idna2008_with_uts46_mapping():
    """IDNA2003 (Python's "idna" codec) mapped ß to ss, mailing another domain, and let a
    fraction slash through; IDNA2008 keeps ß and refuses what it does not allow."""
    assert normalise_address("leser@straße.example") == ("leser@xn--strae-oqa.example", [])
    assert normalise_address("leser@MÜLLER.Example") == ("leser@xn--mller-kva.example", [])
    for typed, code in (("leser@a\u2044b.example", "U+2044"), ("leser@ü_x.example", "U+005F")):
        address, problems = normalise_address(typed)
        assert address is None
        assert any("internationalised domain name" in p and code in p for p in problems), problems
        assert not any(typed.split("@")[1] in p for p in problems)  # the address is not repeated
    # every problem at once, the domain's among them
    address, problems = normalise_address("ja..ne@a\u2044b.example")
    assert address is None and len(problems) == 2, problems
    # an A-label typed as such must be one
    address, problems = normalise_address("leser@xn--zz.example")
    assert address is None and any("internationalised" in p for p in problems), problems


# --- links -----------------------------------------------------------------------------------------


def test_links_carry_the_id_only_and_refuse_forgeries():
    tokens = Tokens(TEST_LINK_KEY, URL)
    now = datetime.now(UTC)
    url = tokens.confirm_url("sub_0123456789abcdef", now + timedelta(days=2))
    token = url.rsplit("/", 1)[1]
    assert tokens.read_confirmation(token).subscriber_id == "sub_0123456789abcdef"
    with pytest.raises(InvalidToken):
        tokens.read_unsubscribe(token)  # a confirmation link is no unsubscribe link
    unsub = tokens.unsubscribe_url("sub_0123456789abcdef").rsplit("/", 1)[1]
    assert tokens.read_unsubscribe(unsub) == "sub_0123456789abcdef"
    other = Tokens("another-link-key-0123456789abcdefXYZ_-long", URL)
    with pytest.raises(InvalidToken) as forged:
        other.read_unsubscribe(unsub)
    assert forged.value.kind == "forged"
    for bad in ("", "x" * 400, "abc", unsub[:-2] + "zz", "a.b<script>"):
        with pytest.raises(InvalidToken):
            tokens.read_unsubscribe(bad)


# --- subscribing ----------------------------------------------------------------------------------


async def test_double_opt_in_bounded_idempotent_and_sealed(clean, smtp_sink):
    pool = clean
    sender = mailer(pool, smtp_sink)
    subscriber_id, outcome = await subscriptions.subscribe(pool, ADDRESS)
    assert outcome is Outcome.new
    # Again at once: the same subscription, no second mail (at most one per CONFIRM_INTERVAL).
    assert await subscriptions.subscribe(pool, STORED.upper()) == (subscriber_id, Outcome.limited)
    done = await sender.send_due()
    assert (done.sent, done.failed) == (1, 0)
    (message,) = smtp_sink.messages()
    (head,) = raw_heads(smtp_sink)
    assert_one_click_raw(head)
    assert message["To"] == STORED
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["List-Unsubscribe"].startswith(f"<{URL}/unsubscribe/")
    assert message["Message-ID"] == subscriptions.message_id(
        subscriber_id, "confirm/1", "privacy@vendor.example"
    )
    body = body_of(message)
    confirm_url = next(w for w in body.split() if w.startswith(f"{URL}/subscribe/confirm/"))
    assert "jane" not in confirm_url.lower() and "example" not in confirm_url.split("/")[-1]

    # The bound: after the interval one more, at most CONFIRM_MAX in all.
    await pool.execute("UPDATE subscribers SET last_confirmation_at = now() - interval '1 hour'")
    assert (await subscriptions.subscribe(pool, ADDRESS))[1] is Outcome.resent
    await pool.execute("UPDATE subscribers SET last_confirmation_at = now() - interval '1 hour'")
    assert (await subscriptions.subscribe(pool, ADDRESS))[1] is Outcome.resent
    await pool.execute("UPDATE subscribers SET last_confirmation_at = now() - interval '1 hour'")
    assert (await subscriptions.subscribe(pool, ADDRESS))[1] is Outcome.limited
    await sender.send_due()
    assert len(smtp_sink.messages()) == subscriptions.CONFIRM_MAX

    tokens = sender.tokens
    token = confirm_url.rsplit("/", 1)[1]
    assert await subscriptions.confirm(pool, tokens, token) == (subscriber_id, Confirmed.confirmed)
    assert await subscriptions.confirm(pool, tokens, token) == (subscriber_id, Confirmed.already)
    assert await subscriptions.subscribe(pool, ADDRESS) == (subscriber_id, Outcome.already)
    assert (await sender.send_due()).claimed == 0  # confirmed: the unsent confirmations are gone

    stored = await stored_text(pool)
    for plain in (STORED, STORED.lower(), "Jane.Roe", "jane.roe"):
        assert plain not in stored
    (row,) = await subscriptions.listing(pool, show_addresses=True)
    assert (row["id"], row["status"], row["email"]) == (subscriber_id, "confirmed", STORED)
    assert "email" not in (await subscriptions.listing(pool))[0]


async def test_an_expired_confirmation_link_confirms_nothing(clean):
    pool = clean
    subscriber_id, _ = await subscriptions.subscribe(pool, ADDRESS)
    tokens = Tokens(TEST_LINK_KEY, URL)
    old = tokens.confirm_url(subscriber_id, datetime.now(UTC) - timedelta(seconds=1))
    result = await subscriptions.confirm(pool, tokens, old.rsplit("/", 1)[1])
    assert result == (subscriber_id, Confirmed.expired)
    assert (
        await pool.fetchval(
            "SELECT status FROM subscribers WHERE subscriber_id = $1", subscriber_id
        )
        == "pending"
    )
    # Left unconfirmed past PENDING_KEPT: erased by the sweep.
    await pool.execute("UPDATE subscribers SET created_at = now() - interval '8 days'")
    assert await subscriptions.expire_pending(pool) == 1
    row = await pool.fetchrow("SELECT * FROM subscribers WHERE subscriber_id = $1", subscriber_id)
    assert (row["status"], row["email_sealed"], row["email_index"]) == ("expired", None, None)


async def test_a_bad_address_changes_nothing(clean):
    with pytest.raises(SubscriptionError) as refused:
        await subscriptions.subscribe(clean, "not an address@@")
    assert len(refused.value.problems) >= 2
    assert await clean.fetchval("SELECT count(*) FROM subscribers") == 0


# --- informational copies ----------------------------------------------------------------------


async def confirmed(pool, address: str) -> str:
    subscriber_id, _ = await subscriptions.subscribe(pool, address)
    await pool.execute(
        "UPDATE subscribers SET status = 'confirmed', confirmed_at = now() - interval '1 day'"
        " WHERE subscriber_id = $1",
        subscriber_id,
    )
    await pool.execute(
        "UPDATE subscriber_mails SET status = 'cancelled' WHERE subscriber_id = $1", subscriber_id
    )
    return subscriber_id


async def test_copies_reach_subscribers_and_a_bounce_holds_nobody(clean, smtp_sink):
    with capture_logs() as logs:
        await copies_and_bounces(clean, smtp_sink)
    logged = json.dumps(logs, default=str)
    assert '"subscriber mail"' in logged and "sub_" in logged  # ids are logged ...
    for address in ("reader@example.com", "dead.invalid", "tempfail-grey", "unconfirmed@"):
        assert address not in logged  # ... never an address


async def copies_and_bounces(pool, smtp_sink):
    # Only events after now count for the follower in this test: move it to the store's end.
    await subscriptions.fill_outbox(pool)
    good = await confirmed(pool, "reader@example.com")
    dead = await confirmed(pool, "nobody@dead.invalid")  # the sink answers 550
    grey = await confirmed(pool, "tempfail-grey@example.com")  # the sink answers 451, always
    pending, _ = await subscriptions.subscribe(pool, "unconfirmed@example.com")
    spec = await helpers.notified_with_objection(
        pool, smtp_sink.url, Objection(customer_id="initech", reason="no", by="x")
    )
    before = len(smtp_sink.messages())
    assert await subscriptions.fill_outbox(pool) == 3  # one per confirmed subscriber
    assert await subscriptions.fill_outbox(pool) == 0  # nothing twice
    sender = mailer(pool, smtp_sink)
    await pool.execute(
        "UPDATE subscriber_mails SET status = 'cancelled' WHERE subscriber_id = $1", pending
    )
    done = await sender.send_due()
    assert (done.sent, done.failed, done.retried) == (1, 1, 1)
    mails = [m for m in smtp_sink.messages()[before:] if m["To"] == "reader@example.com"]
    (copy,) = mails
    (copy_head,) = [h for h in raw_heads(smtp_sink) if b"\nTo: reader@example.com\n" in h]
    assert_one_click_raw(copy_head)
    assert copy["Subject"].startswith("[Informational]")
    assert copy["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert copy["Message-ID"] == subscriptions.message_id(
        good, f"{spec.notice_id}/sent", "privacy@vendor.example"
    )
    text = body_of(copy)
    assert "FOR YOUR INFORMATION ONLY" in text and f"{URL}/subprocessors" in text
    assert f"{URL}/unsubscribe/" in text
    assert "/a/" not in text and "deadline" not in text.lower().replace("sets no deadline", "")
    rows = {
        r["subscriber_id"]: r
        for r in await pool.fetch("SELECT * FROM subscriber_mails WHERE kind = 'sent'")
    }
    assert rows[dead]["status"] == "failed" and "550" in rows[dead]["last_error"]
    assert rows[grey]["status"] == "pending" and rows[grey]["next_attempt_at"] > datetime.now(UTC)
    assert "dead.invalid" not in (rows[dead]["last_error"] or "")
    # The greylisted row comes due again: retried, recognisably the same mail; given up at last.
    await pool.execute(
        "UPDATE subscriber_mails SET next_attempt_at = now(), first_attempt_at = now() - interval"
        " '2 days' WHERE subscriber_id = $1",
        grey,
    )
    done = await sender.send_due()
    assert (done.failed, done.retried) == (1, 0)

    # Postponement and cancellation of a mailed notice: one copy each, to confirmed readers.
    await append_change(pool, spec.notice_id, "notice_postponed")
    await append_change(pool, spec.notice_id, "notice_cancelled")
    assert await subscriptions.fill_outbox(pool) == 6
    await sender.send_due()
    kinds = sorted(
        r["kind"]
        for r in await pool.fetch(
            "SELECT kind FROM subscriber_mails WHERE subscriber_id = $1 AND status = 'sent'", good
        )
    )
    assert kinds == ["cancelled", "postponed", "sent"]

    # Unsubscribing erases: the key is gone, nothing readable is left, no more mail.
    unsub = sender.tokens.unsubscribe_url(good).rsplit("/", 1)[1]
    assert await subscriptions.unsubscribe(pool, sender.tokens, unsub) == (good, True)
    assert await subscriptions.unsubscribe(pool, sender.tokens, unsub) == (good, False)
    assert (
        await pool.fetchval("SELECT count(*) FROM subscriber_keys WHERE subscriber_id = $1", good)
        == 0
    )
    assert await subscriptions.find_by_email(pool, "reader@example.com") is None


async def test_a_mail_that_cannot_be_built_fails_alone_and_holds_nobody(clean, smtp_sink):
    """A key that will not unwrap (or a template that will not render, a message that cannot be
    built): that row is recorded failed with the error's type, the next row is sent, the round
    ends normally, and the failed row is not claimed again."""
    broken, _ = await subscriptions.subscribe(clean, "broken@example.com")
    fine, _ = await subscriptions.subscribe(clean, "fine@example.com")
    await clean.execute(
        "UPDATE subscriber_keys SET wrapped = '\\x00'::bytea WHERE subscriber_id = $1", broken
    )
    sender = mailer(clean, smtp_sink)
    with capture_logs() as logs:
        done = await sender.send_due()
    assert (done.claimed, done.sent, done.failed) == (2, 1, 1)
    rows = {r["subscriber_id"]: r for r in await clean.fetch("SELECT * FROM subscriber_mails")}
    assert rows[fine]["status"] == "sent"
    assert rows[broken]["status"] == "failed"
    assert rows[broken]["last_error"].startswith("could not build or send the mail: ")
    assert [m["To"] for m in smtp_sink.messages()] == ["fine@example.com"]
    failed = [e for e in logs if e.get("outcome") == "failed"]
    assert failed and failed[0]["subscriber_id"] == broken and failed[0]["error_type"]
    assert "broken@example.com" not in json.dumps(logs, default=str)
    await clean.execute("UPDATE subscriber_mails SET next_attempt_at = now() - interval '1 hour'")
    assert (await sender.send_due()).claimed == 0  # nothing left to stall a batch


async def test_a_confirmation_waits_for_an_outbox_pass_and_is_dated_after_it(clean):
    """The outbox reads events in one statement and subscribers in another: a confirmation that
    committed between them, dated (now()) before an event the pass read, would be owed that event
    and never get it. Confirming takes the outbox's lock (shared) and its time after it: while a
    pass holds the lock the confirmation waits, and it is dated after the pass."""
    subscriber_id, _ = await subscriptions.subscribe(clean, "reader@example.com")
    tokens = Tokens(TEST_LINK_KEY, URL)
    expires = datetime.now(UTC) + timedelta(days=1)
    token = tokens.confirm_url(subscriber_id, expires).rsplit("/", 1)[1]
    async with clean.acquire() as c, c.transaction():
        await c.execute("SELECT pg_advisory_xact_lock($1)", subscriptions.OUTBOX_LOCK)
        waiting = asyncio.create_task(subscriptions.confirm(clean, tokens, token))
        await asyncio.sleep(0.5)
        assert not waiting.done(), "a confirmation committed during an outbox pass"
        pass_ended = await c.fetchval("SELECT clock_timestamp()")
    assert await asyncio.wait_for(waiting, 10) == (subscriber_id, Confirmed.confirmed)
    confirmed_at = await clean.fetchval(
        "SELECT confirmed_at FROM subscribers WHERE subscriber_id = $1", subscriber_id
    )
    assert confirmed_at >= pass_ended


async def test_subscriber_mail_keeps_the_relays_shared_pace(clean, smtp_sink):
    """NOTICEFLOW_SMTP_RELAY_RATE binds subscriber copies too: they take slots of the relay's
    pace in PostgreSQL (relay_pace, the notices' mail's), so a burst cannot eat the quota."""
    for n in range(6):
        await subscriptions.subscribe(clean, f"reader{n}@example.com")
    sender = mailer(clean, smtp_sink, relay_rate=4.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    done = await sender.send_due()
    took = loop.time() - started
    assert done.sent == 6
    assert took >= 1.0, f"6 mails at 4 a second took {took:.2f} s"  # slots 0.25 s apart
    relay = f"{sender.smtp.hostname}:{sender.smtp.port}"
    assert await clean.fetchval("SELECT count(*) FROM relay_pace WHERE relay = $1", relay) == 1


@pytest.mark.parametrize(
    ("url", "warned"),
    [
        ("https://vendor.example", False),
        ("http://127.0.0.1:8080", False),
        ("http://noticeflow.localhost:8080", False),
        ("http://[::1]:8080", False),
        ("http://vendor.example", True),
        ("http://10.0.0.5:8080", True),
    ],
)
def test_a_public_url_that_is_not_https_is_named_for_one_click(url, warned):
    problem = subscriptions.one_click_problem(url)
    assert (problem is not None) == warned
    if problem:
        assert "https" in problem and "one-click" in problem


async def test_the_mail_loop_warns_at_start_when_one_click_cannot_work(clean, smtp_sink):
    sender = SubscriberMailer.configured(
        clean, smtp_sink.url, "privacy@vendor.example", TEST_LINK_KEY, "http://vendor.example"
    )
    stop = asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(subscriptions.run(clean, sender, stop, poll_seconds=0.1))
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.wait_for(task, 10)
    (warning,) = [e for e in logs if e["event"] == "subscriber mail: no one-click unsubscribe"]
    assert warning["log_level"] == "warning" and "https" in warning["problem"]


async def append_change(pool, notice_id: str, event_type: str) -> None:
    """A postponement or cancellation as the product stores one (its event types)."""
    from noticeflow import eventstore
    from noticeflow.domain.events import NoticeCancelled, NoticePostponed

    now = datetime.now(UTC)
    event = (
        NoticePostponed(**{"from": now + timedelta(days=30), "to": now + timedelta(days=40)})
        if event_type == "notice_postponed"
        else NoticeCancelled(reason="changed our mind", by="alice", phase="window_open")
    )
    stream = eventstore.notice_stream(notice_id)
    await eventstore.append(pool, stream, f"test/{event_type}", event, now)


# --- the CLI ---------------------------------------------------------------------------------------


def cli(*args: str, database_url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "noticeflow.cli", "subscribers", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "NOTICEFLOW_DATABASE_URL": database_url,
            "NOTICEFLOW_DATA_DIR": str(tmp_path / "data"),
        },
    )


async def test_cli_lists_ids_only_and_erases_by_id_or_address(clean, database_url, tmp_path):
    first, _ = await subscriptions.subscribe(clean, ADDRESS)
    second, _ = await subscriptions.subscribe(clean, "other@example.org")
    run = functools.partial(cli, database_url=database_url, tmp_path=tmp_path)
    both = await asyncio.to_thread(run, "erase", first, "--email", "a@b.co")
    bad = await asyncio.to_thread(run, "erase", "nope")
    for done, words in ((both, "one of them"), (bad, "not a subscriber id")):
        assert done.returncode == 2 and words in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    listed = await asyncio.to_thread(run, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {r["id"] for r in json.loads(listed.stdout)} == {first, second}
    assert "example" not in listed.stdout.lower()
    shown = await asyncio.to_thread(run, "list", "--show-addresses", "--json")
    assert STORED in shown.stdout and "personal data" in shown.stderr
    by_email = await asyncio.to_thread(run, "erase", "--email", ADDRESS.upper(), "--json")
    assert json.loads(by_email.stdout) == {"id": first, "erased": True}, by_email.stderr
    unknown = await asyncio.to_thread(run, "erase", "--email", ADDRESS)
    assert unknown.returncode == 2 and "no live subscriber" in unknown.stderr
    by_id = await asyncio.to_thread(run, "erase", second)
    assert by_id.returncode == 0 and f"erased subscriber {second}" in by_id.stdout
    again = await asyncio.to_thread(run, "erase", second)
    assert "erased already" in again.stdout
    assert STORED not in await stored_text(clean)
    assert await clean.fetchval("SELECT count(*) FROM subscriber_keys") == 0


def _change(kind: str, **more) -> Change:
    at = datetime(2027, 3, 1, tzinfo=UTC)
    return Change(
        notice_id="n-copy",
        kind=kind,
        subprocessor="Acme Analytics Ltd",
        replaces="Old Analytics GmbH" if kind == "replacement" else None,
        details=Details("Analytics", "Ireland", ("Usage data",), "EEA", ("assistant",)),
        previous={},
        opt_in=False,
        effective_at=at,
        first_effective_at=at,
        sent_at=at - timedelta(days=30),
        postponements=(),
        status="upcoming",
        in_effect_at=None,
        cancelled_at=None,
        **more,
    )


@pytest.mark.parametrize(
    ("kind", "mail_kind", "words"),
    [
        ("addition", "sent", "New sub-processor: Acme Analytics Ltd"),
        ("removal", "sent", "Sub-processor removal: Acme Analytics Ltd"),
        (
            "replacement",
            "sent",
            "Sub-processor replacement: Acme Analytics Ltd (replacing Old Analytics GmbH)",
        ),
        ("material_change", "sent", "Change to a sub-processor: Acme Analytics Ltd"),
        ("removal", "postponed", "Postponed — Sub-processor removal: Acme Analytics Ltd"),
        ("removal", "cancelled", "Cancelled — Sub-processor removal: Acme Analytics Ltd"),
    ],
)
def test_a_copy_says_which_kind_of_change_it_is(kind, mail_kind, words):
    """A removal's copy must not read like an addition's: the subject and both bodies word the
    change by kind, as the page and the Atom feed do (the same function)."""
    sender = SubscriberMailer.configured(
        None, "smtp://127.0.0.1:25", "privacy@vendor.example", TEST_LINK_KEY, URL
    )
    change = _change(kind)
    mail = sender.build("sub_0123456789abcdef", "r@example.com", mail_kind, "k", change)
    message = email.message_from_bytes(mail.data, policy=email.policy.default)
    assert message["Subject"] == f"[Informational] {words}"
    text = body_of(message)
    assert text.count(words) == 2  # the text and the HTML part
    assert "change announced" not in text
    assert words.removeprefix("Postponed — ").removeprefix("Cancelled — ") in entry_title(
        change
    ).removeprefix("Cancelled — ")
