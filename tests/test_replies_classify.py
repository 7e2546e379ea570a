"""Classifying replies over the real CLI (a subprocess on the test PostgreSQL; Temporal out of
reach, so receipts stay pending and the real intake activity judges them), on an ordinary notice:
an opt-in that cannot apply is refused before anything is recorded; a classification whose receipt
the intake rejected does not bind (the reply is new again, the rejection shown, and the next
classification takes the mail's receipt time); a rejected receipt is exit 1 with the reason; `by`
with control characters is refused; an erased customer's reply can still be marked handled. One
test has Temporal and a worker up: --json shows the reply as its receipt was judged."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from temporalio.testing import ActivityEnvironment

from activities.sending import SendingActivities
from noticeflow import repository
from noticeflow.contracts import AudienceRequest, SendRequest, workflow_id
from noticeflow.domain.replies import Classification, applicable, opt_in_refusal
from noticeflow.domain.rules import Phase
from noticeflow.replies import store
from noticeflow.replies.inbound import InboundServer
from tests import helpers
from tests.test_replies import ADDRESS, REPLY_ADDRESS, a_reply, reply_to_of, send
from worker.main import build_worker, make_deps


@pytest.fixture
async def ordinary(pool, smtp_sink):
    """An ordinary notice (not opt-in) mailed to the US customers (all general authorisation)."""
    deps = make_deps(pool, smtp_sink.url, "privacy@vendor.example", reply_address=REPLY_ADDRESS)
    now = datetime.now(UTC)
    spec = helpers.notice(now, notice_id="ordinary-test", opt_in=False)
    await repository.upsert_customers(pool, helpers.customers())
    await repository.create_notice(pool, spec, "alice", now)
    env, sending = ActivityEnvironment(), SendingActivities(deps)
    await env.run(sending.snapshot_audience, AudienceRequest(spec=spec, at=now))
    await env.run(sending.send_notices, SendRequest(spec=spec, at=now))
    return deps, spec


@pytest.fixture
def cli(database_url, tmp_path: Path):
    env = {
        **os.environ,
        "NOTICEFLOW_DATABASE_URL": database_url,
        "NOTICEFLOW_TEMPORAL_ADDRESS": "127.0.0.1:9",  # out of reach: receipts stay pending
        "NOTICEFLOW_DATA_DIR": str(tmp_path / "data"),
    }

    async def run(*args: str) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "noticeflow.cli", "replies", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        out, err = await process.communicate()
        return process.returncode or 0, out.decode(), err.decode()

    return run


async def reply_of(endpoint: InboundServer, smtp_sink: Any, contact: str, text: str) -> str:
    to = reply_to_of(smtp_sink, contact)
    answer = await send(endpoint, a_reply(to, contact, text), contact, to)
    return answer.split("(")[1].rstrip(")")


def test_only_what_can_apply_is_offered():
    general = applicable(False, "general", "initech", erased=False)
    assert general == (Classification.objection, Classification.question)
    for mode in ("specific", "dora"):  # may opt in (dora: approve) on an ordinary notice
        assert Classification.opt_in in applicable(False, mode, "c", erased=False)
    assert Classification.opt_in in applicable(True, "general", "c", erased=False)
    assert applicable(True, "general", "c", erased=True) == (Classification.question,)
    assert opt_in_refusal(None, None, "c") is None  # terms unknown: the judgement decides
    assert "not an opt-in notice" in (opt_in_refusal(False, "general", "initech") or "")


async def test_a_rejected_opt_in_does_not_bind_and_the_objection_keeps_the_mail_receipt_time(
    ordinary, smtp_sink, pool, cli
):
    """The hostile tester's case: an opt-in on an ordinary notice for a general customer. Typed by
    ops it is refused at once (exit 1, nothing recorded); taken by auto-act, its receipt is
    rejected by the judgement and the reply is new again; the objection then classified is judged
    timely at the mail's receipt time."""
    deps, spec = ordinary
    async with InboundServer(pool, ADDRESS, port=0, auto_act=True) as endpoint:
        typed = await reply_of(endpoint, smtp_sink, "dpo@initech.example", "We do not agree.")
        acted = await reply_of(endpoint, smtp_sink, "dpo@initech.example", "opt in")

    code, out, err = await cli("classify", typed, "opt_in")
    assert code == 1 and not out, (code, out, err)
    assert "cannot be an opt-in: this notice is not an opt-in notice" in err
    assert "Traceback" not in err
    assert not await pool.fetchval(
        "SELECT count(*) FROM intake WHERE idempotency_key = $1", f"reply:{typed}"
    )  # nothing recorded
    first = await store.get(pool, typed)
    assert first is not None and first.status == "new" and first.receipt_id is None

    # Auto-act took "opt in" as an opt-in: the judgement rejects it, so it does not bind.
    auto = await store.get(pool, acted)
    assert auto is not None and auto.classified_as == "opt_in" and auto.receipt_id
    await helpers.take_intake(deps, spec)
    rejected = await store.get(pool, acted)
    assert rejected is not None
    assert (rejected.status, rejected.receipt_status) == ("new", "rejected")
    assert "not an opt-in notice" in (rejected.receipt_reason or "")
    assert rejected.applicable == ("objection", "question")
    listed = json.loads((await cli("list", "--json"))[1])
    row = next(r for r in listed if r["reply_id"] == acted)
    assert row["status"] == "new" and "not an opt-in notice" in row["receipt_reason"]
    human = (await cli("list"))[1]
    assert "opt_in (rejected: this notice is not an opt-in notice" in human

    # Classified again, as what applies: the objection takes the mail's receipt time.
    for reply_id in (typed, acted):
        code, out, err = await cli("classify", reply_id, "objection", "--json")
        assert code == 0, err
        result = json.loads(out)
        received = await store.get(pool, reply_id)
        assert received is not None and received.status == "classified"
        assert result["receipt"]["action"] == "object"
        assert datetime.fromisoformat(result["receipt"]["received_at"]) == received.received_at
    await helpers.take_intake(deps, spec)
    events = await pool.fetch(
        "SELECT data FROM events WHERE event_type = 'objection_received'"
        " AND data->>'customer_id' = 'initech'"
    )
    times = set()
    for event in events:
        data = json.loads(event["data"]) if isinstance(event["data"], str) else event["data"]
        assert data["timely"] is True and data["channel"] == "reply"
        times.add(datetime.fromisoformat(data["received_at"]))
    assert times == {
        r.received_at for r in [await store.get(pool, typed), await store.get(pool, acted)] if r
    }


async def test_a_rejected_receipt_exits_1_with_the_reason_and_the_reply_can_be_handled(
    ordinary, smtp_sink, pool, cli
):
    deps, spec = ordinary
    async with InboundServer(pool, ADDRESS, port=0) as endpoint:
        reply_id = await reply_of(endpoint, smtp_sink, "dpo@initech.example", "We object.")
    code, out, err = await cli("classify", reply_id, "objection")
    assert code == 0 and "pending" in out, (out, err)
    await helpers.take_intake(deps, spec, Phase.cancelled)  # cancelled meanwhile: rejected
    code, out, err = await cli("classify", reply_id, "objection")
    assert code == 1 and not out, (code, out, err)
    assert "the object was rejected: the notice was cancelled" in err and "new again" in err
    code, out, _ = await cli("classify", reply_id, "objection", "--json")
    assert code == 1 and json.loads(out)["reply"]["status"] == "new"
    code, out, err = await cli("classify", reply_id, "question")
    assert code == 0 and "marked handled" in out, err
    handled = await store.get(pool, reply_id)
    assert handled is not None and (handled.status, handled.classified_as) == (
        "classified",
        "question",
    )


async def test_json_shows_the_reply_as_its_receipt_was_judged(
    ordinary, smtp_sink, pool, database_url, owner_database_url, dev_server_env, tmp_path
):
    """With Temporal and a worker up the receipt is judged while the CLI waits: the reply in the
    --json output is read after that, so its receipt_status is the receipt's status (it said
    "pending" next to "accepted")."""
    deps, spec = ordinary
    async with InboundServer(pool, ADDRESS, port=0) as endpoint:
        reply_id = await reply_of(endpoint, smtp_sink, "dpo@initech.example", "We object.")
    # The notice was mailed by the activities alone: its record says so, as its workflow would,
    # so the run the CLI's wake starts judges the objection within the window.
    owner = await asyncpg.connect(owner_database_url)
    try:
        await owner.execute(
            "UPDATE notices SET phase = 'window_open', window_closes_at = now() + interval '20 days'"
            " WHERE notice_id = $1",
            spec.notice_id,
        )
    finally:
        await owner.close()
    task_queue = f"tq-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "NOTICEFLOW_DATABASE_URL": database_url,
        "NOTICEFLOW_TEMPORAL_ADDRESS": dev_server_env.client.service_client.config.target_host,
        "NOTICEFLOW_TASK_QUEUE": task_queue,
        "NOTICEFLOW_DATA_DIR": str(tmp_path / "data"),
    }
    async with build_worker(dev_server_env.client, deps, task_queue):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "noticeflow.cli", "replies", "classify", reply_id, "objection",
            "--json", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        out, err = await process.communicate()
        handle = dev_server_env.client.get_workflow_handle(workflow_id(spec.notice_id))
        await handle.terminate("test over")
    assert process.returncode == 0, err.decode()
    result = json.loads(out)
    assert result["receipt"]["status"] == "accepted", result
    assert result["reply"]["receipt_status"] == "accepted", result["reply"]
    assert result["reply"]["status"] == "classified"


async def test_by_with_control_characters_is_refused_with_the_other_problems(
    ordinary, smtp_sink, pool, cli
):
    async with InboundServer(pool, ADDRESS, port=0) as endpoint:
        reply_id = await reply_of(endpoint, smtp_sink, "dpo@initech.example", "Which region?")
    for by in ("x\x1b[31m\r\nevil", "x\x1b[31mevil", "x\revil"):
        code, out, err = await cli("classify", reply_id, "spam", "--by", by)
        assert code == 2 and not out, (by, code, out, err)
        assert "unknown classification 'spam'" in err and "no control characters" in err
        assert "\x1b" not in err
    code, _, err = await cli("classify", reply_id, "question", "--by", "x\x1b[31m")
    assert code == 2 and "who classifies (by)" in err
    found = await store.get(pool, reply_id)
    assert found is not None and found.status == "new"


async def test_an_erased_customers_reply_can_be_marked_handled_and_nothing_else(
    ordinary, smtp_sink, pool, cli
):
    async with InboundServer(pool, ADDRESS, port=0) as endpoint:
        reply_id = await reply_of(endpoint, smtp_sink, "dpo@initech.example", "We object.")
    await repository.erase_customer(pool, "initech")
    erased = await store.get(pool, reply_id)
    assert erased is not None and erased.customer_erased and erased.applicable == ("question",)
    code, out, err = await cli("classify", reply_id, "objection")
    assert code == 1 and "erased" in err and "only be marked handled" in err, (out, err)
    code, out, err = await cli("classify", reply_id, "question")
    assert code == 0 and "marked handled" in out, err
    assert not await store.listing(pool, status="new")  # it left the queue
    handled = await store.get(pool, reply_id)
    assert handled is not None and handled.classified_by == "ops"
