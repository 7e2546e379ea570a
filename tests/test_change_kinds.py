"""Change kinds end to end (issue 12 item 2) on the real parts: PostgreSQL, Temporal's
time-skipping server, SMTP. Each test first runs an addition of the sub-processor concerned to
its end (acme, globex and initech switched on; umbrella's mail bounces), then the notice of the
kind under test: a replacement, a removal, a material change. Each ends with `evidence verify
--notice` clean for both notices and a records rebuild equal to the live records."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import WorkflowHandle

from noticeflow import annex, control, intake, projections, records, repository
from noticeflow.config import Settings
from noticeflow.domain.errors import InputError
from noticeflow.domain.notice import NoticeSpec, parse_notice
from noticeflow.domain.rules import Phase
from noticeflow.evidence import export_pack, verify_database, verify_pack
from noticeflow.links import ActionLink, LinkAction, LinkSigner
from noticeflow.sink import free_port
from noticeflow.web.app import serve
from tests import helpers
from tests.public_check import assert_public_list_equals_the_events
from tests.test_verdicts import script
from tests.web.conftest import SECRET
from tests.workflows.test_notice_lifecycle import wait_for
from worker.main import build_worker, make_deps

OLD = "Anthropic, PBC"
NEW = "OpenAI, LLC"
ON_FROM_ADDITION = {"acme", "globex", "initech"}  # umbrella's contact bounces: never switched on


@pytest.fixture(autouse=True)
async def public_list_equals_the_events(pool, tmp_path):
    """Issue 14: after every test here, the public list served (/subprocessors.json, the page and
    the feed) equals the list derived afresh from the events (tests/public_check.py)."""
    yield
    await assert_public_list_equals_the_events(pool, tmp_path / "public-list")


@pytest.fixture
async def running(time_skipping_env, pool, smtp_sink):
    task_queue = f"tq-{uuid.uuid4().hex[:8]}"
    deps = make_deps(pool, smtp_sink.url, "privacy@vendor.example")
    async with build_worker(time_skipping_env.client, deps, task_queue):
        await repository.upsert_customers(pool, helpers.customers())
        yield time_skipping_env, task_queue


def spec_of(now: datetime, notice_id: str, subprocessor: str, **fields: Any) -> NoticeSpec:
    """An ordinary (not opt-in) notice to the US customers, 35 days out (past globex's 30-day
    contract window); ``fields`` as a notice file would give them."""
    data = helpers.notice(now, opt_in=False).model_dump(
        mode="json", exclude={"kind", "replaces", "previous", "reminder_before", "opt_in"}
    )
    data.update(
        notice_id=notice_id,
        subprocessor=subprocessor,
        effective_at=(now + timedelta(days=35)).isoformat(),
        **fields,
    )
    return parse_notice(data)


async def start(env: Any, pool: Any, task_queue: str, spec: NoticeSpec) -> WorkflowHandle:
    now = await env.get_current_time()
    await repository.create_notice(pool, spec, "alice", now)
    handle = await helpers.start_notice_workflow(env.client, spec, task_queue)
    await handle.signal("approve", {"by": "bob"})
    await wait_for(handle, lambda s: s.phase in (Phase.window_open, Phase.awaiting_effective_date))
    return handle


async def addition(env: Any, pool: Any, task_queue: str, subprocessor: str, **fields: Any) -> str:
    """An addition of ``subprocessor`` run to its end: every delivered customer switched on,
    umbrella (never delivered) settled by ops, so no later change is refused as under way."""
    now = await env.get_current_time()
    spec = spec_of(now, f"add-{uuid.uuid4().hex[:6]}", subprocessor, **fields)
    handle = await start(env, pool, task_queue, spec)
    await env.sleep(timedelta(days=36))
    await wait_for(handle, lambda s: s.phase is Phase.active and s.activated == 3)
    await handle.signal(
        "exclude", {"customer_id": "umbrella", "reason": "never delivered", "by": "carol"}
    )
    assert (await handle.result()).unsettled == 0
    return spec.notice_id


async def enabled(pool: Any, subprocessor: str) -> set[str]:
    return {
        row["customer_id"]
        for row in await pool.fetch(
            "SELECT customer_id FROM subprocessor_enablements WHERE subprocessor = $1 AND enabled",
            subprocessor,
        )
    }


async def in_use(pool: Any, customer_id: str, at: datetime) -> dict[str, str | None]:
    """The customer's list on a date (noticeflow/annex.py, from the events): name -> location."""
    listing = await annex.customer_list(pool, customer_id, at)
    return {entry.subprocessor: entry.location for entry in listing.subprocessors}


async def assert_verified_and_rebuilt(pool: Any, tmp_path: Path, *notice_ids: str) -> None:
    """`evidence verify --notice` clean; the exported pack verifies with noticeflow and with the
    independent script (docs/verify_pack.py); a records rebuild equals the live records."""
    for notice_id in notice_ids:
        verification = await verify_database(pool, notice_id)
        assert verification.ok, (notice_id, verification.problems)
    pack = tmp_path / f"pack-{notice_ids[-1]}"
    await export_pack(pool, notice_ids[-1], pack)
    checked = verify_pack(pack)
    assert checked.ok, checked.problems
    independent = script(pack)
    assert independent.returncode == 0, independent.stdout + independent.stderr
    live = await helpers.records_of(pool)
    await records.rebuild(pool)
    assert helpers.records_diff(await helpers.records_of(pool), live) == []


async def action_page(env: Any, pool: Any, tmp_path: Path, notice_id: str, customer: str) -> str:
    """The customer's action page, served by the real web app, through a signed object link."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = Settings(
        data_dir=tmp_path / "data", database_url="postgresql://unused", secret_key=SECRET,
        public_url=url, web_host="127.0.0.1", web_port=port, web_token="t" * 32,
    )  # fmt: skip
    link = LinkSigner(settings.verification_keys, url).url(
        ActionLink(notice_id, customer, LinkAction.object, datetime.now(UTC) + timedelta(days=9))
    )
    stop, started = asyncio.Event(), asyncio.get_running_loop().create_future()
    web = asyncio.create_task(serve(settings, stop, pool=pool, client=env.client, started=started))
    try:
        await asyncio.wait_for(started, 30)
        async with httpx.AsyncClient() as http:
            response = await http.get(link)
        assert response.status_code == 200, response.text
        return response.text
    finally:
        stop.set()
        await web


def mails(smtp_sink: Any, subject: str) -> list[Any]:
    return [m for m in smtp_sink.messages() if m["Subject"].startswith(subject)]


def text_of(message: Any) -> str:
    part = next(p for p in message.walk() if p.get_content_type() == "text/plain")
    return str(part.get_content())


async def test_replacement_switches_the_old_one_off_where_the_new_one_goes_on(
    running, pool, smtp_sink, tmp_path
):
    env, task_queue = running
    old_notice = await addition(env, pool, task_queue, OLD)
    assert await enabled(pool, OLD) == ON_FROM_ADDITION

    now = await env.get_current_time()
    spec = spec_of(now, "openai-replaces", NEW, kind="replacement", replaces=OLD)
    handle = await start(env, pool, task_queue, spec)
    (mail,) = [m for m in mails(smtp_sink, "Notice of a sub-processor replacement") if
               m["To"] == "dpo@initech.example"]  # fmt: skip
    assert f"Change: replacement of {OLD} by {NEW}" in text_of(mail)
    # initech objects in time and ops uphold it: it keeps the old one; acme and globex are silent.
    await handle.signal("object", {"customer_id": "initech", "reason": "Not that one"})
    await wait_for(handle, lambda s: s.open_objections == 1)
    await handle.signal(
        "resolve_objection", {"customer_id": "initech", "outcome": "excluded", "by": "carol"}
    )
    await wait_for(handle, lambda s: s.open_objections == 0 and s.pending_signals == 0)
    before = await env.get_current_time()
    await env.sleep(timedelta(days=36))
    await wait_for(handle, lambda s: s.phase is Phase.active and s.activated == 2)

    assert await enabled(pool, NEW) == {"acme", "globex"}
    assert await enabled(pool, OLD) == {"initech"}
    (told,) = [m for m in mails(smtp_sink, f"{NEW} is now in use") if
               m["To"] == "legal@globex.example"]  # fmt: skip
    assert f"It replaces {OLD}, which no longer processes personal data" in text_of(told)
    after = await env.get_current_time()
    assert await in_use(pool, "acme", before) == {OLD: "United States"}
    assert await in_use(pool, "acme", after) == {NEW: "United States"}
    assert await in_use(pool, "initech", after) == {OLD: "United States"}
    # The new notice's own rows: switched on (the old one's switch-off leaves them as they are).
    rows = {
        r["customer_id"]: r["activated"]
        for r in await pool.fetch(
            "SELECT customer_id, activated FROM recipients WHERE notice_id = $1", spec.notice_id
        )
    }
    assert rows == {"acme": True, "globex": True, "initech": False, "umbrella": False}
    await projections.catch_up(pool)  # the read models agree (`notice show`)
    shown = await repository.notice_summary(pool, spec.notice_id)
    assert (shown["kind"], shown["replaces"]) == ("replacement", OLD)
    assert {c["customer_id"]: c["activated"] for c in shown["customers"]} == rows
    await assert_verified_and_rebuilt(pool, tmp_path, old_notice, spec.notice_id)


async def test_removal_switches_everyone_off_on_its_date_and_takes_no_answer(
    running, pool, smtp_sink, tmp_path
):
    env, task_queue = running
    old_notice = await addition(env, pool, task_queue, OLD)
    # acme's contact now bounces: it never receives the removal, and is switched off all the same.
    bounced = helpers.CUSTOMERS_CSV.replace(
        "privacy@acme.example;dpo@acme.example", "x@acme.invalid"
    )
    await repository.upsert_customers(pool, helpers.customers(bounced))

    now = await env.get_current_time()
    data = spec_of(now, "anthropic-removal", OLD).model_dump(
        mode="json", exclude={"objection_window", "kind", "replaces", "previous", "reminder_before"}
    )
    spec = parse_notice({**data, "kind": "removal", "effective_at": (now + timedelta(days=10))})
    handle = await start(env, pool, task_queue, spec)
    status = await wait_for(handle, lambda s: s.phase is Phase.awaiting_effective_date)
    assert (status.delivered, status.undelivered, status.window_closes_at) == (2, 2, None)
    deadlines = await pool.fetch(
        "SELECT deadline FROM recipients WHERE notice_id = $1", spec.notice_id
    )
    assert {row["deadline"] for row in deadlines} == {None}
    (mail,) = [m for m in mails(smtp_sink, "Notice of a sub-processor removal") if
               m["To"] == "legal@globex.example"]  # fmt: skip
    text = text_of(mail)
    assert "Change: removal — no objection window" in text
    assert "There is no deadline and nothing you need to do" in text
    assert "/a/" not in text  # no action links
    assert "objection deadline" not in text.lower()

    # An answer has nothing to act on: refused, with the reason recorded on its receipt.
    receipt = await intake.record(
        pool, spec.notice_id, "object", {"customer_id": "globex", "reason": "Keep it"},
        channel="cli",
    )  # fmt: skip
    await handle.signal("object", {"customer_id": "initech", "reason": "Keep it"})
    await wait_for(handle, lambda s: s.rejected_signals >= 1 and s.pending_signals == 0)
    reasons = {
        row["status"] + ": " + row["reason"]
        for row in await pool.fetch(
            "SELECT status, reason FROM intake WHERE notice_id = $1 AND action = 'object'",
            spec.notice_id,
        )
    }
    refused = (
        f"rejected: notice {spec.notice_id} is a removal: informational, nothing to object to"
        " or opt in to"
    )
    assert reasons == {refused}
    assert await pool.fetchval(
        "SELECT status FROM intake WHERE receipt_id = $1", receipt.receipt_id
    ) == "rejected"  # fmt: skip

    before = await env.get_current_time()
    await env.sleep(timedelta(days=11))
    result = await handle.result()
    assert (result.phase, result.unsettled, result.activated) == (Phase.active, 0, 0)
    verdicts = await pool.fetch(
        "SELECT customer_id, verdict, settled FROM recipients WHERE notice_id = $1", spec.notice_id
    )
    assert {(r["customer_id"], r["verdict"], r["settled"]) for r in verdicts} == {
        (c, "removed", True) for c in ("acme", "globex", "initech", "umbrella")
    }
    assert await enabled(pool, OLD) == set()
    # Those it was on for are told it is off (acme's contact bounces; umbrella never had it).
    told = [m["To"] for m in mails(smtp_sink, f"{OLD} is no longer used for your organisation")]
    assert sorted(told) == ["dpo@initech.example", "legal@globex.example"]
    after = await env.get_current_time()
    for customer in ON_FROM_ADDITION:  # the list on each date is what the events say
        assert await in_use(pool, customer, before) == {OLD: "United States"}
        assert await in_use(pool, customer, after) == {}
    assert await in_use(pool, "umbrella", before) == {}
    await projections.catch_up(pool)
    shown = await repository.notice_summary(pool, spec.notice_id)
    assert shown["kind"] == "removal"
    page = await action_page(env, pool, tmp_path, spec.notice_id, "globex")
    assert "This notice is for your information only" in page
    assert 'name="action"' not in page  # no object or opt-in button
    assert "Nothing: this notice is for your information only." in page
    await assert_verified_and_rebuilt(pool, tmp_path, old_notice, spec.notice_id)


async def test_material_change_mails_old_and_new_and_the_annex_follows_activation(
    running, pool, smtp_sink, tmp_path
):
    env, task_queue = running
    old_notice = await addition(env, pool, task_queue, OLD)
    now = await env.get_current_time()
    spec = spec_of(
        now,
        "anthropic-moves",
        OLD,
        kind="material_change",
        subprocessor_location="Ireland",
        transfer_mechanism="Standard contractual clauses (2021)",
        previous={
            "subprocessor_location": "United States",
            "transfer_mechanism": "Not applicable (US customers, US processing)",
        },
    )
    handle = await start(env, pool, task_queue, spec)
    (mail,) = [m for m in mails(smtp_sink, "Notice of a material change to a sub-processor") if
               m["To"] == "legal@globex.example"]  # fmt: skip
    text = text_of(mail)
    assert "Location: United States → Ireland" in text
    assert (
        "Transfer mechanism: Not applicable (US customers, US processing) → Standard contractual"
        " clauses (2021)"
    ) in text
    # initech refuses the changed terms (its objection upheld): it cannot stay on under them.
    await handle.signal("object", {"customer_id": "initech", "reason": "Not to Ireland"})
    await wait_for(handle, lambda s: s.open_objections == 1 and s.pending_signals == 0)
    await handle.signal(
        "resolve_objection", {"customer_id": "initech", "outcome": "excluded", "by": "carol"}
    )
    await wait_for(handle, lambda s: s.open_objections == 0 and s.pending_signals == 0)
    before = await env.get_current_time()
    assert await in_use(pool, "globex", before) == {OLD: "United States"}
    assert await in_use(pool, "initech", before) == {OLD: "United States"}
    await env.sleep(timedelta(days=36))
    await wait_for(handle, lambda s: s.phase is Phase.active and s.activated == 2)
    after = await env.get_current_time()
    assert await in_use(pool, "globex", after) == {OLD: "Ireland"}
    assert await in_use(pool, "initech", after) == {}  # off: it refused the change
    (refusal,) = [m for m in mails(smtp_sink, f"{OLD} is no longer used") if
                  m["To"] == "dpo@initech.example"]  # fmt: skip
    assert "You did not accept the changes" in text_of(refusal)
    (told,) = [m for m in mails(smtp_sink, f"The changes to {OLD} now apply") if
               m["To"] == "legal@globex.example"]  # fmt: skip
    assert "(its subprocessor location, transfer mechanism)" in text_of(told)
    assert await in_use(pool, "globex", before) == {OLD: "United States"}
    assert await enabled(pool, OLD) == ON_FROM_ADDITION - {"initech"}
    await projections.catch_up(pool)
    shown = await repository.notice_summary(pool, spec.notice_id)
    assert shown["kind"] == "material_change"
    assert {c["customer_id"]: c["verdict"] for c in shown["customers"]}["initech"] == "excluded"
    assert shown["previous"]["subprocessor_location"] == "United States"
    await assert_verified_and_rebuilt(pool, tmp_path, old_notice, spec.notice_id)


async def test_a_name_that_differs_only_in_case_from_a_known_one_is_refused(pool):
    """Switches match names exactly: a replacement or removal naming a known sub-processor with
    other case or spacing would switch nothing off, so `notice create` refuses it and names the
    known spelling; an unknown name (in use before noticeflow) passes."""
    now = datetime.now(UTC)
    await repository.create_notice(pool, spec_of(now, "add-old", OLD), "alice", now)
    typo = spec_of(now, "typo", NEW, kind="replacement", replaces="anthropic,  PBC")
    with pytest.raises(InputError) as refused:
        await repository.create_notice(pool, typo, "alice", now)
    assert str(refused.value) == (
        "notice 'typo': replaces 'anthropic,  PBC' differs from the sub-processor"
        " 'Anthropic, PBC' known from earlier notices only in case or spacing; write it exactly"
        " as 'Anthropic, PBC' (a replacement switches a sub-processor by its exact name)"
    )
    data = spec_of(now, "typo-removal", "ANTHROPIC, PBC").model_dump(
        mode="json", exclude={"objection_window", "kind", "replaces", "previous", "reminder_before"}
    )
    removal = parse_notice({**data, "kind": "removal"})
    with pytest.raises(InputError, match="'ANTHROPIC, PBC' differs from the sub-processor"):
        await repository.create_notice(pool, removal, "alice", now)
    assert await pool.fetchval("SELECT count(*) FROM notices") == 1  # nothing was created
    # The addition has not run yet (draft): it could switch the old one on after the change.
    with pytest.raises(InputError) as under_way:
        await repository.create_notice(
            pool, spec_of(now, "too-soon", NEW, kind="replacement", replaces=OLD), "alice", now
        )
    assert str(under_way.value) == (
        "notice 'too-soon': notice 'add-old' about 'Anthropic, PBC' is still under way (phase"
        " draft) and could switch it on for customers after this replacement; cancel it"
        " (noticeflow notice cancel add-old --reason ... --by ...) or settle its customers"
        " (notice exclude) first"
    )
    await pool.execute("UPDATE notices SET phase = 'cancelled' WHERE notice_id = 'add-old'")
    unknown = spec_of(now, "old-vendor", NEW, kind="replacement", replaces="Legacy Mail Ltd")
    await repository.create_notice(pool, unknown, "alice", now)
    exact = spec_of(now, "exact", NEW, kind="replacement", replaces=OLD)
    await repository.create_notice(pool, exact, "alice", now)


async def test_an_older_notice_never_switches_a_removed_sub_processor_on_again(
    running, pool, smtp_sink, tmp_path
):
    """An opt-in addition completes with initech declined; a removal then takes effect. A late
    opt-in on the addition (after it completed) is recorded, but the sub-processor stays off:
    the addition settles initech without activation, saying which notice removed it."""
    env, task_queue = running
    now = await env.get_current_time()
    added = spec_of(now, "add-optin", OLD, opt_in=True)
    handle = await start(env, pool, task_queue, added)
    for customer in ("acme", "globex"):
        await handle.signal("opt_in", {"customer_id": customer})
    await env.sleep(timedelta(days=36))
    await wait_for(handle, lambda s: s.phase is Phase.active and s.activated == 2)
    await handle.signal(
        "exclude", {"customer_id": "umbrella", "reason": "never delivered", "by": "carol"}
    )
    assert (await handle.result()).unsettled == 0
    assert await enabled(pool, OLD) == {"acme", "globex"}

    now = await env.get_current_time()
    data = spec_of(now, "old-removal", OLD).model_dump(
        mode="json", exclude={"objection_window", "kind", "replaces", "previous", "reminder_before"}
    )
    removal = parse_notice({**data, "kind": "removal", "effective_at": now + timedelta(days=3)})
    removing = await start(env, pool, task_queue, removal)
    await env.sleep(timedelta(days=4))
    await removing.result()
    assert await enabled(pool, OLD) == set()
    cancel, _ = await control.submit(
        env.client, pool, removal.notice_id, "cancel", {"reason": "Oops", "by": "bob"},
        task_queue=task_queue, wait_seconds=30,
    )  # fmt: skip
    assert cancel.status == intake.REJECTED, cancel  # too late: it has taken effect
    assert "the removal has taken effect" in str(cancel.reason)
    await env.client.get_workflow_handle(f"notice-{removal.notice_id}").result()

    receipt, _ = await control.submit(
        env.client, pool, added.notice_id, "opt_in", {"customer_id": "initech", "by": "DPO"},
        task_queue=task_queue, wait_seconds=30,
    )  # fmt: skip
    assert receipt.status == intake.ACCEPTED, receipt  # the customer's word is kept
    restarted = env.client.get_workflow_handle(f"notice-{added.notice_id}")
    await restarted.result()
    assert await enabled(pool, OLD) == set()  # still off for everyone
    row = await pool.fetchrow(
        "SELECT activated, verdict, settled FROM recipients WHERE notice_id = $1"
        " AND customer_id = 'initech'",
        added.notice_id,
    )
    assert dict(row) == {"activated": False, "verdict": "excluded_by_ops", "settled": True}
    assert await pool.fetchval(
        "SELECT count(*) FROM events WHERE stream_id = $1 AND event_type = 'customer_excluded'"
        " AND data::jsonb ->> 'receipt_id' = 'superseded-by-old-removal'",
        f"notice-{added.notice_id}",
    ) == 1  # fmt: skip
    await assert_verified_and_rebuilt(pool, tmp_path, added.notice_id, removal.notice_id)
