"""Rule 14 for mail: a message that fails the same way every time is a recorded permanent failure
of that one contact, never a retry loop; a contact that only ever gets temporary (4xx) replies is
retried with bounded backoff and then given up, so its customer becomes `undelivered` (rule 4).
Also: every delivery records which version of the notice text it carried (rule 12).

All against the real aiosmtpd sink (noticeflow/sink.py): ``.invalid`` gets 550, ``greylist-N``
gets 451 N times, ``tempfail-…`` always gets 451.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from importlib import resources

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.testing import ActivityEnvironment

from activities.sending import SendingActivities
from noticeflow import repository
from noticeflow.config import load_settings
from noticeflow.contracts import AudienceRequest, ResendRequest, SendRequest
from noticeflow.crypto import Field, load_keys
from noticeflow.domain.errors import InputError
from noticeflow.domain.rules import Phase
from noticeflow.mail import SmtpReply, TemporarySmtpError
from noticeflow.sink import SmtpSink
from tests import helpers
from tests.workflows.test_notice_lifecycle import wait_for
from worker.main import build_worker, make_deps

FROM = "privacy@vendor.example"


async def prepare(pool, smtp_url: str, csv: str = helpers.CUSTOMERS_CSV, **deps_options):
    """Customers imported, the notice (all regions) created and its audience snapshotted."""
    deps = make_deps(pool, smtp_url, FROM, **deps_options)
    now = datetime.now(UTC)
    spec = helpers.notice(now, audience={})
    await repository.upsert_customers(pool, helpers.customers(csv))
    await repository.create_notice(pool, spec, "alice", now)
    env, sending = ActivityEnvironment(), SendingActivities(deps)
    await env.run(sending.snapshot_audience, AudienceRequest(spec=spec, at=now))
    return env, sending, spec, SendRequest(spec=spec, at=now)


async def set_contact(pool, notice_id: str, customer_id: str, position: int, address: str) -> None:
    """Replace a snapshotted contact address (stored sealed) — e.g. with one no CSV would let in."""
    key = (await load_keys(pool, [customer_id]))[customer_id]
    status = await pool.execute(
        "UPDATE recipient_contacts SET email = $4"
        " WHERE notice_id = $1 AND customer_id = $2 AND position = $3",
        notice_id, customer_id, position, key.seal(Field.CONTACT_EMAIL, address),
    )  # fmt: skip
    assert status == "UPDATE 1"


async def deliveries(pool) -> dict[str, str]:
    rows = await pool.fetch("SELECT customer_id, delivery FROM recipients ORDER BY customer_id")
    return {row["customer_id"]: row["delivery"] for row in rows}


async def delivery_events(pool) -> dict[str, dict]:
    rows = await pool.fetch(
        "SELECT event_type, data FROM events"
        " WHERE event_type IN ('notice_delivered', 'notice_undelivered') ORDER BY position"
    )
    found: dict[str, dict] = {}
    for row in rows:
        data = row["data"] if isinstance(row["data"], dict) else json.loads(row["data"])
        found[data["customer_id"]] = {"type": row["event_type"], **data}
    return found


async def event_reply(pool, event: dict, contact: int) -> str:
    """A delivery event's reply for one contact, as one line: code, status, the text opened."""
    found = event["contacts"][contact]
    key = (await load_keys(pool, [event["customer_id"]]))[event["customer_id"]]
    text = key.unseal(f"{event['type']}.smtp_text", found["smtp_text"])
    return SmtpReply(found["smtp_code"], found["smtp_status"], text).readable()


def received(sink: SmtpSink) -> list[str]:
    return sorted(str(m["To"]) for m in sink.messages())


async def run_like_temporal(env, sending, request, tries: int = 12, pause: float = 0.5):
    """Run send_notices as Temporal's retries would: again after each failure, with the last
    heartbeat (the cursor) carried into the next attempt. Returns (result, failures)."""
    beats: list[object] = []
    env.on_heartbeat = lambda *details: beats.append(details[0])
    failures: list[TemporarySmtpError] = []
    for _ in range(tries):
        try:
            return await env.run(sending.send_notices, request), failures
        except TemporarySmtpError as error:
            failures.append(error)
            env.info = dataclasses.replace(env.info, heartbeat_details=beats[-1:])
            await asyncio.sleep(pause)
    raise AssertionError(f"still failing after {tries} attempts: {failures[-1]}")


async def test_a_message_that_cannot_be_built_fails_alone_and_the_rest_is_mailed(
    pool, smtp_sink, tmp_path
):
    # globex's mail cannot be rendered (a template error that only its data triggers) ...
    original = (resources.files("noticeflow") / "templates/mail/notice.txt.j2").read_text()
    (tmp_path / "notice.txt.j2").write_text(
        original + "{% if customer_id == 'globex' %}{{ no_such_value }}{% endif %}\n"
    )
    env, sending, spec, request = await prepare(pool, smtp_sink.url, template_dir=tmp_path)
    # ... initech's only contact and acme's second one carry a line break (header injection).
    injected = "dpo@initech.example\r\nBcc: spy@evil.example"
    await set_contact(pool, spec.notice_id, "initech", 0, injected)
    await set_contact(pool, spec.notice_id, "acme", 1, "dpo@acme.example\nBcc: spy@evil.example")

    result = await env.run(sending.send_notices, request)  # completes: nothing to retry

    assert (result.delivered, result.undelivered) == (2, 3)
    assert received(smtp_sink) == ["privacy@acme.example", "privacy@hooli.example"]
    assert not any("evil" in str(m) for m in smtp_sink.messages())
    assert await deliveries(pool) == {
        "acme": "delivered", "globex": "undelivered", "hooli": "delivered",
        "initech": "undelivered", "umbrella": "undelivered",
    }  # fmt: skip
    ledger = {(r["customer_id"], r["email"]): r for r in await helpers.ledger(pool)}
    built = ledger[("initech", injected)]
    assert built["status"] == "failed" and built["finished_at"] is not None
    assert built["reply"] == (
        "not sent: could not build the message: ValueError: the To header value contains a line break"
    )
    rendered = ledger[("globex", "legal@globex.example")]
    assert rendered["status"] == "failed"
    assert rendered["reply"] == (
        "not sent: could not build the message: UndefinedError: 'no_such_value' is undefined"
    )
    events = await delivery_events(pool)
    assert events["initech"]["type"] == "notice_undelivered"
    assert await event_reply(pool, events["initech"], 0) == built["reply"]
    assert events["acme"]["type"] == "notice_delivered"
    assert [c["status"] for c in events["acme"]["contacts"]] == ["accepted", "failed"]
    # No address reached the ledger's replies or the events (rule 13).
    everything = json.dumps(events) + json.dumps([r["reply"] for r in ledger.values()])
    assert not helpers.addresses_in(everything) - {
        e["message_id"].strip("<>") for e in ledger.values()
    }

    # A retry (Temporal's, or a later run) changes nothing: the failures are final.
    again = await env.run(sending.send_notices, request)
    assert again.processed == 0 and len(smtp_sink.messages()) == 2


async def test_a_contact_that_only_gets_temporary_replies_is_given_up(pool, smtp_sink):
    csv = helpers.CUSTOMERS_CSV.replace("dpo@initech.example", "tempfail-dpo@initech.example")
    env, sending, _, request = await prepare(
        pool, smtp_sink.url, csv, smtp_give_up_after=timedelta(seconds=2)
    )

    result, failures = await run_like_temporal(env, sending, request)

    # The first attempt mailed and recorded everyone else, then failed (transient) for initech
    # alone; a later attempt found initech's first try older than the limit and gave up.
    assert failures and all("still pending" in str(f) and "451" in str(f) for f in failures)
    assert (result.delivered, result.undelivered) == (0, 1)
    assert await deliveries(pool) == {
        "acme": "delivered", "globex": "delivered", "hooli": "delivered",
        "initech": "undelivered", "umbrella": "undelivered",
    }  # fmt: skip
    row = (await helpers.ledger(pool, "customer_id = 'initech'"))[0]
    assert row["status"] == "failed" and row["finished_at"] is not None
    assert row["attempts"] == len(failures) + 1
    assert re.fullmatch(
        rf"451 4\.3\.0 gave up after {row['attempts']} attempts over \d+ seconds: last reply"
        r" 451 4\.3\.0 .*",
        row["reply"],
    ), row["reply"]
    assert row["finished_at"] - row["first_attempt_at"] >= timedelta(seconds=2)
    event = (await delivery_events(pool))["initech"]
    assert event["type"] == "notice_undelivered" and event["deadline"] is None
    assert await event_reply(pool, event, 0) == row["reply"]
    # Everyone else got exactly one mail (acme two contacts, umbrella's is .invalid), initech none.
    assert received(smtp_sink) == [
        "dpo@acme.example", "legal@globex.example", "privacy@acme.example", "privacy@hooli.example",
    ]  # fmt: skip


async def test_a_resumed_run_goes_round_to_the_customers_held_before_its_cursor(pool, smtp_sink):
    csv = helpers.CUSTOMERS_CSV.replace("dpo@initech.example", "greylist-4@initech.example")
    env, sending, _, request = await prepare(pool, smtp_sink.url, csv, send_batch_size=2)
    beats: list[object] = []
    env.on_heartbeat = lambda *details: beats.append(details[0])
    with pytest.raises(TemporarySmtpError, match="still pending"):
        await env.run(sending.send_notices, request)
    assert beats[-1] == "umbrella"  # the cursor went past initech (held) to the end

    env.info = dataclasses.replace(env.info, heartbeat_details=["umbrella"])
    result = await env.run(sending.send_notices, request)  # resumes after umbrella, goes round

    assert (result.processed, result.delivered) == (1, 1)
    assert (await deliveries(pool))["initech"] == "delivered"
    assert received(smtp_sink).count("greylist-4@initech.example") == 1


async def test_the_server_never_able_to_take_an_address_fails_it_alone(pool, tmp_path):
    # A server without SMTPUTF8 can never take a non-ASCII address: a permanent failure of that
    # contact, and the next message on the same connection goes through (no broken envelope).
    csv = helpers.CUSTOMERS_CSV.replace("privacy@acme.example", "jörg@acme.example")
    with SmtpSink(tmp_path / "mail", smtputf8=False) as sink:
        env, sending, _, request = await prepare(pool, sink.url, csv, smtp_concurrency=1)
        result = await env.run(sending.send_notices, request)
        assert received(sink) == sorted([
            "dpo@acme.example", "legal@globex.example", "dpo@initech.example",
            "privacy@hooli.example",
        ])  # fmt: skip
    assert (result.delivered, result.undelivered) == (4, 1)
    row = (await helpers.ledger(pool, "customer_id = 'acme' AND status = 'failed'"))[0]
    assert row["email"] == "jörg@acme.example"
    assert row["reply"].startswith("not sent: SMTPUTF8 is not supported")


async def test_a_non_ascii_address_goes_out_over_smtputf8(pool, smtp_sink):
    csv = helpers.CUSTOMERS_CSV.replace("privacy@acme.example", "jörg@acme.example")
    env, sending, _, request = await prepare(pool, smtp_sink.url, csv)
    result = await env.run(sending.send_notices, request)
    assert (result.delivered, result.undelivered) == (4, 1)
    assert "jörg@acme.example" in str(received(smtp_sink))


async def test_each_delivery_records_the_version_of_the_notice_text_it_carried(pool, smtp_sink):
    env, sending, spec, request = await prepare(pool, smtp_sink.url)
    await env.run(sending.send_notices, request)
    ledger = await helpers.ledger(pool)
    assert {row["text_sha256"] for row in ledger} == {spec.text_sha256()}
    events = await delivery_events(pool)
    assert {e["text_sha256"] for e in events.values()} == {spec.text_sha256()}
    assert all(
        c["text_sha256"] == spec.text_sha256() for e in events.values() for c in e["contacts"]
    )

    # Postponed (a new effective date: a new text), then resent to a customer whose mail bounced.
    postponed = spec.model_copy(update={"effective_at": spec.effective_at + timedelta(days=7)})
    assert postponed.text_sha256() != spec.text_sha256()
    fixed = helpers.CUSTOMERS_CSV.replace("nobody@umbrella.invalid", "dpo@umbrella.example")
    await repository.upsert_customers(pool, helpers.customers(fixed))
    resend = ResendRequest(
        spec=postponed, customer_id="umbrella", key="resend/umbrella/1", at=datetime.now(UTC)
    )
    await env.run(sending.resend_notice, resend)
    row = await pool.fetchrow(
        "SELECT text_sha256, status FROM deliveries WHERE kind = 'resend/umbrella/1'"
    )
    assert (row["status"], row["text_sha256"]) == ("accepted", postponed.text_sha256())
    resent = await pool.fetchval(
        "SELECT data FROM events WHERE event_type = 'notice_delivered' AND data->>'kind' = $1",
        "resend/umbrella/1",
    )
    resent = resent if isinstance(resent, dict) else json.loads(resent)
    assert resent["text_sha256"] == postponed.text_sha256()
    mail = next(m for m in smtp_sink.messages() if m["To"] == "dpo@umbrella.example")
    assert postponed.text_sha256() in mail.get_body(("plain",)).get_content()


def test_give_up_after_is_seconds_or_an_iso_8601_duration(monkeypatch, tmp_path):
    assert load_settings(tmp_path).smtp_give_up_after == timedelta(hours=72)
    for value, expected in [("2", timedelta(seconds=2)), ("PT90M", timedelta(minutes=90)),
                            ("P3D", timedelta(days=3)), ("259200", timedelta(hours=72))]:  # fmt: skip
        monkeypatch.setenv("NOTICEFLOW_SMTP_GIVE_UP_AFTER", value)
        assert load_settings(tmp_path).smtp_give_up_after == expected
    for bad in ["0", "soon", "-5"]:
        monkeypatch.setenv("NOTICEFLOW_SMTP_GIVE_UP_AFTER", bad)
        with pytest.raises(InputError, match="smtp_give_up_after"):
            load_settings(tmp_path)


async def test_through_temporal_a_dead_address_ends_undelivered_and_the_notice_moves_on(
    dev_server_env, pool, smtp_sink
):
    """The same through the real workflow and Temporal's own retries: the send activity fails
    (transient) while initech's contact is deferred, Temporal retries it from its heartbeat, the
    contact is given up and the notice opens its window with initech `undelivered`."""
    client, task_queue = dev_server_env.client, f"tq-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    spec = helpers.notice(
        now, notice_id="dead-address", opt_in=False, objection_window="P1D",
        effective_at=(now + timedelta(days=40)).isoformat(),
    )  # fmt: skip
    csv = helpers.CUSTOMERS_CSV.replace("dpo@initech.example", "tempfail-dpo@initech.example")
    await repository.upsert_customers(pool, helpers.customers(csv))
    await repository.create_notice(pool, spec, "alice", now)
    deps = make_deps(pool, smtp_sink.url, FROM, smtp_give_up_after=timedelta(seconds=2))
    async with build_worker(client, deps, task_queue):
        handle = await helpers.start_notice_workflow(client, spec, task_queue)
        await handle.signal("approve", {"by": "bob"})
        status = await wait_for(handle, lambda s: s.phase is Phase.window_open, timeout=60)
    await handle.terminate("test finished")

    assert (status.delivered, status.undelivered) == (2, 2)  # acme, globex | initech, umbrella
    assert (await deliveries(pool))["initech"] == "undelivered"
    row = (await helpers.ledger(pool, "customer_id = 'initech'"))[0]
    assert row["status"] == "failed" and row["reply"].startswith("451 4.3.0 gave up after ")
    history = await handle.fetch_history()
    attempts = [
        event.activity_task_started_event_attributes.attempt
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    ]
    assert max(attempts) >= 2  # the send activity was retried by Temporal, then completed
