"""Activities may run twice: a retry mails no contact twice and appends no event twice."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from temporalio.testing import ActivityEnvironment

from activities.intake import IntakeActivities
from activities.lifecycle import LifecycleActivities
from activities.sending import SendingActivities
from noticeflow import intake, repository
from noticeflow.contracts import ActivationRequest, AudienceRequest, IntakeRequest, SendRequest
from noticeflow.crypto import Field, load_keys
from noticeflow.domain.rules import Phase
from noticeflow.mail import message_id
from tests import helpers
from worker.main import make_deps

MIXED = helpers.CUSTOMERS_CSV.replace(
    "dpo@initech.example", "gone@initech.invalid;dpo@initech.example"
)


@pytest.fixture
async def prepared(pool, smtp_sink):
    deps = make_deps(pool, smtp_sink.url, "privacy@vendor.example")
    now = datetime.now(UTC)
    spec = helpers.notice(now)
    await repository.upsert_customers(pool, helpers.customers(MIXED))
    await repository.create_notice(pool, spec, "alice", now)
    return SendingActivities(deps), IntakeActivities(deps), LifecycleActivities(deps), spec, now


async def snapshot_and_send(sending, spec, now) -> ActivityEnvironment:
    env = ActivityEnvironment()
    await env.run(sending.snapshot_audience, AudienceRequest(spec=spec, at=now))
    await env.run(sending.send_notices, SendRequest(spec=spec, at=now))
    return env


async def events(pool, event_type: str) -> int:
    return await pool.fetchval("SELECT count(*) FROM events WHERE event_type = $1", event_type)


async def test_snapshot_and_sending_twice_change_nothing_the_second_time(prepared, pool, smtp_sink):
    sending, _, _, spec, now = prepared
    env = ActivityEnvironment()
    request = AudienceRequest(spec=spec, at=now)
    assert await env.run(sending.snapshot_audience, request) == 4
    assert await env.run(sending.snapshot_audience, request) == 4
    assert await events(pool, "audience_snapshotted") == 1

    batch = SendRequest(spec=spec, at=now)
    first = await env.run(sending.send_notices, batch)
    mails_after_first = len(smtp_sink.messages())
    await pool.execute("UPDATE recipients SET delivery = 'pending'")  # as if the write was lost
    await env.run(sending.send_notices, batch)
    assert (first.delivered, first.undelivered) == (3, 1)
    assert (
        len(smtp_sink.messages()) == mails_after_first == 4
    )  # acme x2, globex, initech; .invalid refused
    assert await events(pool, "notice_delivered") == 3
    assert await events(pool, "notice_undelivered") == 1
    assert await pool.fetchval("SELECT max(attempts) FROM deliveries") == 1


async def test_a_permanent_failure_for_one_contact_still_tries_the_others(
    prepared, pool, smtp_sink
):
    sending, _, _, spec, now = prepared
    await snapshot_and_send(sending, spec, now)
    ledger = {
        r["email"]: (r["status"], r["reply"])
        for r in await helpers.ledger(pool, "customer_id = 'initech'")
    }
    assert ledger["gone@initech.invalid"][0] == "failed" and ledger["gone@initech.invalid"][
        1
    ].startswith("550")
    assert ledger["dpo@initech.example"][0] == "accepted"
    row = await pool.fetchrow(
        "SELECT delivery, deadline FROM recipients WHERE customer_id = 'initech'"
    )
    assert row["delivery"] == "delivered" and row["deadline"] is not None


async def test_an_unknown_outcome_is_retried_with_the_same_message_id(prepared, pool, smtp_sink):
    sending, _, _, spec, now = prepared
    env = ActivityEnvironment()
    await env.run(sending.snapshot_audience, AudienceRequest(spec=spec, at=now))
    # A crash between the server's reply and the ledger write leaves the row in 'sending'.
    key = (await load_keys(pool, ["globex"]))["globex"]
    msg_id = message_id(
        key, spec.notice_id, "legal@globex.example", "notice", "privacy@vendor.example"
    )
    ref = key.index("legal@globex.example")
    await pool.execute(
        "INSERT INTO deliveries (notice_id, customer_id, contact_ref, email, kind, message_id, status,"
        " first_attempt_at) VALUES ($1, 'globex', $2, $3, 'notice', $4, 'sending', now())",
        spec.notice_id,
        ref,
        key.seal(Field.DELIVERY_EMAIL, "legal@globex.example"),
        msg_id,
    )
    await env.run(sending.send_notices, SendRequest(spec=spec, at=now))
    globex = [m for m in smtp_sink.messages() if m["To"] == "legal@globex.example"]
    assert [m["Message-ID"] for m in globex] == [msg_id]
    assert await pool.fetchval("SELECT attempts FROM deliveries WHERE contact_ref = $1", ref) == 2


async def test_an_intake_round_run_twice_judges_each_receipt_once(prepared, pool, smtp_sink):
    sending, intake_activities, _, spec, now = prepared
    env = await snapshot_and_send(sending, spec, now)
    first = await intake.record(
        pool, spec.notice_id, "object", {"customer_id": "acme", "reason": "No"}, channel="cli"
    )
    request = IntakeRequest(spec=spec, phase=Phase.window_open, at=now)
    one = await env.run(intake_activities.process_intake, request)
    # The same round again (a retried activity) finds nothing pending: nothing happens twice.
    await pool.execute("UPDATE intake SET mail_due = NULL")
    two = await env.run(intake_activities.process_intake, request)
    assert (one.handled, one.accepted, two.handled) == (1, 1, 0)
    judged = await intake.get(pool, first.receipt_id)
    assert judged is not None and judged.status == "accepted"
    assert await pool.fetchval("SELECT count(*) FROM objections") == 1
    assert await events(pool, "objection_received") == 1
    acks = [m for m in smtp_sink.messages() if "received your objection" in m["Subject"]]
    assert len(acks) == 2  # one per acme contact, not one per attempt


async def test_an_owed_confirmation_is_mailed_once_however_often_it_is_retried(
    prepared, pool, smtp_sink
):
    sending, intake_activities, _, spec, now = prepared
    env = await snapshot_and_send(sending, spec, now)
    await intake.record(
        pool, spec.notice_id, "object", {"customer_id": "acme", "reason": "No"}, channel="cli"
    )
    request = IntakeRequest(spec=spec, phase=Phase.window_open, at=now)
    await env.run(intake_activities.process_intake, request)
    # As if the worker died between mailing and clearing mail_due: the confirmation is owed again.
    key = (await load_keys(pool, ["acme"]))["acme"]
    plan = json.dumps({"headline": "We have received your objection", "paragraphs": ["x"]})
    await pool.execute("UPDATE intake SET mail_due = $1", key.seal(Field.INTAKE_MAIL_DUE, plan))
    again = await env.run(intake_activities.process_intake, request)
    assert again.handled == 0
    assert await pool.fetchval("SELECT count(*) FROM intake WHERE mail_due IS NOT NULL") == 0
    acks = [m for m in smtp_sink.messages() if "received your objection" in m["Subject"]]
    assert len(acks) == 2


async def test_each_mail_carries_the_customers_own_signed_object_link(prepared, pool, smtp_sink):
    sending, _, _, spec, now = prepared
    await snapshot_and_send(sending, spec, now)
    signer = sending.deps.links
    for mail in smtp_sink.messages():
        text = mail.get_body(("plain",)).get_content()
        url = next(line for line in text.splitlines() if line.startswith(signer.public_url))
        link = signer.verify(url.rsplit("/", 1)[1], now)
        customer = mail["To"].split("@")[1].split(".")[0]
        assert (link.notice_id, link.customer_id, link.action) == (
            spec.notice_id,
            customer,
            "opt_in" if spec.opt_in else "object",
        )
        html = mail.get_body(("html",)).get_content()
        assert f'href="{url}"' in html


async def test_an_activation_mail_owed_by_an_interrupted_round_goes_out_next_round(
    prepared, pool, smtp_sink
):
    sending, _, lifecycle, spec, now = prepared
    env = await snapshot_and_send(sending, spec, now)
    # As if a round switched globex on, committed, and died before its mail went out.
    await pool.execute(
        "UPDATE recipients SET activated = true, settled = true, activation_mail_due = true"
        " WHERE customer_id = 'globex'"
    )
    await env.run(lifecycle.activate_due, ActivationRequest(spec=spec, now=spec.effective_at))
    mails = [m for m in smtp_sink.messages() if "now in use" in m["Subject"]]
    assert [m["To"] for m in mails] == ["legal@globex.example"]
    owed = await pool.fetchval(
        "SELECT activation_mail_due FROM recipients WHERE customer_id = 'globex'"
    )
    assert owed is False
