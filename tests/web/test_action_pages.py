"""Customer action pages (rule 11), against the real stack: links followed from the mails in the
SMTP sink, pages fetched and forms posted over HTTP, outcomes read from the records."""

from __future__ import annotations

import asyncio
import contextlib
import html
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from structlog.testing import capture_logs

from noticeflow import control, repository
from noticeflow.links import ActionLink, LinkAction, LinkSigner
from noticeflow.sink import free_port
from noticeflow.web.actions import deadline_words
from noticeflow.web.app import serve
from tests.web.conftest import SECRET, spec


def notice_spec(notice_id: str) -> Any:
    # Past globex's 30-day contract window, even one whose last day rolls over a weekend.
    return spec(notice_id, effective_at=(datetime.now(UTC) + timedelta(days=35)).isoformat())


def path_of(stack: Any, url: str) -> str:
    assert url.startswith(stack.url + "/a/")
    return url[len(stack.url) :]


def form_of(page: str, action: str) -> dict[str, str]:
    """The hidden fields of the page's form for ``action``."""
    for form in re.findall(r"<form\b.*?</form>", page, flags=re.S):
        if f'name="action" value="{action}"' in form:
            return {
                name: html.unescape(value)
                for name, value in re.findall(
                    r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form
                )
            }
    raise AssertionError(f"the page offers no {action} form")


def actions_offered(page: str) -> set[str]:
    return set(re.findall(r'name="action" value="([a-z_]+)"', page))


async def customer_actions(stack: Any, notice_id: str) -> int:
    """Receipts in the intake other than the approval the fixture made."""
    return int(
        await stack.pool.fetchval(
            "SELECT count(*) FROM intake WHERE notice_id = $1 AND action <> 'approve'", notice_id
        )
    )


async def mail_to(stack: Any, customer: str, subject: str, seconds: float = 30) -> list[Any]:
    loop = asyncio.get_running_loop()
    give_up = loop.time() + seconds
    while True:
        found = [
            m
            for m in stack.sink.messages()
            if subject in str(m["Subject"]) and m["To"].endswith(f"@{customer}.example")
        ]
        if found or loop.time() > give_up:
            return found
        await asyncio.sleep(0.2)


def token_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


def flip(token: str, at: int) -> str:
    return token[:at] + ("A" if token[at] != "A" else "B") + token[at + 1 :]


async def test_a_customer_objects_opts_in_and_revokes_through_its_mailed_links(web_stack):
    notice = notice_spec("web-actions")  # an opt-in notice: both links in the mail
    await web_stack.notice(notice)
    object_url = web_stack.links("acme", "object")[0]
    opt_in_url = web_stack.links("acme", "opt_in")[0]
    page_path = path_of(web_stack, object_url)
    deadline = await web_stack.pool.fetchval(
        "SELECT deadline FROM recipients WHERE notice_id = $1 AND customer_id = 'acme'",
        notice.notice_id,
    )
    async with web_stack.http() as http:
        # Opening the link (twice, as a mail scanner might) shows the notice and changes nothing.
        for _ in range(2):
            page = await http.get(page_path)
            assert page.status_code == 200, page.text
        assert page.headers["cache-control"] == "no-store"
        assert "nf_session" in http.cookies  # the session (and its CSRF token) starts with the GET
        text = html.unescape(page.text)
        assert f"Your deadline: {deadline_words(deadline, 'America/New_York')}" in text
        assert ", 23:59 E" in text and "(America/New_York)" in text  # the end of its last day
        for shown in (notice.subprocessor, notice.subprocessor_location, notice.purpose,
                      *notice.data_categories, "Acme Corp"):  # fmt: skip
            assert shown in text, shown
        assert actions_offered(page.text) == {"object"}
        assert not re.findall(r'(?:src|href|action)="(?:https?:)?//', page.text), "external asset"
        assert await customer_actions(web_stack, notice.notice_id) == 0

        form = form_of(page.text, "object")
        # No CSRF token: refused, nothing recorded.
        no_csrf = await http.post(page_path, data={**form, "csrf_token": "", "reason": "No."})
        assert no_csrf.status_code == 403 and "nothing was" in no_csrf.text
        # Validation: every problem named, the typed text kept, nothing recorded.
        empty = await http.post(page_path, data={**form, "reason": "   "})
        assert empty.status_code == 422 and "must not be empty" in empty.text
        odd = await http.post(page_path, data={**form, "reason": "We do not\x00 agree."})
        assert odd.status_code == 422 and "U+0000" in odd.text
        assert ">We do not agree.</textarea>" in odd.text  # kept, without the NUL
        too_long = await http.post(page_path, data={**form, "reason": "x" * 100_001})
        assert too_long.status_code == 422 and "too long: 100,001 characters" in too_long.text
        assert await customer_actions(web_stack, notice.notice_id) == 0

        # The objection: a receipt, a case, an acknowledgement by mail.
        reason = "We do not agree to our users' content going to this sub-processor."
        posted = await http.post(page_path, data={**form, "reason": reason})
        assert posted.status_code == 303, posted.text
        location = posted.headers["location"]
        assert location.startswith(page_path + "/receipts/r-")
        receipt_id = location.rsplit("/", 1)[1]
        receipt = await http.get(location)
        assert receipt.status_code == 200 and receipt_id in receipt.text
        assert "Objection received" in receipt.text and "On time" in receipt.text
        assert "Accepted" in receipt.text and "acknowledgement" in receipt.text
        assert "(America/New_York)" in receipt.text and " UTC" in receipt.text
        case = await web_stack.pool.fetchrow(
            "SELECT status, timely, channel, receipt_id FROM objections"
            " WHERE notice_id = $1 AND customer_id = 'acme'",
            notice.notice_id,
        )
        assert dict(case) == {
            "status": "open", "timely": True, "channel": "link", "receipt_id": receipt_id,
        }  # fmt: skip
        # The same form again (a double click, a resubmit): the same receipt.
        again = await http.post(page_path, data={**form, "reason": reason})
        assert again.status_code == 303 and again.headers["location"] == location
        assert await customer_actions(web_stack, notice.notice_id) == 1
        acks = await mail_to(web_stack, "acme", "received your objection")
        assert acks and receipt_id in acks[0].get_body(("plain",)).get_content()
        # The page now shows the open case and the receipt.
        page = await http.get(page_path)
        assert "You have objected" in page.text and receipt_id in page.text

        # Opt in, then revoke, through the same opt-in link.
        opt_path = path_of(web_stack, opt_in_url)
        page = await http.get(opt_path)
        assert actions_offered(page.text) == {"opt_in"}
        posted = await http.post(opt_path, data=form_of(page.text, "opt_in"))
        assert posted.status_code == 303
        shown = await http.get(posted.headers["location"])
        assert "Opt-in received" in shown.text and "Accepted" in shown.text
        assert await opted_in(web_stack, notice.notice_id)
        page = await http.get(opt_path)
        assert actions_offered(page.text) == {"revoke_opt_in"} and "You have opted in" in page.text
        opt_in_receipt = shown.url.path
        revoke = form_of(page.text, "revoke_opt_in")
        posted = await http.post(opt_path, data=revoke)
        assert posted.status_code == 303
        shown = await http.get(posted.headers["location"])
        assert "Revocation of an opt-in received" in shown.text
        assert not await opted_in(web_stack, notice.notice_id)
        # That revoke form once more: the same receipt, not a refusal (it is no longer open).
        repeat = await http.post(opt_path, data=revoke)
        assert repeat.headers["location"] == posted.headers["location"]
        assert await mail_to(web_stack, "acme", "Your opt-in is revoked")
        # The old opt-in receipt (a resubmitted old form lands there too) says what came after.
        old_receipt = await http.get(opt_in_receipt)
        assert "Since then: Revocation of an opt-in" in old_receipt.text

        # Opted in again; then an expired opt-in link still revokes, and only revokes.
        page = await http.get(opt_path)
        posted = await http.post(opt_path, data=form_of(page.text, "opt_in"))
        assert posted.status_code == 303 and await opted_in(web_stack, notice.notice_id)
        signer = LinkSigner(SECRET, web_stack.url)
        past = datetime.now(UTC) - timedelta(days=1)
        expired_opt_in = "/a/" + signer.token(
            ActionLink(notice.notice_id, "acme", LinkAction.opt_in, past)
        )
        page = await http.get(expired_opt_in)
        assert page.status_code == 200 and actions_offered(page.text) == {"revoke_opt_in"}
        posted = await http.post(expired_opt_in, data=form_of(page.text, "revoke_opt_in"))
        assert posted.status_code == 303 and not await opted_in(web_stack, notice.notice_id)
        # ... but once not opted in, it is simply expired.
        assert (await http.get(expired_opt_in)).status_code == 410
        # An expired object link: refused, nothing recorded.
        before = await customer_actions(web_stack, notice.notice_id)
        expired_object = "/a/" + signer.token(
            ActionLink(notice.notice_id, "acme", LinkAction.object, past)
        )
        assert (await http.get(expired_object)).status_code == 410
        form = form_of((await http.get(page_path)).text, "object")
        refused = await http.post(expired_object, data={**form, "reason": "Late and expired."})
        assert refused.status_code == 410 and "expired" in refused.text
        assert await customer_actions(web_stack, notice.notice_id) == before

        # A receipt not judged yet (no worker has woken for it): shown as pending, by its time.
        await asyncio.sleep(1)  # the notice's last round is over; only the sweeper wakes it now
        waiting = await control.receive(
            web_stack.pool, notice.notice_id, "object",
            {"customer_id": "acme", "reason": "Also this.", "by": "customer", "channel": "link"},
            channel="link",
        )  # fmt: skip
        shown = await http.get(f"{page_path}/receipts/{waiting.receipt_id}")
        assert shown.status_code == 200 and shown.headers.get("refresh") == "3"
        assert "Pending: recorded, will be judged by its receipt time" in shown.text

    # A later mail about the notice (here: a postponement) carries the customer's page, and it works.
    later = notice.effective_at + timedelta(days=3)
    postponed, _ = await control.submit(
        web_stack.client, web_stack.pool, notice.notice_id, "postpone",
        {"effective_at": later.isoformat(), "by": "bob"}, task_queue=web_stack.task_queue,
    )  # fmt: skip
    assert postponed.status == "accepted", postponed
    update = await mail_to(web_stack, "globex", "postponed")
    assert update, "no postponement mail"
    body = update[0].get_body(("plain",)).get_content()
    links = re.findall(re.escape(web_stack.url) + r"/a/[A-Za-z0-9_.\-]+", body)
    assert links and LinkSigner(SECRET, "x").verify(token_of(links[0]), datetime.now(UTC))
    async with web_stack.http() as http:
        page = await http.get(path_of(web_stack, links[0]))
        assert page.status_code == 200 and "Globex" in page.text


async def opted_in(stack: Any, notice_id: str) -> bool:
    return bool(
        await stack.pool.fetchval(
            "SELECT opted_in FROM recipients WHERE notice_id = $1 AND customer_id = 'acme'",
            notice_id,
        )
    )


async def test_refused_links_record_nothing_and_log_no_token(web_stack):
    notice = notice_spec("web-refusals")
    await web_stack.notice(notice)
    acme_url = web_stack.links("acme", "object")[0]
    token = token_of(acme_url)
    signer = LinkSigner(SECRET, web_stack.url)
    later = datetime.now(UTC) + timedelta(days=60)
    # A receipt of another notice (a draft), and one of another customer of this notice.
    other = notice_spec("web-other")
    await control.start_notice(
        web_stack.client, web_stack.pool, other, "alice", web_stack.task_queue
    )
    elsewhere = await control.receive(
        web_stack.pool, other.notice_id, "object", {"customer_id": "acme", "reason": "x"}, "cli"
    )
    globex = await control.receive(
        web_stack.pool, notice.notice_id, "object", {"customer_id": "globex", "reason": "y"}, "cli"
    )
    await repository.erase_customer(web_stack.pool, "initech")
    initech_url = web_stack.links("initech", "object")[0]
    cases = {
        "tampered": ("/a/" + flip(token, len(token) // 2), 403),
        "signature cut": ("/a/" + token.rsplit(".", 1)[0] + ".AAAA", 403),
        "malformed": ("/a/not-a-token", 400),
        "unknown notice": (
            "/a/" + signer.token(ActionLink("no-such-notice", "acme", LinkAction.object, later)),
            404,
        ),
        "not a recipient": (
            "/a/" + signer.token(ActionLink(notice.notice_id, "hooli", LinkAction.object, later)),
            404,
        ),
        "erased customer": (path_of(web_stack, initech_url), 410),
        "another notice's receipt": (f"/a/{token}/receipts/{elsewhere.receipt_id}", 404),
        "another customer's receipt": (f"/a/{token}/receipts/{globex.receipt_id}", 404),
        "no such receipt": (f"/a/{token}/receipts/r-0123456789abcdef0123", 404),
    }
    async with web_stack.http() as http:
        page = await http.get(path_of(web_stack, acme_url))
        form = {**form_of(page.text, "object"), "reason": "An objection that must not land."}
        with capture_logs() as logs:
            for name, (where, status) in cases.items():
                shown = await http.get(where)
                assert shown.status_code == status, (name, shown.status_code)
                assert "Nothing was recorded" in shown.text and "Traceback" not in shown.text
                if "/receipts/" not in where:
                    posted = await http.post(where, data=form)
                    assert posted.status_code == status, (name, "POST", posted.status_code)
        # globex's, made above, and the erased customer's press: a rejection with ids only
        assert await customer_actions(web_stack, notice.notice_id) == 2
        erased = await web_stack.pool.fetch(
            "SELECT status, reason, payload FROM intake WHERE customer_id = 'initech'"
        )
        assert [(r["status"], r["reason"].split(":")[0]) for r in erased] == [
            ("rejected", "customer erased")
        ]
        assert "must not land" not in erased[0]["payload"]
        refused = [e for e in logs if e["event"] == "action link refused"]
        assert len(refused) == sum(2 if "/receipts/" not in w else 1 for w, _ in cases.values())
        reasons = {e["reason"] for e in refused}
        assert {"forged", "malformed", "unknown_notice", "not_a_recipient", "erased",
                "receipt_not_for_this_link"} <= reasons  # fmt: skip
        for entry in logs:
            line = repr(entry)
            assert token not in line and token[:40] not in line and "@" not in line
            assert "127.0.0.1" not in line
        assert all(len(e["token_sha256"]) == 12 for e in refused)

        # Rate limits: per link, then (on a second server) per client; 429 with Retry-After.
        globex_path = path_of(web_stack, web_stack.links("globex", "object")[0])
        web_stack.settings.link_rate_per_token = 3
        answers = [(await http.get(globex_path)).status_code for _ in range(4)]
        assert answers == [200, 200, 200, 429]
        limited = await http.get(globex_path)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        web_stack.settings.link_rate_per_token = 30

        # A cancelled notice says so and offers nothing; a post records nothing.
        cancelled, _ = await control.submit(
            web_stack.client, web_stack.pool, notice.notice_id, "cancel",
            {"reason": "Plans changed.", "by": "bob"}, task_queue=web_stack.task_queue,
        )  # fmt: skip
        assert cancelled.status == "accepted", cancelled
        acme_path = path_of(web_stack, acme_url)
        page = await http.get(acme_path)
        assert page.status_code == 200 and "This notice was cancelled" in page.text
        assert actions_offered(page.text) == set()
        # No deadline counting down and no "what your silence means": nothing is asked any more.
        assert "None any more: this notice was cancelled" in page.text
        assert "What your silence means" not in page.text and "That is in " not in page.text
        posted = await http.post(acme_path, data={**form, "nonce": "n" * 24})
        assert posted.status_code == 409 and "cancelled" in posted.text
        assert await customer_actions(web_stack, notice.notice_id) == 3  # and the cancel

    # Key rotation: a new key signs, the old one still verifies, an unknown one does not.
    port = free_port()
    rotated = web_stack.settings.model_copy(
        update={
            "secret_key": "1UF4YMqq-4WNcCWPitpn3xqt31qrAhlxXE2TgNm0Co0",
            "previous_secret_keys": [SECRET],
            "web_port": port,
            "public_url": f"http://127.0.0.1:{port}",
            "link_rate_per_client": 4,
        }
    )
    stop = asyncio.Event()
    started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(
        serve(rotated, stop, pool=web_stack.pool, client=web_stack.client, started=started)
    )
    try:
        url = await asyncio.wait_for(started, 30)
        new_signer = LinkSigner(rotated.verification_keys, url)
        fresh = new_signer.token(ActionLink(notice.notice_id, "acme", LinkAction.object, later))
        unknown = LinkSigner("a-key-nobody-listed", url).token(
            ActionLink(notice.notice_id, "acme", LinkAction.object, later)
        )
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            assert (await http.get(path_of(web_stack, acme_url))).status_code == 200  # old key
            assert (await http.get(f"/a/{fresh}")).status_code == 200  # new key
            assert (await http.get(f"/a/{unknown}")).status_code == 403
            assert (await http.get(f"/a/{fresh}")).status_code == 200
            limited = await http.get(f"/a/{fresh}")  # the fifth request from this client
            assert limited.status_code == 429 and "retry-after" in limited.headers
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await server
