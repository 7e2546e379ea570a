"""Receipts judged in chunks (noticeflow/application/intake.py): up to CHUNK receipts share one
transaction, each in its own savepoint. A lasting fault in one receipt rejects that receipt alone
and the rest of its chunk commits; a transient fault rolls the whole chunk back to pending, and
the retry judges every receipt exactly once, with one confirmation each."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from noticeflow import intake
from noticeflow.application.intake import IntakeService
from noticeflow.domain import signals
from tests import helpers
from worker.main import make_deps

CUSTOMERS = ("acme", "globex", "initech")


async def _opt_ins_pending(pool, smtp_sink) -> Any:
    objection = signals.Objection(customer_id="umbrella", reason="no")  # judged while setting up
    spec = await helpers.notified_with_objection(pool, smtp_sink.url, objection)
    for customer in CUSTOMERS:
        await intake.record(
            pool, spec.notice_id, "opt_in", {"customer_id": customer}, channel="cli"
        )
    return spec


async def _statuses(pool, spec) -> dict[str, tuple[str, str | None]]:
    rows = await pool.fetch(
        "SELECT customer_id, status, reason FROM intake WHERE notice_id = $1 AND action = 'opt_in'",
        spec.notice_id,
    )
    return {r["customer_id"]: (r["status"], r["reason"]) for r in rows}


async def _events(pool, spec, kind: str) -> int:
    return int(
        await pool.fetchval(
            "SELECT count(*) FROM events WHERE stream_id = $1 AND event_type = $2",
            f"notice-{spec.notice_id}",
            kind,
        )
    )


async def test_a_lasting_fault_rejects_its_receipt_alone_and_the_chunk_commits(
    pool, smtp_sink, monkeypatch
):
    spec = await _opt_ins_pending(pool, smtp_sink)
    real = IntakeService._opt_in

    async def buggy(self: IntakeService, context: Any, opt_in: Any) -> Any:
        if opt_in.customer_id == "globex":
            raise RuntimeError("a bug in one judgement")
        return await real(self, context, opt_in)

    monkeypatch.setattr(IntakeService, "_opt_in", buggy)
    deps = make_deps(pool, smtp_sink.url, "privacy@vendor.example")
    await helpers.take_intake(deps, spec)

    statuses = await _statuses(pool, spec)
    assert statuses["acme"][0] == statuses["initech"][0] == "accepted"
    assert statuses["globex"][0] == "rejected"
    assert "could not be processed (RuntimeError)" in str(statuses["globex"][1])
    opted = {
        r["customer_id"]: r["opted_in"]
        for r in await pool.fetch(
            "SELECT customer_id, opted_in FROM recipients WHERE notice_id = $1", spec.notice_id
        )
    }
    assert opted["acme"] and opted["initech"] and not opted["globex"]
    assert await _events(pool, spec, "opt_in_recorded") == 2
    assert await _events(pool, spec, "action_rejected") == 1


async def test_a_transient_fault_rolls_the_chunk_back_and_the_retry_judges_each_once(
    pool, smtp_sink, monkeypatch
):
    spec = await _opt_ins_pending(pool, smtp_sink)
    real = IntakeService._opt_in
    failed: list[bool] = []

    async def flaky(self: IntakeService, context: Any, opt_in: Any) -> Any:
        if opt_in.customer_id == "initech" and not failed:  # the third of the chunk, once
            failed.append(True)
            raise asyncpg.PostgresConnectionError("connection reset")
        return await real(self, context, opt_in)

    monkeypatch.setattr(IntakeService, "_opt_in", flaky)
    deps = make_deps(pool, smtp_sink.url, "privacy@vendor.example")
    with pytest.raises(asyncpg.PostgresConnectionError):
        await helpers.take_intake(deps, spec)
    # acme and globex were judged before the fault, in the same chunk: rolled back with it.
    assert {s for s, _ in (await _statuses(pool, spec)).values()} == {"pending"}
    assert await _events(pool, spec, "opt_in_recorded") == 0
    assert not await pool.fetchval(
        "SELECT intake_round_at FROM notices WHERE notice_id = $1", spec.notice_id
    )  # the round's mark is cleared: the web signals again until the retry

    await helpers.take_intake(deps, spec)  # the activity's retry
    assert {s for s, _ in (await _statuses(pool, spec)).values()} == {"accepted"}
    assert await _events(pool, spec, "opt_in_recorded") == 3
    confirmations = await pool.fetch(
        "SELECT customer_id, count(*) AS n FROM deliveries WHERE notice_id = $1"
        " AND kind LIKE 'confirmation/%' GROUP BY customer_id",
        spec.notice_id,
    )
    # one confirmation per contact (acme has two), none twice
    assert {r["customer_id"]: r["n"] for r in confirmations} == {
        "acme": 2, "globex": 1, "initech": 1, "umbrella": 1,
    }  # fmt: skip
