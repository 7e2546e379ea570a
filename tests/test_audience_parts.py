"""A large audience is frozen in parts (issue 13: bounded worker memory at a million customers).

``snapshot_audience`` reads the audience through a cursor and appends one
``audience_snapshotted`` event per ``audience_part_size`` customers, all in one transaction; each
part names its number, the count of parts, the whole audience's size and the last id of the part
before. The records, the read models, both verifiers and the evidence check read the parts as one
audience. On real parts: PostgreSQL, and Temporal's time-skipping server for a whole notice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from noticeflow import eventstore, projections, records, repository
from noticeflow.application.sending import SendingService
from noticeflow.contracts import AudienceRequest, SendRequest
from noticeflow.domain import events
from noticeflow.domain.customers import parse_customers_csv
from noticeflow.domain.events import frozen_terms_row
from noticeflow.domain.rules import Phase
from noticeflow.domain.verdicts import EventRecord, derive
from tests import helpers
from tests.test_change_kinds import assert_verified_and_rebuilt
from tests.workflows.test_notice_lifecycle import wait_for
from worker.main import build_worker, make_deps

ROOT = Path(__file__).resolve().parents[1]


def audience_csv(count: int) -> str:
    rows = ["customer_id,name,region,services,contact_emails,timezone,authorisation"]
    rows += [
        f"p{i:03d},Customer {i},US,assistant,dpo@p{i:03d}.example,Europe/Dublin,"
        + ("specific" if i % 5 == 0 else "")
        for i in range(count)
    ]
    return "\n".join(rows) + "\n"


async def snapshot_events(pool: Any, notice_id: str) -> list[Any]:
    return [
        e
        for e in await eventstore.read_stream(pool, eventstore.notice_stream(notice_id))
        if e.event_type == "audience_snapshotted"
    ]


async def test_an_audience_larger_than_a_part_is_frozen_in_parts(pool, smtp_sink):
    """11 customers, parts of 4: three events (4, 4, 3) chained by ``after``, each with the whole
    audience's size and its own rows' hash; 11 recipients' rows; a second try appends nothing."""
    now = datetime.now(UTC)
    notice_id = f"parts-{uuid.uuid4().hex[:6]}"
    spec = helpers.notice(now, notice_id=notice_id, opt_in=False, audience={})
    await repository.upsert_customers(pool, parse_customers_csv(audience_csv(11)))
    await repository.create_notice(pool, spec, "alice", now)
    deps = make_deps(pool, smtp_sink.url, "privacy@vendor.example")
    service = SendingService(dataclasses.replace(deps, audience_part_size=4))

    assert await service.snapshot_audience(AudienceRequest(spec=spec, at=now)) == 11
    parts = await snapshot_events(pool, notice_id)
    assert [(e.data["part"], e.data["parts"], e.data["customers"]) for e in parts] == [
        (1, 3, 11),
        (2, 3, 11),
        (3, 3, 11),
    ]
    ids = [e.data["customer_ids"] for e in parts]
    assert ids == [[f"p{i:03d}" for i in range(s, min(s + 4, 11))] for s in (0, 4, 8)]
    assert [e.data.get("after") for e in parts] == [None, "p003", "p007"]
    # Each part's hash is its own rows' (as `frozen_terms_row` gives them, in id order).
    rows = await pool.fetch(
        "SELECT customer_id, region, services, timezone, window_days, window_unit, country,"
        " authorisation FROM recipients WHERE notice_id = $1 ORDER BY customer_id",
        notice_id,
    )
    assert [r["customer_id"] for r in rows] == [i for part in ids for i in part]
    for e, chunk in zip(parts, (rows[0:4], rows[4:8], rows[8:]), strict=True):
        frozen = [frozen_terms_row(dict(r)) for r in chunk]
        digest = hashlib.sha256(json.dumps(frozen, default=str, sort_keys=True).encode())
        assert e.data["snapshot_sha256"] == digest.hexdigest()
    assert {r["customer_id"]: r["authorisation"] for r in rows}["p005"] == "specific"

    # A row written behind the records' back is dropped by the last part's projection (a
    # rebuild replays it); every frozen row stays, contacts too.
    await pool.execute(
        "INSERT INTO recipients (notice_id, customer_id, name, region, services, timezone,"
        " snapshot_at) VALUES ($1, 'p005x', 'x', 'US', '{}', 'UTC', now())",
        notice_id,
    )
    contacts = await pool.fetchval(
        "SELECT count(*) FROM recipient_contacts WHERE notice_id = $1", notice_id
    )
    await records.rebuild(pool)
    assert [r["customer_id"] for r in await pool.fetch(
        "SELECT customer_id FROM recipients WHERE notice_id = $1 ORDER BY customer_id", notice_id
    )] == [i for part in ids for i in part]  # fmt: skip
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM recipient_contacts WHERE notice_id = $1", notice_id
        )
        == contacts
        == 11
    )

    # Again (a retried activity): the same count, no new event.
    assert await service.snapshot_audience(AudienceRequest(spec=spec, at=now)) == 11
    assert len(await snapshot_events(pool, notice_id)) == 3
    await projections.catch_up(pool)
    assert (
        await pool.fetchval("SELECT customers FROM rm_notices WHERE notice_id = $1", notice_id)
        == 11
    )
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM rm_notice_customers WHERE notice_id = $1", notice_id
        )
        == 11
    )


async def test_an_audience_of_one_part_is_one_event_as_before(pool, smtp_sink):
    now = datetime.now(UTC)
    notice_id = f"whole-{uuid.uuid4().hex[:6]}"
    spec = helpers.notice(now, notice_id=notice_id, opt_in=False, audience={})
    await repository.upsert_customers(pool, parse_customers_csv(audience_csv(4)))
    await repository.create_notice(pool, spec, "alice", now)
    deps = make_deps(pool, smtp_sink.url, "privacy@vendor.example")
    service = SendingService(dataclasses.replace(deps, audience_part_size=4))
    assert await service.snapshot_audience(AudienceRequest(spec=spec, at=now)) == 4
    (event,) = await snapshot_events(pool, notice_id)
    assert not {"part", "parts", "after"} & set(event.data)  # stored exactly as before parts
    assert event.data["customers"] == 4


async def test_a_notice_frozen_in_parts_runs_to_its_end_and_verifies(
    time_skipping_env, pool, smtp_sink, tmp_path
):
    """A whole notice over an audience frozen in parts of 3 (the four test customers: two
    parts): delivered, switched on, settled; `evidence verify --notice` clean, the pack verified
    by noticeflow and by the independent script, a records rebuild equal to the live records."""
    env = time_skipping_env
    task_queue = f"tq-{uuid.uuid4().hex[:8]}"
    deps = dataclasses.replace(
        make_deps(pool, smtp_sink.url, "privacy@vendor.example"), audience_part_size=3
    )
    await repository.upsert_customers(pool, helpers.customers())
    async with build_worker(env.client, deps, task_queue):
        now = await env.get_current_time()
        spec = helpers.notice(
            now, notice_id=f"parted-{uuid.uuid4().hex[:6]}", opt_in=False,
            effective_at=(now + timedelta(days=35)).isoformat(),
        )  # fmt: skip
        await repository.create_notice(pool, spec, "alice", now)
        handle = await helpers.start_notice_workflow(env.client, spec, task_queue)
        await handle.signal("approve", {"by": "bob"})
        await wait_for(handle, lambda s: s.phase is Phase.window_open)
        await env.sleep(timedelta(days=36))
        await wait_for(handle, lambda s: s.phase is Phase.active and s.activated == 3)
        await handle.signal(  # umbrella's contact bounces: never delivered, settled by ops
            "exclude", {"customer_id": "umbrella", "reason": "never delivered", "by": "carol"}
        )
        assert (await handle.result()).unsettled == 0
    parts = await snapshot_events(pool, spec.notice_id)
    assert [e.data.get("part") for e in parts] == [1, 2]
    await assert_verified_and_rebuilt(pool, tmp_path, spec.notice_id)


# --- both verifiers see parts missing, repeated or out of order (pure) ------------------------

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def parted(*parts: tuple[int, list[str], str | None], customers: int = 5) -> list[EventRecord]:
    created = EventRecord(
        "notice_created", 1, {"spec": {"notice_id": "n", "opt_in": False,
                                       "effective_at": (T0 + timedelta(days=30)).isoformat(),
                                       "subprocessor": "S"}}, T0, 1,
    )  # fmt: skip
    return [created] + [
        EventRecord(
            "audience_snapshotted",
            1,
            {
                "customer_ids": ids,
                "customers": customers,
                "part": part,
                "parts": 2,
                "after": after,
                "snapshot_sha256": "x",
            },
            T0,
            number + 2,
        )
        for number, (part, ids, after) in enumerate(parts)
    ]


def independent() -> Any:
    spec = importlib.util.spec_from_file_location("verify_pack", ROOT / "docs" / "verify_pack.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def script_problems(records: list[EventRecord]) -> list[str]:
    events = [
        {"event_type": e.event_type, "data": e.data, "occurred_at": e.occurred_at.isoformat(),
         "version": e.version}
        for e in records
    ]  # fmt: skip
    return list(independent().derive(events, None)[1])


WHOLE = [(1, ["a", "b", "c"], None), (2, ["d", "e"], "c")]
BROKEN = {
    "a part missing": [WHOLE[0]],
    "a part repeated": [WHOLE[0], WHOLE[0], WHOLE[1]],
    "out of order": [WHOLE[1], WHOLE[0]],
    "a gap in the chain": [WHOLE[0], (2, ["d", "e"], "b")],
    "overlapping parts": [WHOLE[0], (2, ["c", "d", "e"], "c")],
}


def test_complete_parts_derive_clean_in_both_verifiers():
    assert [p for p in derive(parted(*WHOLE)).problems if p.field == "audience"] == []
    assert [p for p in script_problems(parted(*WHOLE)) if "audience" in p] == []
    assert len(derive(parted(*WHOLE)).customers) == 5
    # In the database's collation's order, which need not be Python's (glibc's en_US puts "a_1"
    # before "a1", and "acme1" before "acme-2"): the verifiers check no order.
    other = [(1, ["a_1", "a1", "acme1"], None), (2, ["acme-2", "b"], "acme1")]
    assert [p for p in derive(parted(*other)).problems if p.field == "audience"] == []
    assert [p for p in script_problems(parted(*other)) if "audience" in p] == []


def test_parts_missing_repeated_or_out_of_order_are_problems_in_both_verifiers():
    for name, parts in BROKEN.items():
        ours = [p for p in derive(parted(*parts)).problems if p.field == "audience"]
        theirs = [p for p in script_problems(parted(*parts)) if "audience" in p]
        assert ours, name
        assert theirs, name


async def test_the_read_models_apply_a_run_of_deliveries_as_one_event_at_a_time(pool, smtp_sink):
    """The projector applies consecutive delivery events of a notice in one statement; a rebuild
    in pages of one event (each delivery on its own) gives the same read models as one in pages
    of 2,000 (runs of deliveries), and the notice's counts equal its customers' rows."""
    now = datetime.now(UTC)
    notice_id = f"runs-{uuid.uuid4().hex[:6]}"
    spec = helpers.notice(now, notice_id=notice_id, opt_in=False, audience={})
    csv = audience_csv(30).replace("dpo@p007.example", "x@p007.invalid")  # one bounces
    await repository.upsert_customers(pool, parse_customers_csv(csv))
    await repository.create_notice(pool, spec, "alice", now)
    service = SendingService(make_deps(pool, smtp_sink.url, "privacy@vendor.example"))
    await service.snapshot_audience(AudienceRequest(spec=spec, at=now))
    await service.send_notices(SendRequest(spec=spec, at=now), "", progress=lambda *_: None)
    # Resends to two customers already delivered, one run of deliveries (one statement): the
    # rows are delivered already, so nothing is counted again.
    stream = eventstore.notice_stream(notice_id)
    delivered = {
        e.data["customer_id"]: e
        for e in await eventstore.read_stream(pool, stream)
        if e.event_type == "notice_delivered"
    }
    async with pool.acquire() as c, c.transaction():
        for customer in ("p003", "p004"):
            resend = {**delivered[customer].data, "kind": "resend-1", "clock_started": False}
            await records.record_one(
                c, stream, f"resend-{customer}", events.NoticeDelivered.model_validate(resend), now
            )

    async def models() -> dict[str, list[dict[str, Any]]]:
        return {
            t: [dict(r) for r in await pool.fetch(f"SELECT * FROM {t} ORDER BY 1, 2")]
            for t in projections.TABLES
        }

    await projections.rebuild(pool, page=1)
    one_by_one = await models()
    await projections.rebuild(pool, page=2000)
    assert await models() == one_by_one
    row = await pool.fetchrow("SELECT * FROM rm_notices WHERE notice_id = $1", notice_id)
    assert (row["delivered"], row["undelivered"]) == (29, 1)
    assert row["max_deadline"] is not None


async def test_pages_of_events_are_bounded_in_bytes(pool, smtp_sink, monkeypatch):
    """The projector and a records rebuild read pages bounded in JSON size as well as in count
    (an audience in parts is ~1.4 MB an event at a million customers): with a bound smaller than
    one part, each page holds one part, and the read models and records still come out whole."""
    now = datetime.now(UTC)
    notice_id = f"bytes-{uuid.uuid4().hex[:6]}"
    spec = helpers.notice(now, notice_id=notice_id, opt_in=False, audience={})
    await repository.upsert_customers(pool, parse_customers_csv(audience_csv(12)))
    await repository.create_notice(pool, spec, "alice", now)
    deps = make_deps(pool, smtp_sink.url, "privacy@vendor.example")
    service = SendingService(dataclasses.replace(deps, audience_part_size=4))
    await service.snapshot_audience(AudienceRequest(spec=spec, at=now))
    part_bytes = min(len(json.dumps(e.data)) for e in await snapshot_events(pool, notice_id))

    page, more = await eventstore.read_page(pool, eventstore.Checkpoint(), 2000, part_bytes // 2)
    assert len(page) == 1 and more  # the first event always, then nothing past the bound
    monkeypatch.setattr(projections, "PAGE_BYTES", part_bytes // 2)
    monkeypatch.setattr(records, "PAGE_BYTES", part_bytes // 2)
    await projections.rebuild(pool)
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM rm_notice_customers WHERE notice_id = $1", notice_id
        )
        == 12
    )
    await records.rebuild(pool)
    assert (
        await pool.fetchval("SELECT count(*) FROM recipients WHERE notice_id = $1", notice_id) == 12
    )
