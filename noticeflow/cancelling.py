"""Work that must end before a cancellation goes on.

A cancelled send (a cancelled notice, a worker shutting down) must still know and record what it
mailed: the cancellation mail goes to every customer recorded as reached. So the two steps that
decide it — a message already in conversation with the server, and the record of a mailed batch —
are finished despite a cancel, within a grace, and the cancel then goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def finish_despite_cancel(
    work: Awaitable[T], grace: float, then: Callable[[T], None] | None = None
) -> T:
    """Await ``work``; if this task is cancelled meanwhile (once or more), give the work up to
    ``grace`` seconds from the first cancel to end, hand its result to ``then``, and raise
    CancelledError. A work that does not end within the grace is cancelled; one that fails after
    the cancel is dropped (the cancellation wins: the caller is being cancelled)."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    deadline: float | None = None
    while True:
        try:
            if deadline is None:
                return await asyncio.shield(task)
            result = await asyncio.wait_for(asyncio.shield(task), max(0.0, deadline - loop.time()))
        except asyncio.CancelledError:
            if task.cancelled():  # the work itself was cancelled (not through us)
                raise
            if deadline is None:
                deadline = loop.time() + grace
            continue
        except Exception as error:
            if deadline is None:  # not cancelled: the work's own failure
                raise
            if not task.done():  # the grace is over
                task.cancel()
            raise asyncio.CancelledError from error
        if then is not None:
            then(result)
        raise asyncio.CancelledError
