"""The audience snapshot heartbeats while it runs (activities/deps.py ``beating``): at a million
customers it spends a minute or two in a few long statements, with no progress of its own to
report. Held up by a real lock on a real PostgreSQL, it beats throughout and then freezes the
whole audience; cancelled mid-way, its transaction rolls back and nothing is half frozen."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import pytest
from temporalio.testing import ActivityEnvironment

import activities.deps
from activities.sending import SendingActivities
from noticeflow import repository
from noticeflow.contracts import AudienceRequest
from tests import helpers
from worker.main import make_deps

AUDIENCE = 4  # the customers helpers.notice's services reach (of helpers.customers' five)


@pytest.fixture
async def made(pool, monkeypatch):
    """A notice created for helpers' customers, not yet snapshotted, and the sending activities
    in an activity environment; the snapshot heartbeats every 0.2 s."""
    monkeypatch.setattr(activities.deps, "BEAT_EVERY", 0.2)
    now = datetime.now(UTC)
    spec = helpers.notice(now)
    await repository.upsert_customers(pool, helpers.customers())
    await repository.create_notice(pool, spec, "alice", now)
    env, sending = ActivityEnvironment(), SendingActivities(make_deps(pool, "smtp://x", "a@b.c"))
    return spec, now, env, sending


async def _held(owner_database_url: str) -> asyncpg.Connection:
    """A connection holding customers locked (as a long statement would keep the snapshot)."""
    holder = await asyncpg.connect(owner_database_url)
    await holder.execute("BEGIN; LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")
    return holder


async def test_a_held_up_snapshot_heartbeats_then_freezes_everyone(pool, owner_database_url, made):
    spec, now, env, sending = made
    beats: list[tuple[object, ...]] = []
    env.on_heartbeat = lambda *details: beats.append(details)

    holder = await _held(owner_database_url)
    try:
        snapshot = asyncio.create_task(
            env.run(sending.snapshot_audience, AudienceRequest(spec=spec, at=now))
        )
        await asyncio.sleep(1.5)
        assert not snapshot.done()
        assert len(beats) >= 4, beats  # every 0.2 s while the statement waits
    finally:
        await holder.close()  # the lock released: the snapshot goes on
    frozen = await asyncio.wait_for(snapshot, 10)
    recipients = "SELECT count(*) FROM recipients WHERE notice_id = $1"
    assert frozen == AUDIENCE == await pool.fetchval(recipients, spec.notice_id)


async def test_a_cancelled_snapshot_rolls_back_and_a_retry_freezes_everyone(
    pool, owner_database_url, made
):
    spec, now, env, sending = made
    request = AudienceRequest(spec=spec, at=now)

    holder = await _held(owner_database_url)
    try:
        snapshot = asyncio.create_task(env.run(sending.snapshot_audience, request))
        await asyncio.sleep(0.6)
        env.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(snapshot, 10)
        # Its statement ended with it, the lock still held: none left waiting to go on after.
        assert await pool.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted") == 0
    finally:
        await holder.close()
    stored = "SELECT count(*) FROM events WHERE event_type = 'audience_snapshotted'"
    assert await pool.fetchval(stored) == 0
    assert await pool.fetchval("SELECT count(*) FROM recipients") == 0
    # Temporal's retry: the whole audience, once.
    assert await ActivityEnvironment().run(sending.snapshot_audience, request) == AUDIENCE
    assert await pool.fetchval(stored) == 1
