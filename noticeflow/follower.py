"""Follow the event store: run a step after every NOTIFY and at least every few seconds, until
stopped, whatever fails.

The read-model projector, the webhook outbox and the subscriber mail each follow the store this
way; one loop serves all three, so a lost connection, a database restart or a step that raises
is handled the same everywhere: logged by the error's type and SQLSTATE (never its message,
which may quote a value), then tried again with a fresh listening connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

import asyncpg
import structlog

log = structlog.get_logger()

EVENTS_CHANNEL = "noticeflow_events"  # NOTIFY'd by every append (migrations: notify trigger)


async def follow(
    pool: asyncpg.Pool,
    stop: asyncio.Event,
    step: Callable[[], Awaitable[object]],
    *,
    what: str,
    channels: Sequence[str] = (EVENTS_CHANNEL,),
    poll_seconds: float = 2.0,
) -> None:
    """Run ``step`` until ``stop``: once at the start, then after each NOTIFY on ``channels``,
    and at least every ``poll_seconds`` (the fallback for a NOTIFY lost with a connection).

    Any failure — the step raising, the listening connection lost — is logged as
    ``"<what> failed; will retry"`` and the loop starts over after ``poll_seconds`` with a new
    listening connection; only ``stop`` ends it (or the task being cancelled)."""
    wake = asyncio.Event()

    def notified(*_: object) -> None:
        wake.set()

    while not stop.is_set():
        listener: asyncpg.Connection | None = None
        try:
            listener = await pool.acquire()
            for channel in channels:
                await listener.add_listener(channel, notified)
            while not stop.is_set():
                wake.clear()  # before the step: a NOTIFY that arrives meanwhile wakes the next
                await step()
                if listener.is_closed():
                    raise ConnectionError("the listening connection closed")
                await first_of(wake, stop, timeout=poll_seconds)
        except Exception as error:
            log.warning(
                f"{what} failed; will retry",
                error_type=type(error).__name__,
                sqlstate=getattr(error, "sqlstate", None),
            )
            await first_of(stop, timeout=poll_seconds)
        finally:
            if listener is not None:
                for channel in channels:
                    with contextlib.suppress(Exception):
                        await listener.remove_listener(channel, notified)
                with contextlib.suppress(Exception):
                    await pool.release(listener)


async def first_of(*events: asyncio.Event, timeout: float) -> None:
    """Return when any of ``events`` is set, or after ``timeout`` seconds."""
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)  # gone before we return
