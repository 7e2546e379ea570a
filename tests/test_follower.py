"""noticeflow/follower.py on a real PostgreSQL: the one loop the projector, the webhook outbox
and the subscriber mail follow the event store with. Woken by NOTIFY on each channel it is
given, it survives a failing step and a lost listening connection, and only ``stop`` ends it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from structlog.testing import capture_logs

from noticeflow.follower import EVENTS_CHANNEL, follow

POLL = 30.0  # far longer than any wait below: whatever happens sooner is not the polling


class Steps:
    """A step that counts its calls and fails when told to."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail_next = 0
        self.called = asyncio.Event()

    async def __call__(self) -> None:
        self.calls += 1
        self.called.set()
        if self.fail_next:
            self.fail_next -= 1
            raise asyncpg.PostgresError("the step failed: SECRET-VALUE")

    async def beyond(self, calls: int, within: float = 5.0) -> int:
        """Wait for a call after the first ``calls`` (counted before the trigger: the step may
        run before the trigger's own await returns)."""
        deadline = asyncio.get_running_loop().time() + within
        while self.calls <= calls:
            self.called.clear()
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(f"no call after {calls} within {within} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.called.wait(), remaining)
        return self.calls


@contextlib.asynccontextmanager
async def following(
    pool: asyncpg.Pool, steps: Steps, poll: float = POLL, **options: object
) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(
        follow(pool, stop, steps, what="test follower", poll_seconds=poll, **options)  # type: ignore[arg-type]
    )
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def notify(pool: asyncpg.Pool, channel: str = EVENTS_CHANNEL) -> None:
    await pool.execute("SELECT pg_notify($1, '')", channel)


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


async def test_it_runs_at_once_and_after_each_notify_on_each_channel(pool: asyncpg.Pool) -> None:
    steps = Steps()
    async with following(pool, steps, channels=(EVENTS_CHANNEL, "test_other")):
        assert await steps.beyond(0) == 1
        await asyncio.sleep(0.2)  # its LISTEN is in place before the first NOTIFY
        await notify(pool)
        assert await steps.beyond(1) == 2
        await notify(pool, "test_other")
        assert await steps.beyond(2) == 3
        await notify(pool, "a_channel_not_followed")
        with pytest.raises(TimeoutError):
            await steps.beyond(3, within=1.0)


async def test_without_notify_it_polls(pool: asyncpg.Pool) -> None:
    steps = Steps()
    async with following(pool, steps, poll=0.2):
        await steps.beyond(2, within=3.0)


async def test_a_failing_step_is_logged_by_type_and_tried_again(pool: asyncpg.Pool) -> None:
    steps = Steps()
    steps.fail_next = 2
    with capture_logs() as logs:
        async with following(pool, steps, poll=0.2):
            await eventually(lambda: _at_least(steps, 4))
    failures = [e for e in logs if e["event"] == "test follower failed; will retry"]
    assert len(failures) == 2
    assert failures[0]["error_type"] == "PostgresError" and failures[0]["log_level"] == "warning"
    assert "SECRET-VALUE" not in repr(logs)  # the message may quote a value: never logged


async def test_a_lost_listening_connection_is_replaced_and_notify_wakes_it_again(
    pool: asyncpg.Pool,
) -> None:
    steps = Steps()
    with capture_logs() as logs:
        async with following(pool, steps, poll=2.0):
            await steps.beyond(0)
            await asyncio.sleep(0.2)
            listening = await pool.fetch(
                "SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN%'"
                " AND datname = current_database()"
            )
            assert len(listening) == 1
            await pool.execute("SELECT pg_terminate_backend($1)", listening[0]["pid"])
            await eventually(
                lambda: _listening_again(pool, other_than=listening[0]["pid"]), within=10.0
            )
            # The new connection listens: a NOTIFY wakes it at once, not at the next poll (2 s).
            await asyncio.sleep(0.1)  # past the first round on the new connection
            before = steps.calls
            await notify(pool)
            await steps.beyond(before, within=0.5)
    assert any(e["event"] == "test follower failed; will retry" for e in logs), logs


async def test_stop_ends_it_at_once_even_mid_wait(pool: asyncpg.Pool) -> None:
    steps = Steps()
    stop = asyncio.Event()
    task = asyncio.create_task(follow(pool, stop, steps, what="test", poll_seconds=POLL))
    await steps.beyond(0)
    stop.set()
    await asyncio.wait_for(task, 2.0)  # not the 30 s poll
    assert pool.get_idle_size() == pool.get_size()  # the listening connection given back


async def _at_least(steps: Steps, calls: int) -> bool:
    return steps.calls >= calls


async def _listening_again(pool: asyncpg.Pool, other_than: int) -> bool:
    pids = await pool.fetch(
        "SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN%'"
        " AND datname = current_database()"
    )
    return any(row["pid"] != other_than for row in pids)
