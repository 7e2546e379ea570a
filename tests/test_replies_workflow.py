"""A reply before the deadline, classified after it, on the time-skipping server with a real worker:
the notice's workflow (a new run after completion) records a timely objection with the mail's
receipt time. The mail is sent by a real SMTP client to the running inbound endpoint, to the
Reply-To the worker's notice mail carried."""

from __future__ import annotations

import contextlib
import json
import uuid
from datetime import timedelta
from email.message import EmailMessage

import aiosmtplib
import pytest
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from noticeflow import control
from noticeflow.contracts import NoticeStatus, workflow_id
from noticeflow.domain.replies import ReplyAddress
from noticeflow.domain.rules import Phase
from noticeflow.replies import store
from noticeflow.replies.inbound import InboundServer
from tests.workflows.test_intake import act, started
from tests.workflows.test_notice_lifecycle import wait_for
from worker.main import build_worker, make_deps

REPLY_ADDRESS = "reply@replies.vendor.example"


@pytest.fixture
async def running(time_skipping_env: WorkflowEnvironment, pool, smtp_sink):
    task_queue = f"tq-{uuid.uuid4().hex[:8]}"
    deps = make_deps(pool, smtp_sink.url, "privacy@vendor.example", reply_address=REPLY_ADDRESS)
    async with build_worker(time_skipping_env.client, deps, task_queue):
        yield time_skipping_env, task_queue
        for row in await pool.fetch("SELECT notice_id FROM notices"):
            handle = time_skipping_env.client.get_workflow_handle(workflow_id(row["notice_id"]))
            with contextlib.suppress(RPCError):
                await handle.terminate("test over")


async def test_a_reply_before_the_deadline_classified_after_it_is_a_timely_objection(
    running, pool, smtp_sink
):
    env, tq = running
    spec, handle = await started(env, tq, pool)  # opt-in: silence means no
    await act(env, tq, pool, spec, "approve", {"by": "bob"})
    await wait_for(handle, lambda s: s.phase is Phase.window_open)
    (notice_mail,) = [m for m in smtp_sink.messages() if m["To"] == "dpo@initech.example"]
    to = str(notice_mail["Reply-To"])
    reply = EmailMessage()
    reply["From"] = "dpo@initech.example"
    reply["To"] = to
    reply["Subject"] = "Re: " + str(notice_mail["Subject"])
    reply.set_content("We object to OpenAI.\n\nOn Mon, Privacy wrote:\n> " + spec.title)
    async with InboundServer(pool, ReplyAddress.parse(REPLY_ADDRESS), port=0) as inbound:
        await aiosmtplib.send(
            reply, hostname="127.0.0.1", port=inbound.port,
            sender="dpo@initech.example", recipients=[to],
        )  # fmt: skip
    (kept,) = await store.listing(pool, notice_id=spec.notice_id)
    deadline = await pool.fetchval(
        "SELECT deadline FROM recipients WHERE notice_id = $1 AND customer_id = 'initech'",
        spec.notice_id,
    )
    assert kept.received_at < deadline

    await env.sleep(timedelta(days=45))  # past every deadline and the effective date
    await wait_for(handle, lambda s: s.phase is Phase.active)
    # umbrella's only address bounced: settle it, so the notice completes
    excluded = await act(
        env,
        tq,
        pool,
        spec,
        "exclude",
        {"customer_id": "umbrella", "reason": "no contact", "by": "carol"},
    )
    assert excluded.status == "accepted"
    result: NoticeStatus = await handle.result()  # completed: nobody held, initech not active
    assert result.unsettled == 0 and result.activated == 0
    assert await env.get_current_time() > deadline  # ops classify it only now

    classified, receipt = await store.classify(pool, kept.reply_id, "objection", "carol")
    assert receipt is not None
    receipt, why = await control.hand_over(env.client, pool, receipt, tq, wait_seconds=30)
    assert why is None and receipt.status == "accepted", receipt
    assert "late" not in str(receipt.reason)
    row = await pool.fetchrow(
        "SELECT data FROM events WHERE event_type = 'objection_received'"
        " AND data->>'customer_id' = 'initech'"
    )
    event = json.loads(row["data"]) if isinstance(row["data"], str) else row["data"]
    assert event["timely"] is True and event["channel"] == "reply"
    assert event["received_at"].startswith(kept.received_at.isoformat()[:19])
    case = await pool.fetchrow(
        "SELECT status, receipt_id FROM objections WHERE notice_id = $1 AND customer_id = 'initech'",
        spec.notice_id,
    )
    assert case["status"] == "open" and case["receipt_id"] == classified.receipt_id
