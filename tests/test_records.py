"""The records projection (noticeflow/records.py), one event type at a time, on real PostgreSQL.

Each test records events the way the activities do (append and project in one transaction) and
checks the record columns they decide; every test ends with a rebuild from zero that must give
the same records, so the live path and the replay can never drift apart.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from noticeflow import eventstore as es
from noticeflow import records
from noticeflow.crypto import ERASED, Field, ensure_keys
from noticeflow.domain import events as ev
from noticeflow.domain.errors import InputError
from tests import helpers

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
NOTICE = "rec-test"
STREAM = f"notice-{NOTICE}"
CUSTOMERS = ("acme", "globex")


@pytest.fixture
async def notice(pool: asyncpg.Pool) -> asyncpg.Pool:
    spec = {"effective_at": (T0 + timedelta(days=40)).isoformat()}
    await pool.execute(
        "INSERT INTO notices (notice_id, spec, notice_text, text_sha256, author, subprocessor,"
        " effective_at) VALUES ($1, $2::jsonb, '', '', 'alice', 'OpenAI', $3)",
        NOTICE,
        helpers.json.dumps(spec),
        T0 + timedelta(days=40),
    )
    await pool.executemany(
        "INSERT INTO recipients (notice_id, customer_id, name, region, services, timezone,"
        " snapshot_at) VALUES ($1, $2, '', 'eu', '{}', 'UTC', $3)",
        [(NOTICE, customer, T0) for customer in CUSTOMERS],
    )
    await ensure_keys(pool, CUSTOMERS)
    return pool


async def record(pool: asyncpg.Pool, key: str, event: ev.Event, at: datetime) -> None:
    async with pool.acquire() as connection, connection.transaction():
        await records.record_one(connection, STREAM, key, event, at)


def delivered(customer: str, at: datetime | None, deadline: datetime | None) -> ev.Event:
    model = ev.NoticeDelivered if at else ev.NoticeUndelivered
    return model(customer_id=customer, kind="notice", delivered_at=at, deadline=deadline,
                 clock_started=at is not None, text_sha256=None, contacts=[])  # fmt: skip


def switched(on: bool, customer: str, because: str) -> ev.Event:
    model = ev.SubprocessorEnabled if on else ev.SubprocessorDisabled
    return model(customer_id=customer, subprocessor="OpenAI", because=because)


def opt_in(recorded: bool, customer: str = "acme") -> ev.Event:
    model = ev.OptInRecorded if recorded else ev.OptInRevoked
    return model(customer_id=customer, by="", channel="cli")


async def objection(pool: asyncpg.Pool, customer: str = "acme") -> ev.Event:
    kind = "objection_received"
    return ev.ObjectionReceived(
        customer_id=customer, idempotency_key="r1", receipt_id="r1", timely=True, channel="link",
        received_at=T0, deadline=None,
        by=await sealed(pool, customer, Field.event(kind, "by"), "Dana"),
        reason=await sealed(pool, customer, Field.event(kind, "reason"), "No"),
    )  # fmt: skip


async def recipient(pool: asyncpg.Pool, customer: str = "acme") -> dict[str, Any]:
    row = await pool.fetchrow(
        "SELECT * FROM recipients WHERE notice_id = $1 AND customer_id = $2", NOTICE, customer
    )
    return dict(row)


async def rebuilt_equals_live(pool: asyncpg.Pool) -> None:
    live = await helpers.records_of(pool)
    await records.rebuild(pool)
    assert helpers.records_diff(await helpers.records_of(pool), live) == []


async def sealed(pool: asyncpg.Pool, customer: str, field: str, text: str) -> str:
    return (await ensure_keys(pool, [customer]))[customer].seal(field, text)


async def test_phase_and_approval(notice: asyncpg.Pool) -> None:
    await record(notice, "approved", ev.NoticeApproved(by="bob", audience_size=2), T0)
    effective = T0 + timedelta(days=45)
    closes = T0 + timedelta(days=30)
    await record(notice, "phase/1", ev.PhaseChanged(
        phase="window_open", effective_at=effective, window_closes_at=closes,
    ), T0)  # fmt: skip
    row = await notice.fetchrow("SELECT * FROM notices WHERE notice_id = $1", NOTICE)
    assert (row["phase"], row["effective_at"], row["window_closes_at"], row["approved_by"]) == (
        "window_open",
        effective,
        closes,
        "bob",
    )
    await rebuilt_equals_live(notice)


async def test_delivery_sets_the_clock_once(notice: asyncpg.Pool) -> None:
    deadline = T0 + timedelta(days=30)
    await record(notice, "notice/acme", delivered("acme", T0, deadline), T0)
    await record(notice, "notice/globex", delivered("globex", None, None), T0)
    # A later delivery event (a resend) does not move a delivered customer's clock.
    later = T0 + timedelta(days=2)
    await record(notice, "resend/acme", delivered("acme", later, deadline + timedelta(2)), later)
    acme, globex = await recipient(notice), await recipient(notice, "globex")
    assert (acme["delivery"], acme["delivered_at"], acme["deadline"]) == ("delivered", T0, deadline)
    assert (globex["delivery"], globex["deadline"]) == ("undelivered", None)
    await rebuilt_equals_live(notice)


async def test_a_batch_of_deliveries_is_one_projection(notice: asyncpg.Pool) -> None:
    batch = [
        es.NewEvent.of(STREAM, f"notice/{c}", delivered(c, T0, T0 + timedelta(days=9)), T0)
        for c in CUSTOMERS
    ]
    async with notice.acquire() as connection, connection.transaction():
        await records.record(connection, STREAM, batch)
    assert {(await recipient(notice, c))["delivery"] for c in CUSTOMERS} == {"delivered"}
    await rebuilt_equals_live(notice)


async def test_objection_opens_a_case_sealed_for_its_record(notice: asyncpg.Pool) -> None:
    await record(notice, "objection/r1", await objection(notice), T0)
    case = await notice.fetchrow("SELECT * FROM objections WHERE notice_id = $1", NOTICE)
    key = (await ensure_keys(notice, ["acme"]))["acme"]
    assert (case["status"], case["timely"], case["receipt_id"]) == ("open", True, "r1")
    assert key.unseal(Field.OBJECTION_REASON, case["reason"]) == "No"
    assert key.unseal(Field.OBJECTION_BY, case["objected_by"]) == "Dana"
    assert case["content_ref"] == records.objection_ref(key, "no")
    await rebuilt_equals_live(notice)

    resolved = "objection_resolved"
    await record(notice, "resolution/r2", ev.ObjectionResolved(
        customer_id="acme", receipt_id="r2", outcome="withdrawn", objections=["r1"],
        by=await sealed(notice, "acme", Field.event(resolved, "by"), "Ops"), note="",
    ), T0 + timedelta(days=1))  # fmt: skip
    case = await notice.fetchrow("SELECT * FROM objections WHERE notice_id = $1", NOTICE)
    assert (case["status"], case["resolved_at"]) == ("withdrawn", T0 + timedelta(days=1))
    assert key.unseal(Field.RESOLVED_BY, case["resolved_by"]) == "Ops"
    await rebuilt_equals_live(notice)


async def test_opt_in_revoked_switches_off_with_the_enablement(notice: asyncpg.Pool) -> None:
    await record(notice, "opt-in/1", opt_in(True), T0)
    assert (await recipient(notice))["opted_in"] is True
    at = T0 + timedelta(days=40)
    await record(notice, "enable", switched(True, "acme", "opted_in"), at)
    await record(notice, "settled", ev.CustomerSettled(customer_id="acme", verdict="activate"), at)
    row = await recipient(notice)
    assert (row["activated"], row["activated_at"], row["verdict"], row["settled"]) == (
        True, at, "activate", True
    )  # fmt: skip
    on = await notice.fetchrow("SELECT * FROM subprocessor_enablements")
    assert (on["customer_id"], on["enabled"], on["since"]) == ("acme", True, at)
    later = at + timedelta(days=3)
    await record(notice, "opt-in/2", opt_in(False), later)
    await record(notice, "disable", switched(False, "acme", "opt_in_revoked"), later)
    row = await recipient(notice)
    assert (row["opted_in"], row["activated"], row["settled"], row["verdict"]) == (
        False, False, False, None
    )  # fmt: skip
    off = await notice.fetchrow("SELECT * FROM subprocessor_enablements")
    assert (off["enabled"], off["since"]) == (False, later)
    await rebuilt_equals_live(notice)


async def test_deemed_acceptance_and_exclusion(notice: asyncpg.Pool) -> None:
    deadline = T0 + timedelta(days=30)
    deemed = ev.DeemedAcceptance(customer_id="acme", deadline=deadline)
    await record(notice, "deemed/acme", deemed, deadline)
    await record(notice, "enable", switched(True, "acme", "deemed_acceptance"), deadline)
    assert (await recipient(notice))["deemed_accepted_at"] == deadline
    kind = "customer_excluded"
    await record(notice, "exclusion/x", ev.CustomerExcluded(
        customer_id="globex", receipt_id="x", delivery="delivered",
        by=await sealed(notice, "globex", Field.event(kind, "by"), "Ops"),
        reason=await sealed(notice, "globex", Field.event(kind, "reason"), "gone"),
    ), T0)  # fmt: skip
    globex = await recipient(notice, "globex")
    key = (await ensure_keys(notice, ["globex"]))["globex"]
    assert globex["excluded_at"] == T0
    assert key.unseal(Field.EXCLUDED_REASON, globex["excluded_reason"]) == "gone"
    await rebuilt_equals_live(notice)


async def test_cancellation_settles_those_not_switched_on(notice: asyncpg.Pool) -> None:
    await record(notice, "enable", switched(True, "acme", "opted_in"), T0)
    await record(notice, "cancel", ev.NoticeCancelled(phase="active"), T0)
    acme, globex = await recipient(notice), await recipient(notice, "globex")
    assert (acme["verdict"], acme["settled"]) == ("activate", False)
    assert (globex["verdict"], globex["settled"]) == ("cancelled", True)
    await rebuilt_equals_live(notice)


async def test_an_erased_customers_sealed_fields_rebuild_as_erased(notice: asyncpg.Pool) -> None:
    await record(notice, "objection/r1", await objection(notice), T0)
    await notice.execute("DELETE FROM customer_keys WHERE customer_id = 'acme'")
    await records.rebuild(notice)
    case = await notice.fetchrow("SELECT * FROM objections WHERE notice_id = $1", NOTICE)
    assert (case["objected_by"], case["reason"], case["content_ref"]) == (ERASED, ERASED, None)
    assert (case["status"], case["timely"]) == ("open", True)  # the outcome stays


async def test_a_retried_step_is_not_projected_twice(notice: asyncpg.Pool) -> None:
    await record(notice, "opt-in/1", opt_in(True), T0)
    await record(notice, "opt-in/2", opt_in(False), T0)
    # The first step again (an activity retried after its commit): the store hands back the
    # original, which this transaction did not append, so nothing is projected again.
    await record(notice, "opt-in/1", opt_in(True), T0)
    assert (await recipient(notice))["opted_in"] is False
    await rebuilt_equals_live(notice)


async def test_an_altered_record_is_repaired_and_a_forged_event_refused(
    notice: asyncpg.Pool, owner_database_url: str
) -> None:
    await record(notice, "opt-in/1", opt_in(True), T0)
    live = await helpers.records_of(notice)
    await notice.execute("UPDATE recipients SET opted_in = NOT opted_in, settled = true")
    await records.rebuild(notice)
    assert helpers.records_diff(await helpers.records_of(notice), live) == []

    # An event written behind the product's back cannot sign the stream head: no record is
    # built from it, and nothing is changed.
    owner = await asyncpg.connect(owner_database_url)
    try:
        await owner.execute(
            "INSERT INTO events (stream_id, stream_version, event_id, event_type, data,"
            " occurred_at, prev_hash, hash) SELECT stream_id, stream_version + 1,"
            " gen_random_uuid(), 'opt_in_revoked', '{\"customer_id\": \"acme\"}', now(), hash,"
            " hash FROM events WHERE stream_id = $1 ORDER BY stream_version DESC LIMIT 1",
            STREAM,
        )
    finally:
        await owner.close()
    with pytest.raises(InputError, match=f"do not verify.*{STREAM}"):
        await records.rebuild(notice)
    assert helpers.records_diff(await helpers.records_of(notice), live) == []


async def test_the_audience_is_built_from_its_snapshot(notice: asyncpg.Pool) -> None:
    terms = {
        "acme": ev.CustomerTerms(region="eu", services=["crm", "mail"], window_days=30,
                                 window_unit="business", country="DE"),
        "globex": ev.CustomerTerms(region="us", services=[], window_days=None, window_unit=None,
                                   country=None),
    }  # fmt: skip
    snapshot = ev.AudienceSnapshotted(
        customers=2, snapshot_sha256="0" * 64, customer_ids=list(CUSTOMERS),
        timezones={"acme": "Europe/Berlin", "globex": "America/New_York"}, terms=terms,
    )  # fmt: skip
    await record(notice, "audience-snapshot", snapshot, T0)
    acme = await recipient(notice)
    assert (acme["region"], acme["services"], acme["timezone"], acme["window_days"]) == (
        "eu", ["crm", "mail"], "Europe/Berlin", 30
    )  # fmt: skip
    assert (acme["window_unit"], acme["country"], acme["snapshot_at"]) == ("business", "DE", T0)
    live = await helpers.records_of(notice)

    # Terms altered, a customer slipped in, one deleted: the rebuild puts the audience back (the
    # deleted row's name is the customer's as it stands, here none: erased).
    await notice.execute("UPDATE recipients SET window_days = 99 WHERE customer_id = 'acme'")
    await notice.execute(
        "INSERT INTO recipients (notice_id, customer_id, name, region, services, timezone,"
        " snapshot_at) VALUES ($1, 'initech', '', 'eu', '{}', 'UTC', $2)",
        NOTICE,
        T0,
    )
    await notice.execute("DELETE FROM recipients WHERE customer_id = 'globex'")
    await records.rebuild(notice)
    rebuilt = await helpers.records_of(notice)
    assert [r["customer_id"] for r in rebuilt["recipients"]] == list(CUSTOMERS)
    assert (await recipient(notice, "globex"))["name"] == ERASED
    for row in rebuilt["recipients"]:
        row.pop("name")
    for row in live["recipients"]:
        row.pop("name")
    assert helpers.records_diff(rebuilt, live) == []


async def test_a_forged_event_under_an_unsigned_head_is_refused(
    notice: asyncpg.Pool, owner_database_url: str
) -> None:
    """A forger with the database but not the signing key: a correct hash, the head moved onto
    it, and the signature it cannot make removed. The rebuild refuses: an unsigned head is not
    vouched for (a person signs old streams' heads once, `evidence sign-heads`)."""
    await record(notice, "opt-in/1", opt_in(True), T0)
    live = await helpers.records_of(notice)
    head = await es.stream_head(notice, STREAM)
    assert head is not None
    forged = es.NewEvent.of(STREAM, "forged", opt_in(False), T0)
    text = es.canonical(forged.data)
    digest = es.event_hash(
        head.head_hash, stream_id=STREAM, version=head.version + 1, event_id=forged.event_id,
        event_type=forged.event_type, schema_version=forged.schema_version, data_text=text,
        occurred_at=T0,
    )  # fmt: skip
    owner = await asyncpg.connect(owner_database_url)
    try:
        await owner.execute(
            "INSERT INTO events (stream_id, stream_version, event_id, event_type, data,"
            " occurred_at, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            STREAM, head.version + 1, forged.event_id, forged.event_type, text.decode(), T0,
            head.head_hash, digest,
        )  # fmt: skip
        await owner.execute(
            "UPDATE event_streams SET version = $2, head_hash = $3, head_signature = NULL,"
            " head_key_id = NULL WHERE stream_id = $1",
            STREAM,
            head.version + 1,
            digest,
        )
    finally:
        await owner.close()
    assert await es.verify_stream(notice, STREAM) is None  # the chain alone cannot tell
    with pytest.raises(InputError, match=f"{STREAM}: its head is not signed"):
        await records.rebuild(notice)
    assert helpers.records_diff(await helpers.records_of(notice), live) == []


async def test_a_switch_on_written_before_because_keeps_its_deemed_acceptance(
    notice: asyncpg.Pool,
) -> None:
    deadline = T0 + timedelta(days=30)
    deemed = ev.DeemedAcceptance(customer_id="acme", deadline=deadline)
    await record(notice, "deemed/acme", deemed, deadline)
    legacy = ev.SubprocessorEnabled(customer_id="acme", subprocessor="OpenAI")  # no because
    await record(notice, "enable", legacy, deadline)
    assert (await recipient(notice))["deemed_accepted_at"] == deadline
    await rebuilt_equals_live(notice)


async def test_the_latest_switch_wins_whatever_order_two_notices_apply_in(
    notice: asyncpg.Pool,
) -> None:
    """Two notices switch the same customer's sub-processor: the enablement follows the latest
    switch, whichever transaction was applied first (live: commit order; rebuild: tx order)."""
    await notice.execute(
        "INSERT INTO notices (notice_id, spec, notice_text, text_sha256, author, subprocessor,"
        " effective_at) VALUES ('rec-other', '{}', '', '', 'alice', 'OpenAI', $1)",
        T0,
    )
    await notice.execute(
        "INSERT INTO recipients (notice_id, customer_id, name, region, services, timezone,"
        " snapshot_at) VALUES ('rec-other', 'acme', '', 'eu', '{}', 'UTC', $1)",
        T0,
    )
    later = T0 + timedelta(days=2)
    async with notice.acquire() as connection, connection.transaction():
        await records.record_one(
            connection, "notice-rec-other", "disable", switched(False, "acme", "declined"), later
        )
    await record(notice, "enable", switched(True, "acme", "opted_in"), T0)  # earlier, applied later
    row = await notice.fetchrow("SELECT * FROM subprocessor_enablements")
    assert (row["enabled"], row["since"], row["notice_id"]) == (False, later, "rec-other")
    await rebuilt_equals_live(notice)


async def test_an_id_twice_in_one_batch_is_refused_before_anything_is_written(
    notice: asyncpg.Pool,
) -> None:
    event = es.NewEvent.of(STREAM, "opt-in/1", opt_in(True), T0)
    async with notice.acquire() as connection, connection.transaction():
        with pytest.raises(es.EventIdConflict, match="twice in one batch"):
            await records.record(connection, STREAM, [event, event])
        # the transaction is still usable: nothing failed inside the database
        await records.record(connection, STREAM, [event])
    assert (await recipient(notice))["opted_in"] is True


async def test_a_rebuild_waits_for_a_judgement_holding_a_row_and_never_deadlocks(
    notice: asyncpg.Pool,
) -> None:
    async with notice.acquire() as judge:
        transaction = judge.transaction()
        await transaction.start()
        await judge.execute(  # as the intake locks what it judges
            "SELECT 1 FROM recipients WHERE notice_id = $1 AND customer_id = 'acme' FOR UPDATE",
            NOTICE,
        )
        rebuilding = asyncio.create_task(records.rebuild(notice))
        await asyncio.sleep(0.5)
        assert not rebuilding.done()  # it waits for the judgement
        await records.record_one(judge, STREAM, "opt-in/1", opt_in(True), T0)
        await transaction.commit()
        await asyncio.wait_for(rebuilding, 30)
    assert (await recipient(notice))["opted_in"] is True


async def test_events_of_a_stream_without_a_head_are_refused(
    notice: asyncpg.Pool, owner_database_url: str
) -> None:
    """A whole stream written behind the product's back (no head at all) is not a source of
    records either: the rebuild names it and changes nothing."""
    await record(notice, "opt-in/1", opt_in(True), T0)
    live = await helpers.records_of(notice)
    owner = await asyncpg.connect(owner_database_url)
    try:
        await owner.execute(
            "INSERT INTO events (stream_id, stream_version, event_id, event_type, data,"
            " occurred_at, prev_hash, hash) VALUES ('notice-ghost', 1, gen_random_uuid(),"
            " 'subprocessor_enabled', $1, now(), '\\x00', '\\x00')",
            '{"customer_id": "acme", "subprocessor": "Evil Corp", "because": "opted_in"}',
        )
    finally:
        await owner.close()
    with pytest.raises(InputError, match="notice-ghost"):
        await records.rebuild(notice)
    assert helpers.records_diff(await helpers.records_of(notice), live) == []
