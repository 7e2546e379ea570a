"""The intake of record on the time-skipping server: every action becomes a receipt, is judged once,
and nothing — a typo twice, a repeat, an action after completion — can stop a notice."""

from __future__ import annotations

import contextlib
import uuid
from datetime import timedelta

import pytest
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from noticeflow import control, eventstore, intake, repository
from noticeflow.contracts import NoticeStatus, workflow_id
from noticeflow.domain import events
from noticeflow.domain.rules import Phase
from tests import helpers
from tests.workflows.test_notice_lifecycle import wait_for
from worker.main import build_worker, make_deps


@pytest.fixture
async def running(time_skipping_env: WorkflowEnvironment, pool, smtp_sink):
    task_queue = f"tq-{uuid.uuid4().hex[:8]}"
    deps = make_deps(pool, smtp_sink.url, "privacy@vendor.example")
    async with build_worker(time_skipping_env.client, deps, task_queue):
        yield time_skipping_env, task_queue
        # A workflow left waiting without its worker would stop the shared server skipping time.
        for row in await pool.fetch("SELECT notice_id FROM notices"):
            handle = time_skipping_env.client.get_workflow_handle(workflow_id(row["notice_id"]))
            with contextlib.suppress(RPCError):
                await handle.terminate("test over")


async def started(env, task_queue, pool, **overrides):
    now = await env.get_current_time()
    # After globex's 30-day contract window, wherever its last day falls (rule 6).
    overrides.setdefault("notice_id", f"intake-{uuid.uuid4().hex[:8]}")
    overrides.setdefault("effective_at", (now + timedelta(days=35)).isoformat())
    spec = helpers.notice(now, **overrides)
    await repository.upsert_customers(pool, helpers.customers())
    await repository.create_notice(pool, spec, "alice", now)
    handle = await helpers.start_notice_workflow(env.client, spec, task_queue)
    return spec, handle


async def typed_event_types(pool, stream_ids: list[str] | None = None) -> set[str]:
    """Every event stored so far (or in ``stream_ids``), read back as its model (as stored and as
    upcast on read): no event escapes noticeflow/domain/events.py. Returns the types seen."""
    seen = set()
    if stream_ids is None:
        stream_ids = [
            r["stream_id"] for r in await pool.fetch("SELECT stream_id FROM event_streams")
        ]
    for stream_id in stream_ids:
        for stored, raw in zip(
            await eventstore.read_stream(pool, stream_id),
            await eventstore.read_stream(pool, stream_id, upcast=False),
            strict=True,
        ):
            event = stored.typed()
            assert event == raw.typed() and type(event) is events.EVENT_TYPES[stored.event_type]
            assert event.data() == stored.data, f"{stored.event_type} does not read back as stored"
            seen.add(stored.event_type)
    return seen


async def act(env, task_queue, pool, spec, action, payload) -> intake.Receipt:
    # Received "now" on the server's skipped clock, as a reply's arrival time would be given.
    receipt, why = await control.submit(
        env.client,
        pool,
        spec.notice_id,
        action,
        payload,
        task_queue=task_queue,
        wait_seconds=30,
        received_at=await env.get_current_time(),
    )
    assert why is None, why
    return receipt


async def test_four_eyes_ignores_case_and_a_second_approval_is_a_repeat(running, pool):
    env, tq = running
    spec, handle = await started(env, tq, pool, opt_in=False)
    for look_alike in ("Alice", "\uff21\uff4c\uff49\uff43\uff45"):  # fullwidth, too
        refused = await act(env, tq, pool, spec, "approve", {"by": look_alike})
        assert refused.status == "rejected" and "four eyes" in str(refused.reason)
    hidden = await act(env, tq, pool, spec, "approve", {"by": "alice\u200b"})
    assert hidden.status == "rejected" and "invisible character (U+200B)" in str(hidden.reason)
    past = await act(
        env, tq, pool, spec, "postpone", {"effective_at": "2001-01-01T00:00:00Z", "by": "bob"}
    )
    assert past.status == "rejected" and "in the past" in str(past.reason)
    approved = await act(env, tq, pool, spec, "approve", {"by": "bob"})
    assert approved.status == "accepted"
    again = await act(env, tq, pool, spec, "approve", {"by": "Bob"})
    assert again.status == "duplicate" and "already approved by Bob" in str(again.reason)
    status = await wait_for(handle, lambda s: s.phase is Phase.window_open)
    # Names stay in the records: the workflow (and so Temporal) never holds them.
    assert status.approved_by is None and status.author == ""
    approver = "SELECT approved_by FROM notices WHERE notice_id = $1"
    assert await pool.fetchval(approver, spec.notice_id) == "bob"


async def test_typos_repeats_and_second_objections_never_wedge_the_notice(running, pool, smtp_sink):
    env, tq = running
    spec, handle = await started(env, tq, pool, opt_in=False)
    await act(env, tq, pool, spec, "approve", {"by": "bob"})
    await wait_for(handle, lambda s: s.phase is Phase.window_open)

    # The same typo twice: two rejections with their reason, and the notice goes on.
    for _ in range(2):
        typo = await act(env, tq, pool, spec, "object", {"customer_id": "acmee", "reason": "No"})
        assert typo.status == "rejected"
        assert "unknown customer 'acmee'" in str(typo.reason) and "'acme'" in str(typo.reason)
    first = await act(env, tq, pool, spec, "object", {"customer_id": "acme", "reason": "No"})
    assert first.status == "accepted"
    same = await act(env, tq, pool, spec, "object", {"customer_id": "acme", "reason": "No"})
    assert same.status == "duplicate" and first.receipt_id in str(same.reason)

    resolve = {"customer_id": "acme", "outcome": "withdrawn", "by": "carol"}
    assert (await act(env, tq, pool, spec, "resolve_objection", resolve)).status == "accepted"
    nothing_open = await act(env, tq, pool, spec, "resolve_objection", resolve)
    assert nothing_open.status == "rejected" and "no open case" in str(nothing_open.reason)

    # The same words after the case was closed are a new objection, with a case of its own.
    again = await act(env, tq, pool, spec, "object", {"customer_id": "acme", "reason": "No"})
    assert again.status == "accepted" and again.receipt_id != first.receipt_id
    status = await wait_for(handle, lambda s: s.open_objections == 1)
    assert (await act(env, tq, pool, spec, "resolve_objection", resolve)).status == "accepted"
    assert await pool.fetchval("SELECT count(*) FROM objections") == 2
    status = await wait_for(handle, lambda s: s.open_objections == 0 and s.pending_signals == 0)
    assert status.phase is Phase.window_open

    # The sender's own key: the same action again is the first receipt; the same key for
    # another action is refused, not silently taken for a repeat.
    keyed = {"customer_id": "globex", "reason": "Not now", "idempotency_key": "mail-4711"}
    one = await act(env, tq, pool, spec, "object", keyed)
    two = await act(env, tq, pool, spec, "object", keyed)
    assert two.repeat and two.receipt_id == one.receipt_id and two.status == "accepted"
    other = await act(env, tq, pool, spec, "object", {**keyed, "customer_id": "initech"})
    assert other.status == "rejected" and "already used" in str(other.reason)
    rejected = await pool.fetchval(
        "SELECT count(*) FROM events WHERE event_type = 'action_rejected'"
    )
    assert rejected == 4


async def test_an_undelivered_customer_is_excluded_and_rights_outlive_completion(
    running, pool, smtp_sink
):
    env, tq = running
    spec, handle = await started(env, tq, pool)  # opt-in; umbrella's only address bounces
    await act(env, tq, pool, spec, "approve", {"by": "bob"})
    status = await wait_for(handle, lambda s: s.phase is Phase.window_open)
    assert status.undelivered == 1
    for customer in ("acme", "globex", "initech"):
        await act(env, tq, pool, spec, "opt_in", {"customer_id": customer})

    await env.sleep(timedelta(days=45))  # past every deadline and the effective date
    status = await wait_for(handle, lambda s: s.phase is Phase.active and s.activated == 3)
    assert status.unsettled == 1  # umbrella: never delivered, never activated, keeps it open
    out = await act(
        env,
        tq,
        pool,
        spec,
        "exclude",
        {"customer_id": "umbrella", "reason": "no valid contact", "by": "carol"},
    )
    assert out.status == "accepted"
    resend = await act(env, tq, pool, spec, "resend", {"customer_id": "umbrella"})
    assert resend.status == "rejected" and "excluded by ops" in str(resend.reason)
    result: NoticeStatus = await handle.result()
    assert result.unsettled == 0 and result.activated == 3

    # After completion: revoking an opt-in switches the sub-processor off (a new run handles it
    # and completes again); a late objection is kept and shown, and holds ops' attention.
    revoked = await act(env, tq, pool, spec, "revoke_opt_in", {"customer_id": "acme"})
    assert revoked.status == "accepted"
    late = await act(env, tq, pool, spec, "object", {"customer_id": "globex", "reason": "Late"})
    assert late.status == "accepted" and "late" in str(late.reason)
    enabled = {
        r["customer_id"]
        for r in await pool.fetch("SELECT customer_id FROM subprocessor_enablements WHERE enabled")
    }
    assert enabled == {"globex", "initech"}
    resolved = await act(
        env,
        tq,
        pool,
        spec,
        "resolve_objection",
        {"customer_id": "globex", "outcome": "excluded", "by": "carol"},
    )
    assert resolved.status == "accepted"
    latest = env.client.get_workflow_handle(workflow_id(spec.notice_id), result_type=NoticeStatus)
    final = await latest.result()
    assert final.unsettled == 0
    table = {r["customer_id"]: r for r in await repository.customer_table(pool, spec.notice_id)}
    assert not table["acme"]["activated"] and not table["globex"]["activated"]
    assert table["umbrella"]["verdict"] == "excluded_by_ops"
    assert table["globex"]["objection"] == {
        "status": "excluded", "timely": False, "request": "objection",
    }  # fmt: skip
    revoke_mail = [
        m for m in smtp_sink.messages() if m["Subject"].startswith("Your opt-in is revoked")
    ]
    assert {m["To"] for m in revoke_mail} == {"privacy@acme.example", "dpo@acme.example"}
    because = {
        r["customer_id"]: r["because"]
        for r in await pool.fetch(
            "SELECT data->>'customer_id' AS customer_id, data->>'because' AS because FROM events"
            " WHERE event_type = 'subprocessor_enabled'"
        )
    }
    assert set(because.values()) == {"opted_in"}
    assert await typed_event_types(pool) >= {
        "notice_created", "phase_changed", "notice_approved", "audience_snapshotted",
        "notice_delivered", "notice_undelivered", "opt_in_recorded", "opt_in_revoked",
        "subprocessor_enabled", "subprocessor_disabled", "customer_settled", "customer_excluded",
        "action_rejected", "objection_received", "objection_resolved",
    }  # fmt: skip


async def test_cancel_once_active_stops_what_is_still_to_come(running, pool):
    env, tq = running
    spec, handle = await started(env, tq, pool)
    await act(env, tq, pool, spec, "approve", {"by": "bob"})
    await wait_for(handle, lambda s: s.phase is Phase.window_open)
    await act(env, tq, pool, spec, "opt_in", {"customer_id": "acme"})
    await env.sleep(timedelta(days=45))
    await wait_for(handle, lambda s: s.phase is Phase.active and s.activated == 1)
    cancelled = await act(
        env, tq, pool, spec, "cancel", {"reason": "vendor contract ended", "by": "alice"}
    )
    assert cancelled.status == "accepted"
    result: NoticeStatus = await handle.result()
    assert result.phase is Phase.cancelled
    table = {r["customer_id"]: r for r in await repository.customer_table(pool, spec.notice_id)}
    assert table["acme"]["activated"] and table["globex"]["verdict"] == "cancelled"
    after = await act(env, tq, pool, spec, "opt_in", {"customer_id": "globex"})
    assert after.status == "rejected" and "cancelled" in str(after.reason)
    # A customer switched on before the cancel keeps its right to revoke (rule 8).
    revoked = await act(env, tq, pool, spec, "revoke_opt_in", {"customer_id": "acme"})
    assert revoked.status == "accepted"
    assert not await pool.fetchval(
        "SELECT enabled FROM subprocessor_enablements WHERE customer_id = 'acme'"
    )


async def test_an_erased_customers_open_case_can_still_be_closed(running, pool):
    env, tq = running
    spec, handle = await started(env, tq, pool, opt_in=False)
    await act(env, tq, pool, spec, "approve", {"by": "bob"})
    await wait_for(handle, lambda s: s.phase is Phase.window_open)
    await act(env, tq, pool, spec, "object", {"customer_id": "initech", "reason": "No"})
    await repository.erase_customer(pool, "initech")
    refused = await act(env, tq, pool, spec, "object", {"customer_id": "initech", "reason": "x"})
    assert refused.status == "rejected" and "erased" in str(refused.reason)
    closed = await act(
        env,
        tq,
        pool,
        spec,
        "resolve_objection",
        {"customer_id": "initech", "outcome": "excluded", "by": "carol"},
    )
    assert closed.status == "accepted"
    await act(
        env,
        tq,
        pool,
        spec,
        "exclude",
        {"customer_id": "umbrella", "reason": "bounced", "by": "carol"},
    )
    await env.sleep(timedelta(days=45))
    result: NoticeStatus = await handle.result()
    assert result.unsettled == 0
    by = await pool.fetchval("SELECT resolved_by FROM objections WHERE customer_id = 'initech'")
    assert by == "[erased]"
