"""Sending over several SMTP connections at once, rate-limited: every contact exactly once."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from temporalio.testing import ActivityEnvironment

from activities.sending import SendingActivities
from noticeflow import repository
from noticeflow.contracts import AudienceRequest, SendRequest
from noticeflow.domain.customers import parse_customers_csv
from noticeflow.mail import TemporarySmtpError
from tests import helpers
from worker.main import make_deps

CUSTOMERS = 60


def many_customers() -> str:
    rows = ["customer_id,name,region,services,contact_emails,timezone"]
    for i in range(CUSTOMERS):
        contacts = f"a{i}@c{i}.example;b{i}@c{i}.example" if i % 3 else f"a{i}@c{i}.example"
        if i % 10 == 7:
            contacts = f"x{i}@c{i}.invalid"  # permanent failure: undelivered
        rows.append(f"c{i:03d},Customer {i},US,assistant,{contacts},America/New_York")
    return "\n".join(rows) + "\n"


async def test_concurrent_rate_limited_sending_mails_each_contact_once(pool, smtp_sink):
    deps = make_deps(
        pool,
        smtp_sink.url,
        "privacy@vendor.example",
        send_batch_size=25,
        smtp_concurrency=4,
        smtp_rate=2000,
    )
    now = datetime.now(UTC)
    spec = helpers.notice(now, audience={})
    customers = parse_customers_csv(many_customers())
    await repository.upsert_customers(pool, customers)
    await repository.create_notice(pool, spec, "alice", now)
    env, sending = ActivityEnvironment(), SendingActivities(deps)
    await env.run(sending.snapshot_audience, AudienceRequest(spec=spec, at=now))
    heartbeats: list[object] = []
    env.on_heartbeat = lambda *details: heartbeats.append(details[0])
    result = await env.run(sending.send_notices, SendRequest(spec=spec, at=now))
    assert set(heartbeats) >= {"c024", "c049", "c059"}  # the cursor after each batch of 25
    assert (result.delivered, result.undelivered) == (CUSTOMERS - CUSTOMERS // 10, CUSTOMERS // 10)
    expected = {e for c in customers for e in c.contact_emails if not e.endswith(".invalid")}
    received = [m["To"] for m in smtp_sink.messages()]
    assert sorted(received) == sorted(expected)  # every contact, none twice
    assert len({m["Message-ID"] for m in smtp_sink.messages()}) == len(received)
    ledger = await helpers.ledger(pool)
    assert {row["attempts"] for row in ledger} == {1}
    assert await pool.fetchval("SELECT count(*) FROM recipients WHERE delivery = 'pending'") == 0


async def greylisted_notice(pool, smtp_sink, tries: int):
    deps = make_deps(pool, smtp_sink.url, "privacy@vendor.example", smtp_concurrency=2)
    now = datetime.now(UTC)
    spec = helpers.notice(now, audience={})
    csv = helpers.CUSTOMERS_CSV.replace("dpo@initech.example", f"greylist-{tries}@initech.example")
    await repository.upsert_customers(pool, helpers.customers(csv))
    await repository.create_notice(pool, spec, "alice", now)
    env, sending = ActivityEnvironment(), SendingActivities(deps)
    await env.run(sending.snapshot_audience, AudienceRequest(spec=spec, at=now))
    return env, sending, SendRequest(spec=spec, at=now)


def delivered_to(smtp_sink) -> list[str]:
    return sorted(m["To"] for m in smtp_sink.messages())


async def test_a_4xx_reply_is_retried_with_backoff_within_the_batch(pool, smtp_sink):
    env, sending, request = await greylisted_notice(pool, smtp_sink, tries=1)
    result = await env.run(sending.send_notices, request)
    assert (result.delivered, result.undelivered) == (4, 1)  # umbrella's only contact is .invalid
    assert delivered_to(smtp_sink).count("greylist-1@initech.example") == 1
    row = (await helpers.ledger(pool, "customer_id = 'initech'"))[0]
    assert (row["status"], row["smtp_code"]) == ("accepted", 250)


async def test_a_persistent_4xx_fails_the_activity_after_the_others_and_a_retry_finishes(
    pool, smtp_sink
):
    env, sending, request = await greylisted_notice(pool, smtp_sink, tries=4)
    with pytest.raises(TemporarySmtpError, match=r"1 customer.* still pending.*451"):
        await env.run(sending.send_notices, request)
    others = [a for a in delivered_to(smtp_sink) if "initech" not in a]
    assert len(others) == 4  # everyone else was mailed (acme twice) and is in the ledger
    ledger = {row["customer_id"]: row for row in await helpers.ledger(pool)}
    assert ledger["initech"]["status"] == "deferred"
    assert ledger["initech"]["smtp_code"] == 451 and ledger["initech"]["smtp_status"] == "4.7.1"
    assert {ledger[c]["status"] for c in ("acme", "globex", "hooli")} == {"accepted"}
    # ... and recorded: only the customer whose contact was deferred is still pending.
    pending = await pool.fetch("SELECT customer_id FROM recipients WHERE delivery = 'pending'")
    assert [row["customer_id"] for row in pending] == ["initech"]

    result = await env.run(sending.send_notices, request)  # Temporal's retry of the activity
    assert (result.delivered, result.undelivered) == (1, 0)  # a retry counts only its own
    assert delivered_to(smtp_sink).count("greylist-4@initech.example") == 1
    assert len(smtp_sink.messages()) == 5  # acme x2, globex, initech, hooli: nobody twice
    assert await pool.fetchval("SELECT count(*) FROM recipients WHERE delivery = 'pending'") == 0
    counts = dict(await pool.fetch(
        "SELECT delivery, count(*) FROM recipients GROUP BY delivery"
    ))  # fmt: skip
    assert counts == {"delivered": 4, "undelivered": 1}  # umbrella's only contact is .invalid
    assert await pool.fetchval(
        "SELECT count(*) FROM events WHERE event_type IN ('notice_delivered', 'notice_undelivered')"
    ) == 5  # fmt: skip
