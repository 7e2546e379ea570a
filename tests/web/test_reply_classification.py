"""A reply classified on the dashboard, over HTTP, on the real stack (tests/web/conftest.py): a real
SMTP client sends a reply to the running inbound endpoint, ops see it on /replies and classify it
as an objection in one click, and the notice's workflow records a timely objection received at
the mail's receipt time."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime
from email.message import EmailMessage

import aiosmtplib

from noticeflow import repository
from noticeflow.domain.replies import ReplyAddress
from noticeflow.domain.rules import Authorisation
from noticeflow.replies import store
from noticeflow.replies.inbound import InboundServer
from noticeflow.replies.tokens import ReplyAddresses
from tests import helpers
from tests.web.conftest import csrf_of, spec

REPLY_ADDRESS = "reply@replies.vendor.example"
WORDS = "Initech objects to the new sub-processor for its HR data"


async def test_a_reply_classified_as_objection_on_the_dashboard_is_timely_at_its_receipt_time(
    web_stack,
):
    notice = spec("reply-notice")
    await web_stack.notice(notice)
    # The address the mailer writes into this customer's Reply-To (same key, same HMAC).
    replies = ReplyAddresses.configured(REPLY_ADDRESS)
    assert replies is not None
    to = replies.for_recipient(notice.notice_id, "initech")
    message = EmailMessage()
    message["From"] = "Jane Roe <dpo@initech.example>"
    message["To"] = to
    message["Subject"] = "Re: " + notice.title
    message.set_content(f"{WORDS}.\n\nOn Mon, Privacy <privacy@vendor.example> wrote:\n> notice")
    async with InboundServer(web_stack.pool, ReplyAddress.parse(REPLY_ADDRESS), port=0) as inbound:
        before = datetime.now(UTC)
        _, answer = await aiosmtplib.send(
            message, hostname="127.0.0.1", port=inbound.port,
            sender="dpo@initech.example", recipients=[to],
        )  # fmt: skip
    reply_id = re.search(r"rp-[0-9a-f]+", answer).group(0)  # type: ignore[union-attr]
    reply = await store.get(web_stack.pool, reply_id)
    assert reply is not None and reply.status == "new" and reply.received_at >= before
    await asyncio.sleep(1.0)  # classified a while after the mail arrived

    # Signed out: nothing to see.
    async with web_stack.http() as anonymous:
        assert (await anonymous.get("/replies")).status_code in (303, 401)
        posted = await anonymous.post(f"/replies/{reply_id}/classify", data={"kind": "question"})
        assert posted.status_code in (303, 401, 403)
    # A viewer sees it but may not classify it.
    vera = await web_stack.signed_in("vera")
    try:
        page = await vera.get("/replies")
        assert page.status_code == 200 and reply_id in page.text
        assert "needs the operator role" in page.text
        refused = await vera.post(
            f"/replies/{reply_id}/classify",
            data={"kind": "objection", "csrf_token": csrf_of(page.text)},
        )
        assert refused.status_code == 403
    finally:
        await vera.aclose()

    alice = await web_stack.signed_in("alice")
    try:
        page = await alice.get(f"/replies?notice={notice.notice_id}")
        assert page.status_code == 200
        assert WORDS in page.text and "wrote:" not in page.text.split("<details>")[0]
        answer_page = await alice.post(
            f"/replies/{reply_id}/classify",
            data={"kind": "objection", "csrf_token": csrf_of(page.text), "back": "/replies"},
        )
        assert answer_page.status_code == 303
        shown = await alice.get(answer_page.headers["location"] + "?status=classified")
        assert f"Reply {reply_id} classified as an objection" in shown.text
        # no CSRF token: refused
        bad = await alice.post(f"/replies/{reply_id}/classify", data={"kind": "question"})
        assert bad.status_code in (400, 403)
    finally:
        await alice.aclose()

    classified = await store.get(web_stack.pool, reply_id)
    assert classified is not None and classified.classified_as == "objection"
    assert classified.classified_by == "alice" and classified.receipt_id
    loop = asyncio.get_running_loop()
    give_up = loop.time() + 60
    row = None
    while loop.time() < give_up:
        row = await web_stack.pool.fetchrow(
            "SELECT data FROM events WHERE event_type = 'objection_received'"
            " AND stream_id LIKE '%' || $1 || '%'",
            notice.notice_id,
        )
        if row is not None:
            break
        await asyncio.sleep(0.3)
    assert row is not None, "the workflow recorded no objection"
    event = json.loads(row["data"]) if isinstance(row["data"], str) else row["data"]
    assert event["customer_id"] == "initech" and event["channel"] == "reply"
    assert event["timely"] is True
    # The receipt time is the mail's (when the endpoint took it), not the click's.
    assert datetime.fromisoformat(event["received_at"]) == reply.received_at
    receipt = await web_stack.pool.fetchrow(
        "SELECT status, received_at, channel FROM intake WHERE receipt_id = $1",
        classified.receipt_id,
    )
    assert receipt["status"] == "accepted" and receipt["received_at"] == reply.received_at
    case = await web_stack.pool.fetchrow(
        "SELECT status FROM objections WHERE notice_id = $1 AND customer_id = 'initech'",
        notice.notice_id,
    )
    assert case is not None and case["status"] == "open"


def section_of(page: str, reply_id: str) -> str:
    found = re.search(rf'<section class="reply" id="{reply_id}">(.*?)</section>', page, re.DOTALL)
    assert found, f"{reply_id} is not on the page"
    return found.group(1)


async def test_the_page_offers_what_applies_and_a_rejected_classification_does_not_bind(
    web_stack,
):
    """On an ordinary notice: a general customer's reply offers no opt-in (a specific customer's
    does); an opt-in posted anyway is refused and the reply stays new; an auto-acted "opt in" the
    workflow rejects is new again with the rejection shown, and the objection then clicked is
    judged timely at the mail's receipt time; an erased customer's reply can be marked handled."""
    (acme, *others) = helpers.customers()
    await repository.upsert_customers(
        web_stack.pool, [acme.model_copy(update={"authorisation": Authorisation.specific}), *others]
    )
    notice = spec("reply-ordinary", opt_in=False)
    await web_stack.notice(notice)
    replies = ReplyAddresses.configured(REPLY_ADDRESS)
    assert replies is not None

    async def reply(inbound: InboundServer, customer: str, sender: str, text: str) -> str:
        to = replies.for_recipient(notice.notice_id, customer)
        message = EmailMessage()
        message["From"] = sender
        message["To"] = to
        message["Subject"] = "Re: " + notice.title
        message.set_content(text)
        _, answer = await aiosmtplib.send(
            message, hostname="127.0.0.1", port=inbound.port, sender=sender, recipients=[to]
        )
        return re.search(r"rp-[0-9a-f]+", answer).group(0)  # type: ignore[union-attr]

    address = ReplyAddress.parse(REPLY_ADDRESS)
    async with InboundServer(web_stack.pool, address, port=0) as inbound:
        general = await reply(inbound, "initech", "dpo@initech.example", "We do not agree.")
        specific = await reply(inbound, "acme", "privacy@acme.example", "We agree.")
        erased = await reply(inbound, "globex", "legal@globex.example", "Which region?")
    async with InboundServer(web_stack.pool, address, port=0, auto_act=True) as acting:
        auto = await reply(acting, "initech", "dpo@initech.example", "opt in")
    await repository.erase_customer(web_stack.pool, "globex")
    # The sweeper wakes the notice; its workflow rejects the opt-in: it does not bind.
    loop = asyncio.get_running_loop()
    give_up = loop.time() + 60
    while loop.time() < give_up:
        found = await store.get(web_stack.pool, auto)
        if found is not None and found.receipt_status == "rejected":
            break
        await asyncio.sleep(0.3)
    found = await store.get(web_stack.pool, auto)
    assert found is not None and found.status == "new", found

    alice = await web_stack.signed_in("alice")
    try:
        page = (await alice.get(f"/replies?notice={notice.notice_id}")).text
        offered = {
            reply_id: set(re.findall(r'name="kind" value="(\w+)"', section_of(page, reply_id)))
            for reply_id in (general, specific, erased, auto)
        }
        assert offered == {
            general: {"objection", "question"},
            specific: {"objection", "opt_in", "question"},
            erased: {"question"},
            auto: {"objection", "question"},
        }
        assert "erased" in section_of(page, erased)
        shown = section_of(page, auto)
        assert "the intake rejected it: this notice is not an opt-in notice" in shown

        # An opt-in posted anyway: refused, nothing recorded, still new.
        token = csrf_of(page)
        posted = await alice.post(
            f"/replies/{general}/classify",
            data={"kind": "opt_in", "csrf_token": token, "back": "/replies"},
        )
        assert posted.status_code == 303
        flash = (await alice.get("/replies")).text
        assert f"Not classified: reply {general} cannot be an opt-in" in flash
        still = await store.get(web_stack.pool, general)
        assert still is not None and still.status == "new" and still.receipt_id is None

        # The objection for the rejected one: timely, at the mail's receipt time.
        posted = await alice.post(
            f"/replies/{auto}/classify",
            data={"kind": "objection", "csrf_token": token, "back": "/replies"},
        )
        assert posted.status_code == 303
        # The erased customer's reply: marked handled, it leaves the queue.
        posted = await alice.post(
            f"/replies/{erased}/classify",
            data={"kind": "question", "csrf_token": token, "back": "/replies"},
        )
        assert posted.status_code == 303
        queue = (await alice.get(f"/replies?notice={notice.notice_id}")).text
        assert f'id="{erased}"' not in queue and "marked handled" in queue
    finally:
        await alice.aclose()
    handled = await store.get(web_stack.pool, erased)
    assert handled is not None and handled.classified_as == "question"
    row = None
    give_up = loop.time() + 60
    while loop.time() < give_up and row is None:
        row = await web_stack.pool.fetchrow(
            "SELECT data FROM events WHERE event_type = 'objection_received'"
            " AND stream_id LIKE '%' || $1 || '%'",
            notice.notice_id,
        )
        await asyncio.sleep(0.3)
    assert row is not None, "the workflow recorded no objection"
    event = json.loads(row["data"]) if isinstance(row["data"], str) else row["data"]
    assert event["customer_id"] == "initech" and event["timely"] is True
    assert datetime.fromisoformat(event["received_at"]) == found.received_at
