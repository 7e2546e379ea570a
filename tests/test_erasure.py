"""Erased means erased, for good: erasing a customer deletes its key and its personal data in every
record table, records the erasure (ids only) and leaves every hash chain verifiable; it never gets
a key again, an import naming it is refused, and every action for it is a recorded rejection that
keeps no free text. Old ciphertext reads ``[erased]``, never an error."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from noticeflow import intake, repository
from noticeflow.application.shared import load_recipients
from noticeflow.crypto import ERASED, ensure_keys, is_sealed, load_keys, open_sealed
from noticeflow.domain.customers import parse_customers_csv
from noticeflow.domain.errors import InputError
from noticeflow.domain.signals import Objection
from noticeflow.evidence import export_pack, verify_database, verify_pack
from tests import helpers
from tests.conftest import TEST_LINK_KEY

SECRET_REASON = "Jane Roe, our DPO, refuses AI processing"
TRACES = ("dpo@initech.example", "Jane Roe", "Initech", SECRET_REASON)
RECORD_TABLES = [
    "customers",
    "customer_contacts",
    "customer_keys",
    "recipients",
    "recipient_contacts",
    "deliveries",
    "objections",
    "intake",
]


@pytest.fixture
async def notified(pool, smtp_sink):
    spec = await helpers.notified_with_objection(
        pool, smtp_sink.url, Objection(customer_id="initech", reason=SECRET_REASON, by="Jane Roe")
    )
    return spec


async def everything_stored(pool, tables: list[str] | None = None) -> str:
    dump = []
    for table in tables or ["events", *RECORD_TABLES]:
        dump += [
            json.dumps(dict(r), default=str) for r in await pool.fetch(f"SELECT * FROM {table}")
        ]
    return "\n".join(dump)


async def initech_records(pool) -> list[dict]:
    rows = []
    for table in RECORD_TABLES:
        rows += [
            {"table": table, **dict(r)}
            for r in await pool.fetch(f"SELECT * FROM {table} WHERE customer_id = 'initech'")
        ]
    return rows


async def test_personal_data_is_stored_only_sealed(notified, pool):
    stored = await everything_stored(pool)
    for plaintext in (*TRACES, "privacy@acme.example", "Acme Corp"):
        assert plaintext not in stored


async def test_erasure_deletes_the_key_and_the_records_and_the_chains_still_verify(
    notified, pool, tmp_path: Path
):
    spec = notified
    # A Message-ID as written before they were keyed: an unkeyed hash of the address.
    unkeyed = "<" + hashlib.sha256(b"dpo@initech.example").hexdigest() + "@vendor.example>"
    await pool.execute(
        "UPDATE deliveries SET message_id = $1 WHERE customer_id = 'initech' AND kind = 'notice'",
        unkeyed,
    )
    message_ids = {
        r["message_id"]
        for r in await pool.fetch("SELECT message_id FROM deliveries WHERE customer_id = 'initech'")
    }
    assert unkeyed in message_ids and len(message_ids) >= 2  # the notice and the acknowledgement
    result = await repository.erase_customer(pool, "initech")
    assert result["already"] is False
    left_ids = await pool.fetch("SELECT message_id FROM deliveries WHERE customer_id = 'initech'")
    assert left_ids and {r["message_id"] for r in left_ids} == {ERASED}
    in_deliveries = await everything_stored(pool, ["deliveries"])
    for message_id in message_ids:
        assert message_id.strip("<>") not in in_deliveries
    assert result["customer_keys"] == 1 and result["customers"] == 1
    assert result["customer_contacts"] == 1 and result["objections"] == 1
    assert result["intake"] >= 1 and result["deliveries"] >= 1
    customers = {c["customer_id"]: c for c in await repository.list_customers(pool)}
    assert "initech" not in customers and customers["acme"]["name"] == "Acme Corp"
    assert "initech" not in await load_recipients(pool, spec.notice_id, ["initech", "acme"])

    # Nothing of it is left in the records: not in clear, and no ciphertext either.
    left = await initech_records(pool)
    assert left, "its ids stay (the evidence trail)"
    for row in left:
        for column, value in row.items():
            assert not is_sealed(value), (row["table"], column)
    assert all(
        row["table"] not in ("customers", "customer_contacts", "customer_keys") for row in left
    )
    stored = await everything_stored(pool)
    for trace in TRACES:
        assert trace not in stored

    pack = tmp_path / "pack"
    await export_pack(pool, spec.notice_id, pack)
    audience = {c["customer_id"]: c for c in json.loads((pack / "audience.json").read_text())}
    assert audience["initech"]["name"] == ERASED
    assert {c["email"] for c in audience["initech"]["contacts"]} == {ERASED}
    assert audience["acme"]["contacts"][0]["email"] == "privacy@acme.example"
    files = "\n".join(
        p.read_bytes().decode(errors="replace") for p in pack.rglob("*") if p.is_file()
    )
    for trace in TRACES:
        assert trace not in files
    assert ERASED in (pack / "deliveries.csv").read_text()
    assert verify_pack(pack).ok and (await verify_database(pool, spec.notice_id)).ok

    # Old ciphertext in the events reads [erased], never raises.
    events = await pool.fetch(
        "SELECT event_type, data FROM events WHERE data::text LIKE '%initech%'"
    )
    opened = 0
    for event in events:
        for name, value in json.loads(event["data"]).items():
            if is_sealed(value):
                assert open_sealed(None, f"{event['event_type']}.{name}", value) == ERASED
                opened += 1
    assert opened >= 2  # at least the objection's by and reason


async def test_erasing_twice_says_already_erased(notified, pool):
    first = await repository.erase_customer(pool, "initech")
    again = await repository.erase_customer(pool, "initech")
    assert again == {"customer_id": "initech", "already": True, "erased_at": first["erased_at"]}
    assert await pool.fetchval("SELECT count(*) FROM customer_erasures") == 1
    erased_events = await pool.fetchval(
        "SELECT count(*) FROM events WHERE stream_id = 'customer-initech'"
        " AND event_type = 'customer_erased'"
    )
    assert erased_events == 1
    with pytest.raises(InputError, match="no customer 'nobody-here'"):
        await repository.erase_customer(pool, "nobody-here")


async def test_an_erased_customer_never_gets_a_key_again(notified, pool):
    await repository.erase_customer(pool, "initech")
    assert "initech" not in await ensure_keys(pool, ["initech", "acme"])
    assert await load_keys(pool, ["initech"]) == {}
    with pytest.raises(InputError, match="erased for good: initech"):
        await repository.upsert_customers(pool, helpers.customers())
    # With the file's other problems, all at once.
    csv = helpers.CUSTOMERS_CSV.rstrip("\n") + "\nbad id,X,US,assistant,x@x.example,UTC\n"
    with pytest.raises(InputError) as refused:
        parse_customers_csv(csv, "customers.csv", await repository.erased_customers(pool))
    assert "2 problems" in str(refused.value)
    assert "customer initech was erased for good and cannot be imported again" in str(refused.value)
    assert "customer_id" in str(refused.value)  # the bad id's own problem


async def test_every_action_for_an_erased_customer_is_a_rejection_without_free_text(notified, pool):
    spec = notified
    await repository.erase_customer(pool, "initech")
    receipts = []
    for action, payload, channel in [
        ("object", {"customer_id": "initech", "reason": SECRET_REASON, "by": "Jane Roe"}, "cli"),
        ("opt_in", {"customer_id": "initech", "by": "Jane Roe"}, "temporal"),
        ("resend", {"customer_id": "initech", "by": "Jane Roe"}, "web"),
    ]:
        receipts.append(await intake.record(pool, spec.notice_id, action, payload, channel=channel))
    for receipt in receipts:
        assert receipt.status == intake.REJECTED
        assert str(receipt.reason).startswith("customer erased:"), receipt
    rows = await pool.fetch(
        "SELECT payload FROM intake WHERE receipt_id = ANY($1::text[])",
        [r.receipt_id for r in receipts],
    )
    for row in rows:
        payload = json.loads(row["payload"])
        assert payload["customer_id"] == "initech"
        assert set(payload.values()) <= {"initech", intake.NOT_KEPT}
    rejections = await pool.fetch(
        "SELECT data FROM events WHERE event_type = 'action_rejected'"
        " AND data::text LIKE '%customer erased%'"
    )
    assert len(rejections) == 3
    stored = await everything_stored(pool)
    for trace in TRACES:
        assert trace not in stored
    # Ops can still close its case (its words are not kept either): nothing wedges on it.
    closed = await intake.record(
        pool,
        spec.notice_id,
        "resolve_objection",
        {"customer_id": "initech", "outcome": "excluded", "by": "carol", "note": SECRET_REASON},
        channel="cli",
    )
    assert closed.status == intake.PENDING
    await helpers.take_intake(_deps(pool), spec)
    judged = await intake.get(pool, closed.receipt_id)
    assert judged is not None and judged.status == intake.ACCEPTED, judged
    case = await pool.fetchrow("SELECT * FROM objections WHERE customer_id = 'initech'")
    assert case["status"] == "excluded" and case["resolved_by"] == ERASED
    assert SECRET_REASON not in await everything_stored(pool)


async def test_a_receipt_without_a_customer_key_keeps_no_free_text(notified, pool):
    spec = notified
    unknown = await intake.record(
        pool,
        spec.notice_id,
        "object",
        {"customer_id": "soylent", "reason": SECRET_REASON, "by": "Jane Roe"},
        channel="temporal",
    )
    payload = await pool.fetchval(
        "SELECT payload FROM intake WHERE receipt_id = $1", unknown.receipt_id
    )
    assert json.loads(payload) == {
        "customer_id": "soylent",
        "reason": intake.NOT_KEPT,
        "by": intake.NOT_KEPT,
    }
    await helpers.take_intake(_deps(pool), spec)
    judged = await intake.get(pool, unknown.receipt_id)
    assert judged is not None and judged.status == intake.REJECTED
    assert "unknown customer 'soylent'" in str(judged.reason)
    assert SECRET_REASON not in await everything_stored(pool)


async def test_an_erasure_from_before_is_completed(notified, pool):
    """A customer shredded by the old erase (key deleted only) is erased for good now."""
    await pool.execute("DELETE FROM customer_keys WHERE customer_id = 'initech'")
    result = await repository.erase_customer(pool, "initech")
    assert result["already"] is False and result["customers"] == 1
    for row in await initech_records(pool):
        assert not any(is_sealed(v) for v in row.values())


async def test_the_cli_erases_once_and_says_already_erased_after(notified, database_url):
    env = {**os.environ, "NOTICEFLOW_DATABASE_URL": database_url}
    env["NOTICEFLOW_SECRET_KEY"] = TEST_LINK_KEY

    async def cli(*args: str) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "noticeflow.cli", *args, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await process.communicate()
        return process.returncode or 0, out.decode(), err.decode()

    code, out, err = await cli("customers", "erase", "initech")
    assert code == 0 and out.startswith("erased customer initech for good"), err
    code, out, err = await cli("customers", "erase", "initech")
    assert code == 0 and out.startswith("customer initech already erased"), err
    code, out, err = await cli("notice", "preview", notified.notice_id, "--customer", "initech")
    assert code != 0 and "Traceback" not in err, err
    assert "customer 'initech' was erased on " in err and "never mailed again" in err, err
    code, out, err = await cli("keys", "rewrap", "--json")
    assert code == 0 and json.loads(out)["current"] >= 2, err


def _deps(pool):
    from worker.main import make_deps

    return make_deps(pool, "smtp://127.0.0.1:9", "privacy@vendor.example")


async def test_a_preview_for_an_erased_customer_says_it_was_erased_even_of_a_draft(notified, pool):
    """Its customers row is gone, so a notice it never received (a draft, the usual one to
    preview) has no row for it either: erased is still what is said, not "no customer"."""
    from datetime import UTC, datetime

    from noticeflow.preview import preview_notice

    await repository.erase_customer(pool, "initech")
    now = datetime.now(UTC)
    draft = helpers.notice(now, notice_id="erasure-draft")
    await repository.create_notice(pool, draft, "alice", now)
    for notice_id in (notified.notice_id, draft.notice_id):
        with pytest.raises(InputError, match=r"customer 'initech' was erased on .*never mailed"):
            await preview_notice(pool, notice_id, "initech", None, None)  # type: ignore[arg-type]
