"""Crypto-shredding: erasing a customer makes its personal data unreadable everywhere, events
included, while every hash chain still verifies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from activities.records import load_recipients
from noticeflow import repository
from noticeflow.crypto import ERASED
from noticeflow.domain.errors import InputError
from noticeflow.domain.signals import Objection
from noticeflow.evidence import export_pack, verify_database, verify_pack
from tests import helpers

SECRET_REASON = "Jane Roe, our DPO, refuses AI processing"


@pytest.fixture
async def notified(pool, smtp_sink):
    spec = await helpers.notified_with_objection(
        pool, smtp_sink.url, Objection(customer_id="initech", reason=SECRET_REASON, by="Jane Roe")
    )
    return spec


async def everything_stored(pool) -> str:
    tables = [
        "events",
        "customers",
        "customer_contacts",
        "recipients",
        "recipient_contacts",
        "deliveries",
        "objections",
    ]
    dump = []
    for table in tables:
        dump += [
            json.dumps(dict(r), default=str) for r in await pool.fetch(f"SELECT * FROM {table}")
        ]
    return "\n".join(dump)


async def test_personal_data_is_stored_only_sealed(notified, pool):
    stored = await everything_stored(pool)
    for plaintext in (
        "dpo@initech.example",
        "privacy@acme.example",
        "Jane Roe",
        "Initech",
        "Acme Corp",
    ):
        assert plaintext not in stored


async def test_erasure_shreds_the_customer_and_the_chains_still_verify(
    notified, pool, tmp_path: Path
):
    spec = notified
    assert await repository.erase_customer(pool, "initech") == 1
    customers = {c["customer_id"]: c for c in await repository.list_customers(pool)}
    assert customers["initech"]["name"] == ERASED and customers["acme"]["name"] == "Acme Corp"
    assert "initech" not in await load_recipients(pool, spec.notice_id, ["initech", "acme"])

    pack = tmp_path / "pack"
    await export_pack(pool, spec.notice_id, pack)
    audience = {c["customer_id"]: c for c in json.loads((pack / "audience.json").read_text())}
    assert audience["initech"]["name"] == ERASED
    assert {c["email"] for c in audience["initech"]["contacts"]} == {ERASED}
    assert audience["acme"]["contacts"][0]["email"] == "privacy@acme.example"
    deliveries = (pack / "deliveries.csv").read_text()
    assert "dpo@initech.example" not in deliveries and ERASED in deliveries
    assert verify_pack(pack).ok and (await verify_database(pool, spec.notice_id)).ok
    erased = await pool.fetchval(
        "SELECT count(*) FROM events WHERE stream_id = 'customer-initech' AND event_type = 'customer_erased'"
    )
    assert erased == 1

    with pytest.raises(InputError, match="already erased"):
        await repository.erase_customer(pool, "initech")
