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

from noticeflow.domain.replies import ReplyAddress
from noticeflow.replies import store
from noticeflow.replies.inbound import InboundServer
from noticeflow.replies.tokens import ReplyAddresses
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
