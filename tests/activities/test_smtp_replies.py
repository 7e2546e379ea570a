"""SMTP replies, Message-IDs and objection content keys that erasure reaches (issue 10, item 2).

A relay's reply often repeats the address ("550 5.1.1 <jane@acme.example>: Recipient address
rejected"): the ledger and the delivery events keep its code and enhanced status in clear and its
text sealed with the customer's key, so erasing the customer leaves ``[erased]``. Message-IDs and
objection content keys are keyed with the customer's ``ids`` subkey; rows written before keep
theirs and are recognised. All against the real aiosmtpd sink and PostgreSQL.
"""

from __future__ import annotations

import csv
import hashlib
import json
from datetime import UTC, datetime
from importlib import resources

import pytest
from temporalio.testing import ActivityEnvironment

from activities.sending import SendingActivities
from noticeflow import evidence, intake, repository
from noticeflow.application.intake import content_refs
from noticeflow.contracts import AudienceRequest, SendRequest
from noticeflow.crypto import ERASED, Field, is_sealed, load_keys, open_sealed
from noticeflow.mail import message_id
from tests import helpers
from worker.main import make_deps

FROM = "privacy@vendor.example"


@pytest.fixture
async def sent(pool, smtp_sink):
    """The notice snapshotted and mailed: umbrella's only contact (.invalid) is refused with a
    550 that echoes its address, as relays do."""
    deps = make_deps(pool, smtp_sink.url, FROM)
    now = datetime.now(UTC)
    spec = helpers.notice(now, audience={})
    await repository.upsert_customers(pool, helpers.customers())
    await repository.create_notice(pool, spec, "alice", now)
    env, sending = ActivityEnvironment(), SendingActivities(deps)
    await env.run(sending.snapshot_audience, AudienceRequest(spec=spec, at=now))
    await env.run(sending.send_notices, SendRequest(spec=spec, at=now))
    return deps, env, sending, spec, now


async def delivery_event(pool, customer_id: str) -> tuple[str, dict]:
    row = await pool.fetchrow(
        "SELECT event_type, data FROM events WHERE event_type IN"
        " ('notice_delivered', 'notice_undelivered') AND data->>'customer_id' = $1",
        customer_id,
    )
    data = row["data"] if isinstance(row["data"], dict) else json.loads(row["data"])
    return row["event_type"], data


async def status_of(pool, receipt_id: str) -> str:
    receipt = await intake.get(pool, receipt_id)
    assert receipt is not None
    return receipt.status


async def test_a_refusal_is_stored_as_code_status_and_a_sealed_text(pool, sent):
    row = await pool.fetchrow("SELECT * FROM deliveries WHERE customer_id = 'umbrella'")
    assert (row["status"], row["smtp_code"], row["smtp_status"]) == ("failed", 550, "5.1.1")
    assert row["smtp_reply"] is None  # no unsealed reply written any more
    assert is_sealed(row["smtp_text"]) and "umbrella" not in row["smtp_text"]
    key = (await load_keys(pool, ["umbrella"]))["umbrella"]
    text = key.unseal(Field.DELIVERY_SMTP_TEXT, row["smtp_text"])
    # opens to the text (scrubbed of the address as before: sealed is the second guard)
    assert text == "<<address>>: Recipient address rejected: mailbox unavailable"
    # bound to its place: the same ciphertext does not open as another field
    assert key.unseal(Field.DELIVERY_EMAIL, row["smtp_text"]) == ERASED
    accepted = await pool.fetchrow("SELECT * FROM deliveries WHERE customer_id = 'globex'")
    assert (accepted["smtp_code"], accepted["smtp_status"]) == (250, "2.0.0")
    assert is_sealed(accepted["smtp_text"]) and accepted["smtp_reply"] is None

    event_type, data = await delivery_event(pool, "umbrella")
    assert event_type == "notice_undelivered"
    [contact] = data["contacts"]
    assert "reply" not in contact
    assert (contact["status"], contact["smtp_code"], contact["smtp_status"]) == (
        "failed", 550, "5.1.1",
    )  # fmt: skip
    assert is_sealed(contact["smtp_text"])
    assert key.unseal("notice_undelivered.smtp_text", contact["smtp_text"]) == text
    # the ledger's ciphertext is not the event's (a sealed value cannot move between places)
    assert contact["smtp_text"] != row["smtp_text"]
    assert "umbrella.invalid" not in json.dumps(data)
    schema = await pool.fetchval(
        "SELECT schema_version FROM events WHERE event_type = 'notice_undelivered'"
    )
    assert schema == 2


async def test_after_erasure_the_reply_text_reads_erased_code_and_status_stay(pool, sent, tmp_path):
    *_, spec, _ = sent
    await repository.erase_customer(pool, "umbrella")

    row = await pool.fetchrow("SELECT * FROM deliveries WHERE customer_id = 'umbrella'")
    assert (row["smtp_code"], row["smtp_status"], row["smtp_reply"]) == (550, "5.1.1", None)
    [ledger] = await helpers.ledger(pool, "customer_id = 'umbrella'")
    assert ledger["reply"] == "550 5.1.1 [erased]"
    _, data = await delivery_event(pool, "umbrella")  # the event is as written: its key is gone
    assert open_sealed(None, "notice_undelivered.smtp_text", data["contacts"][0]["smtp_text"]) == (
        ERASED
    )

    await evidence.export_pack(pool, spec.notice_id, tmp_path / "pack")
    with (tmp_path / "pack" / "deliveries.csv").open() as file:
        rows = {r["customer_id"]: r for r in csv.DictReader(file)}
    assert "smtp_reply" not in rows["umbrella"]
    assert (rows["umbrella"]["smtp_code"], rows["umbrella"]["smtp_status"]) == ("550", "5.1.1")
    assert rows["umbrella"]["smtp_text"] == ERASED
    assert rows["globex"]["smtp_text"].startswith("Ok: queued as ")  # live: opened
    customers = (tmp_path / "pack" / "customers.csv").read_text()
    assert "failed: 550 5.1.1" in customers and "mailbox unavailable" not in customers


async def test_a_deleted_key_alone_makes_the_text_read_erased(pool, sent):
    await pool.execute("DELETE FROM customer_keys WHERE customer_id = 'globex'")
    [ledger] = await helpers.ledger(pool, "customer_id = 'globex'")
    assert ledger["reply"] == "250 2.0.0 [erased]"


async def test_rows_from_before_migration_014_are_read_from_their_reply(pool, sent):
    """A row written before keeps its unsealed reply until its next outcome; readers parse it."""
    await pool.execute(
        "UPDATE deliveries SET smtp_code = NULL, smtp_status = NULL, smtp_text = NULL,"
        " smtp_reply = '550 5.1.1 mailbox unavailable' WHERE customer_id = 'umbrella'"
    )
    [ledger] = await helpers.ledger(pool, "customer_id = 'umbrella'")
    assert ledger["reply"] == "550 5.1.1 mailbox unavailable"


async def test_message_ids_are_keyed_per_customer(pool, smtp_sink):
    # Two customers list the same mailbox: without the customer's key nothing links the ids.
    shared = helpers.CUSTOMERS_CSV.replace("legal@globex.example", "dpo@initech.example")
    deps = make_deps(pool, smtp_sink.url, FROM)
    now = datetime.now(UTC)
    spec = helpers.notice(now, audience={})
    await repository.upsert_customers(pool, helpers.customers(shared))
    await repository.create_notice(pool, spec, "alice", now)
    env, sending = ActivityEnvironment(), SendingActivities(deps)
    await env.run(sending.snapshot_audience, AudienceRequest(spec=spec, at=now))
    await env.run(sending.send_notices, SendRequest(spec=spec, at=now))

    ids = {
        r["customer_id"]: r["message_id"]
        for r in await pool.fetch(
            "SELECT customer_id, message_id FROM deliveries WHERE customer_id IN"
            " ('globex', 'initech')"
        )
    }
    assert ids["globex"] != ids["initech"]
    keys = await load_keys(pool, ["globex", "initech"])
    for customer_id in ("globex", "initech"):
        expected = message_id(
            keys[customer_id], spec.notice_id, "dpo@initech.example", "notice", FROM
        )
        assert ids[customer_id] == expected
    # the unkeyed id of before is not what was sent
    unkeyed = hashlib.sha256(
        f"{spec.notice_id}\x1fglobex\x1fdpo@initech.example\x1fnotice".encode()
    ).hexdigest()[:32]
    assert unkeyed not in json.dumps(ids)
    mailed = sorted(
        str(m["Message-ID"]) for m in smtp_sink.messages() if m["To"] == "dpo@initech.example"
    )
    assert mailed == sorted(ids.values())


@pytest.mark.parametrize("legacy_ref", [True, False])
async def test_a_ledger_row_written_before_keeps_its_message_id(pool, smtp_sink, legacy_ref):
    """A row left at 'sending' by an earlier attempt (or written before the keyed ids, under
    the blind index of then) is mailed again with the id it was written with: one row, one id."""
    deps = make_deps(pool, smtp_sink.url, FROM)
    now = datetime.now(UTC)
    spec = helpers.notice(now, audience={"customers": ["globex"]})
    await repository.upsert_customers(pool, helpers.customers())
    await repository.create_notice(pool, spec, "alice", now)
    env, sending = ActivityEnvironment(), SendingActivities(deps)
    await env.run(sending.snapshot_audience, AudienceRequest(spec=spec, at=now))
    key = (await load_keys(pool, ["globex"]))["globex"]
    address = "legal@globex.example"
    ref = key.legacy_index(address) if legacy_ref else key.index(address)
    old_id = f"<{hashlib.sha256(b'as computed before').hexdigest()[:32]}@vendor.example>"
    await pool.execute(
        "INSERT INTO deliveries (notice_id, customer_id, contact_ref, email, kind, message_id,"
        " status, first_attempt_at) VALUES ($1, 'globex', $2, $3, 'notice', $4, 'sending', now())",
        spec.notice_id, ref, key.seal(Field.DELIVERY_EMAIL, address), old_id,
    )  # fmt: skip

    await env.run(sending.send_notices, SendRequest(spec=spec, at=now))

    assert [str(m["Message-ID"]) for m in smtp_sink.messages()] == [old_id]
    rows = await pool.fetch("SELECT * FROM deliveries WHERE customer_id = 'globex'")
    assert [(r["contact_ref"], r["message_id"], r["attempts"], r["status"]) for r in rows] == [
        (ref, old_id, 2, "accepted")
    ]
    _, data = await delivery_event(pool, "globex")
    assert [c["message_id"] for c in data["contacts"]] == [old_id]

    # Finished: a retry finds the row, mails nothing and reports the same id.
    await pool.execute("UPDATE recipients SET delivery = 'pending'")  # as if the write was lost
    await env.run(sending.send_notices, SendRequest(spec=spec, at=now))
    assert len(smtp_sink.messages()) == 1


@pytest.mark.parametrize("written_with", ["root key (before the subkeys)", "index subkey"])
async def test_an_open_case_written_before_is_still_a_repeat_of_the_same_words(
    pool, sent, written_with
):
    deps, *_, spec, _ = sent
    reason = "We object: Jane Doe <jane@acme.example> handles this"
    first = await intake.record(
        pool, spec.notice_id, "object", {"customer_id": "acme", "reason": reason}, channel="cli"
    )
    await helpers.take_intake(deps, spec)
    assert await status_of(pool, first.receipt_id) == intake.ACCEPTED
    key = (await load_keys(pool, ["acme"]))["acme"]
    stored = await pool.fetchval("SELECT content_ref FROM objections WHERE customer_id = 'acme'")
    assert (
        stored == key.ident("objection-content", reason.casefold()) == content_refs(key, reason)[0]
    )
    # the case as a release before this one wrote it
    old = key.legacy_index(reason) if written_with.startswith("root") else key.index(reason)
    await pool.execute("UPDATE objections SET content_ref = $1 WHERE customer_id = 'acme'", old)

    again = await intake.record(
        pool, spec.notice_id, "object", {"customer_id": "acme", "reason": reason}, channel="cli"
    )
    other = await intake.record(
        pool, spec.notice_id, "object", {"customer_id": "acme", "reason": "Other words"},
        channel="cli",
    )  # fmt: skip
    await helpers.take_intake(deps, spec)
    judged = await intake.get(pool, again.receipt_id)
    assert judged is not None and judged.status == intake.DUPLICATE
    assert first.receipt_id in str(judged.reason)
    assert await status_of(pool, other.receipt_id) == intake.ACCEPTED
    assert await pool.fetchval("SELECT count(*) FROM objections WHERE customer_id = 'acme'") == 2


async def test_migration_014_reads_code_and_status_of_old_rows_and_clears_erased_texts(pool, sent):
    """The migration's data part, run again over rows as they were before it (the test database
    is created at the latest version): code and status parsed from the old reply; the unsealed
    text of an erased customer removed, a live customer's kept until its row's next outcome."""
    old = {
        "acme": "550 5.1.1 <dpo@acme.example>: Recipient address rejected",
        "globex": "250 2.0.0 Ok: queued as 1a2b",
        "initech": "451 greylisted",
        "hooli": "not sent: could not build the message: ValueError: x",
        "umbrella": "550 2.0.0 odd <nobody@umbrella.invalid>",
    }
    for customer_id, reply in old.items():
        await pool.execute(
            "UPDATE deliveries SET smtp_code = NULL, smtp_status = NULL, smtp_text = NULL,"
            " smtp_reply = $2 WHERE customer_id = $1",
            customer_id, reply,
        )  # fmt: skip
    await pool.execute("DELETE FROM customer_keys WHERE customer_id = 'umbrella'")  # erased then
    sql = (resources.files("noticeflow") / "migrations/014_smtp_replies.sql").read_text()
    code = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    data_part = [s for s in code.split(";") if "UPDATE deliveries" in s]
    assert len(data_part) == 3
    for statement in data_part:
        await pool.execute(statement)

    rows = {
        r["customer_id"]: (r["smtp_code"], r["smtp_status"], r["smtp_reply"])
        for r in await pool.fetch(
            "SELECT DISTINCT customer_id, smtp_code, smtp_status, smtp_reply FROM deliveries"
        )
    }
    assert rows == {
        "acme": (550, "5.1.1", old["acme"]),
        "globex": (250, "2.0.0", old["globex"]),
        "initech": (451, None, old["initech"]),
        "hooli": (None, None, old["hooli"]),
        "umbrella": (550, None, None),  # erased: its text is gone, the code stays
    }
    # the readers agree with the migration on the old replies
    for customer_id in ("acme", "globex", "initech"):
        [row, *_] = await helpers.ledger(pool, f"customer_id = '{customer_id}'")
        assert row["reply"] == " ".join(old[customer_id].split())
    [umbrella] = await helpers.ledger(pool, "customer_id = 'umbrella'")
    assert umbrella["reply"] == "550 [erased]"
