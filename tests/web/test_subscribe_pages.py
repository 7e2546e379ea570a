"""Subscribing on the public page, end to end on the real stack (Temporal dev server, PostgreSQL,
aiosmtpd, a worker, the web app over HTTP) with the subscriber mail loop the worker runs: the form
(the same answer for a new, pending or subscribed address; every problem with a bad one, no
traceback, odd bytes too), the confirmation mail and its page (GET shows, POST confirms), an
informational copy when a notice is mailed, postponed and cancelled, and RFC 8058 one-click
unsubscribe (a POST without session or CSRF; GET never unsubscribes), which erases the address."""

from __future__ import annotations

import asyncio
import contextlib
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from noticeflow import control, subscriptions
from noticeflow.subscriptions import Tokens
from noticeflow.web import subscriptions as subscriptions_web
from tests.web.conftest import spec

ADDRESS = "reader@example.com"


async def wait_for(predicate, seconds: float = 60) -> None:
    loop = asyncio.get_running_loop()
    give_up = loop.time() + seconds
    while loop.time() < give_up:
        if predicate():
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the expected mail did not arrive")


def to_reader(stack) -> list:
    return [m for m in stack.sink.messages() if m["To"] == ADDRESS]


def text_of(message) -> str:
    return "\n".join(
        part.get_content()
        for part in message.walk()
        if part.get_content_type() in ("text/plain", "text/html")
    )


async def test_subscribe_confirm_copies_and_one_click_unsubscribe(web_stack):
    pool = web_stack.pool
    await pool.execute("DELETE FROM subscriber_mails")
    await pool.execute("DELETE FROM subscriber_keys")
    await pool.execute("DELETE FROM subscribers")
    await subscriptions.fill_outbox(pool)  # earlier tests' notices are not this reader's news
    stop = asyncio.Event()
    sender = subscriptions.SubscriberMailer.configured(
        pool,
        web_stack.sink.url,
        "privacy@vendor.example",
        web_stack.settings.verification_keys,
        web_stack.url,
    )
    loop = asyncio.create_task(subscriptions.run(pool, sender, stop, poll_seconds=0.3))
    try:
        async with web_stack.http() as http:  # no sign-in, no session, no CSRF token
            page = await http.get("/subprocessors")
            assert 'action="/subprocessors/subscribe"' in page.text and 'name="email"' in page.text

            first = await http.post("/subprocessors/subscribe", data={"email": ADDRESS})
            assert first.status_code == 200 and "Check your inbox" in first.text
            await wait_for(lambda: len(to_reader(web_stack)) == 1)
            (confirmation,) = to_reader(web_stack)
            assert confirmation["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            body = text_of(confirmation)
            (link,) = set(
                re.findall(re.escape(web_stack.url) + r"/subscribe/confirm/[A-Za-z0-9_.\-]+", body)
            )
            assert "reader" not in link and "example.com" not in link

            # Again, at once: the very same answer, and no second mail (bounded).
            again = await http.post("/subprocessors/subscribe", data={"email": ADDRESS.upper()})
            assert (again.status_code, again.text) == (first.status_code, first.text)

            shown = await http.get(link)  # a link scanner: sees a button, confirms nothing
            assert shown.status_code == 200 and "<form" in shown.text
            status = "SELECT status FROM subscribers"
            assert await pool.fetchval(status) == "pending"
            done = await http.post(link)
            assert done.status_code == 200 and "Subscribed" in done.text
            assert await pool.fetchval(status) == "confirmed"
            subscribed = await http.post("/subprocessors/subscribe", data={"email": ADDRESS})
            assert subscribed.text == first.text  # says nothing about the address
            await asyncio.sleep(1)
            assert len(to_reader(web_stack)) == 1

            notice = spec("subscribed-notice")
            await web_stack.notice(notice)
            await wait_for(lambda: len(to_reader(web_stack)) == 2)
            copy = to_reader(web_stack)[1]
            assert copy["Subject"].startswith("[Informational]")
            assert copy["Message-ID"] == subscriptions.message_id(
                (await pool.fetchval("SELECT subscriber_id FROM subscribers")),
                "subscribed-notice/sent",
                "privacy@vendor.example",
            )
            unsubscribe_header = copy["List-Unsubscribe"]
            assert copy["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            text = text_of(copy)
            assert "FOR YOUR INFORMATION ONLY" in text and "/a/" not in text
            assert f"{web_stack.url}/subprocessors#notice-subscribed-notice" in text

            later = (notice.effective_at + timedelta(days=7)).isoformat()
            receipt, _ = await control.submit(
                web_stack.client, pool, notice.notice_id, "postpone",
                {"effective_at": later, "by": "alice"}, task_queue=web_stack.task_queue,
            )  # fmt: skip
            assert receipt.status == "accepted", receipt
            await wait_for(lambda: len(to_reader(web_stack)) == 3)
            assert to_reader(web_stack)[2]["Subject"].startswith(
                "[Informational] Postponed — New sub"
            )

            unsubscribe_url = unsubscribe_header.strip("<>")
            assert unsubscribe_url.startswith(f"{web_stack.url}/unsubscribe/")
            looked = await http.get(unsubscribe_url)  # GET: a page with a button, nothing more
            assert looked.status_code == 200 and "List-Unsubscribe" in looked.text
            assert await pool.fetchval(status) == "confirmed"
            # RFC 8058: what a mail client POSTs, without cookies or tokens.
            one_click = await web_stack.http().post(
                unsubscribe_url,
                content=b"List-Unsubscribe=One-Click",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert one_click.status_code == 200 and "Unsubscribed" in one_click.text
            row = await pool.fetchrow("SELECT status, email_sealed, email_index FROM subscribers")
            assert tuple(row) == ("unsubscribed", None, None)
            assert await pool.fetchval("SELECT count(*) FROM subscriber_keys") == 0
            twice = await http.post(unsubscribe_url, data={"List-Unsubscribe": "One-Click"})
            assert twice.status_code == 200

            receipt, _ = await control.submit(
                web_stack.client, pool, notice.notice_id, "cancel",
                {"reason": "Chose another vendor", "by": "alice"},
                task_queue=web_stack.task_queue,
            )  # fmt: skip
            assert receipt.status == "accepted", receipt
            await web_stack.wait_phase(notice.notice_id, "cancelled")
            await asyncio.sleep(2)
            assert len(to_reader(web_stack)) == 3  # unsubscribed: no cancellation copy
    finally:
        stop.set()
        await loop


async def test_the_form_says_what_is_wrong_and_links_refuse_forgeries(web_stack):
    async with web_stack.http() as http:
        for typed, words in (
            ("", "enter an e-mail address"),
            ("not-an-address", "exactly one @"),
            ("a b@example.com", "no spaces"),
            ("<script>alert(1)</script>@x.com", "before the @ may hold"),
        ):
            answer = await http.post("/subprocessors/subscribe", data={"email": typed})
            assert answer.status_code == 400 and words in answer.text, answer.text
            assert "<script>alert" not in answer.text and "Traceback" not in answer.text
        odd = await http.post(
            "/subprocessors/subscribe",
            content=b"email=%FF%FE%00x@\xff\xfe.com&&&=",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert odd.status_code in (400, 422) and "Traceback" not in odd.text
        binary = await http.post(
            "/subprocessors/subscribe",
            content=b"\x00\xff" * 50,
            headers={"Content-Type": "multipart/form-data; boundary=zz"},
        )
        assert binary.status_code in (400, 422) and "Traceback" not in binary.text
        for path in ("/unsubscribe/forged.token", "/subscribe/confirm/forged.token"):
            for method in ("GET", "POST"):
                answer = await http.request(method, path)
                assert answer.status_code == 400 and "not valid" in answer.text
        assert await web_stack.pool.fetchval("SELECT count(*) FROM subscribers") == 0


@contextlib.asynccontextmanager
async def served(pool, data_dir, **settings: Any):
    """The real web app on a free port over ``pool`` (no Temporal needed for these pages)."""
    from noticeflow.config import Settings
    from noticeflow.sink import free_port
    from noticeflow.web.app import serve
    from tests.web.conftest import SECRET

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = Settings(
        data_dir=data_dir, database_url="postgresql://unused", secret_key=SECRET,
        public_url=url, web_host="127.0.0.1", web_port=port, web_token="t" * 32, **settings,
    )  # fmt: skip
    stop, started = asyncio.Event(), asyncio.get_running_loop().create_future()
    web = asyncio.create_task(serve(config, stop, pool=pool, started=started))
    try:
        await asyncio.wait_for(started, 30)
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            yield http, Tokens(SECRET, url)
    finally:
        stop.set()
        await web


async def test_a_form_body_in_raw_utf8_is_read_as_utf8_and_invalid_utf8_is_refused(pool, tmp_path):
    """``curl -d "email=leser@müller.example"`` sends the UTF-8 bytes unescaped: they are the
    address typed, not Latin-1 (which would mail a garbage domain). A body that is not UTF-8
    (raw or percent-escaped) is refused in words, nothing stored."""
    async with served(pool, tmp_path) as (http, _):
        raw = await http.post(
            "/subprocessors/subscribe",
            content="email=leser@müller.example".encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert raw.status_code == 200, raw.text
        assert await subscriptions.find_by_email(pool, "leser@xn--mller-kva.example")
        for body in (b"email=leser@m\xfcller.example", b"email=leser@m%FCller.example"):
            bad = await http.post(
                "/subprocessors/subscribe",
                content=body,
                headers={"Content-Type": "application/x-www-form-urlencoded; charset=latin-1"},
            )
            assert bad.status_code == 400 and "not valid UTF-8" in bad.text, bad.text
            assert "Traceback" not in bad.text
        assert await pool.fetchval("SELECT count(*) FROM subscribers") == 1


async def test_one_click_unsubscribes_are_never_rate_limited_only_refused_links_are(pool, tmp_path):
    """A mailbox provider POSTs RFC 8058 one-click unsubscribes for many subscribers from one
    address: every valid one is honoured (no 429 past the per-client limit); refused links from
    one client are limited (429 with Retry-After)."""
    ids = []
    for n in range(subscriptions_web.LINK_PER_CLIENT + 5):
        subscriber_id, _ = await subscriptions.subscribe(pool, f"reader{n}@example.com")
        ids.append(subscriber_id)
    async with served(pool, tmp_path) as (http, tokens):
        for subscriber_id in ids:
            answer = await http.post(
                tokens.unsubscribe_url(subscriber_id),
                content=b"List-Unsubscribe=One-Click",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert answer.status_code == 200, (subscriber_id, answer.status_code)
        assert await pool.fetchval(
            "SELECT count(*) FROM subscribers WHERE status = 'unsubscribed'"
        ) == len(ids)  # fmt: skip
        answers = [
            (await http.post(f"/unsubscribe/forged{n}.token")).status_code
            for n in range(subscriptions_web.LINK_PER_CLIENT + 1)
        ]
        assert answers[:-1] == [400] * subscriptions_web.LINK_PER_CLIENT
        assert answers[-1] == 429
        # Still over the limit for refused links: a valid one is honoured all the same.
        again = await http.post(tokens.unsubscribe_url(ids[0]))
        assert again.status_code == 200


async def test_behind_a_trusted_proxy_the_form_limits_each_visitor_not_the_proxy(pool, tmp_path):
    """NOTICEFLOW_WEB_FORWARDED_ALLOW_IPS names the proxy: X-Forwarded-For is believed from it,
    so visitors behind one proxy each get the form's limit; without it they share one bucket."""
    limit = subscriptions_web.SUBSCRIBE_PER_CLIENT

    async def answers(http: httpx.AsyncClient, visitors: int) -> list[int]:
        return [
            (
                await http.post(
                    "/subprocessors/subscribe",
                    data={"email": f"v{visitor}-{n}@example.com"},
                    headers={"X-Forwarded-For": f"203.0.113.{visitor + 1}"},
                )
            ).status_code
            for visitor in range(visitors)
            for n in range(limit // 2 + 1)
        ]

    async with served(pool, tmp_path / "trusted", web_forwarded_allow_ips="127.0.0.1") as (
        http,
        _,
    ):
        assert set(await answers(http, 3)) == {200}
    async with served(pool, tmp_path / "untrusted") as (http, _):
        assert 429 in await answers(http, 3)  # the proxy's (here: loopback's) one bucket


async def test_an_expired_confirmation_link_says_so_on_get_too(web_stack):
    """GET on an expired link shows the expired page (410) with no button that could only fail,
    as the POST answers; a live link shows the button; GET confirms nothing either way."""
    pool = web_stack.pool
    subscriber_id, _ = await subscriptions.subscribe(pool, "late-reader@example.com")
    tokens = Tokens(web_stack.settings.verification_keys, web_stack.url)
    now = datetime.now(UTC)
    expired = tokens.confirm_url(subscriber_id, now - timedelta(seconds=1))
    live = tokens.confirm_url(subscriber_id, now + timedelta(days=1))
    status = "SELECT status FROM subscribers WHERE subscriber_id = $1"
    async with web_stack.http() as http:
        shown = await http.get(expired.removeprefix(web_stack.url))
        assert shown.status_code == 410 and "expired" in shown.text
        assert "<form" not in shown.text and "Confirm the subscription" not in shown.text
        pressed = await http.post(expired.removeprefix(web_stack.url))
        assert pressed.status_code == 410
        assert await pool.fetchval(status, subscriber_id) == "pending"
        fresh = await http.get(live.removeprefix(web_stack.url))
        assert fresh.status_code == 200 and "Confirm the subscription" in fresh.text
        assert await pool.fetchval(status, subscriber_id) == "pending"
        assert (await http.post(live.removeprefix(web_stack.url))).status_code == 200
        again = await http.get(live.removeprefix(web_stack.url))
        assert again.status_code == 200 and "Subscribed" in again.text and "<form" not in again.text
