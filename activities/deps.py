"""What only Temporal knows, shared by the activities: the hand-over when a worker shuts down,
and the non-retryable failure for an event no model accepts. The activities' dependencies are the
application's (:class:`noticeflow.application.deps.Deps`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from noticeflow.domain.events import EventError
from noticeflow.eventstore import EventIdConflict

T = TypeVar("T")
# How often a long step heartbeats while it waits on one statement (the heartbeat timeout is a
# minute: workflows/notice.py HEARTBEAT).
BEAT_EVERY = 10.0


@contextlib.asynccontextmanager
async def handed_over_on_shutdown() -> AsyncIterator[None]:
    """Turn the cancellation a worker shutdown brings into a failure, so that Temporal retries
    the activity on another worker at once (it resumes from its last heartbeat) instead of
    waiting for the heartbeat timeout."""
    try:
        yield
    except asyncio.CancelledError:
        if activity.is_worker_shutdown():
            raise ApplicationError(
                "the worker shut down mid-activity; it resumes elsewhere from its last heartbeat"
            ) from None
        raise


@contextlib.contextmanager
def lasting_faults_fail_for_good() -> Iterator[None]:
    """Faults a retry could never mend fail the activity for good (non-retryable), never an
    endless retry: an event the workflow described that no model accepts (unknown type or invalid
    data: the workflow's code is wrong, not the world), and a step whose event is stored already
    with other content (EventIdConflict: the same step key reused for something else)."""
    try:
        yield
    except EventError as error:
        raise ApplicationError(str(error), type="InvalidEvent", non_retryable=True) from None
    except EventIdConflict as error:
        raise ApplicationError(str(error), type="EventIdConflict", non_retryable=True) from None


async def beating(step: Awaitable[T], every: float | None = None) -> T:
    """Await ``step``, heartbeating every ``every`` seconds (BEAT_EVERY) while it runs: for a step that spends
    its time in a few long statements (an audience snapshot of millions of customers), where no
    progress of its own could be reported. A worker that dies stops the beats, so Temporal retries
    it after the heartbeat timeout instead of the step's whole bound; a cancelled activity cancels
    the step."""
    task = asyncio.ensure_future(step)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=every or BEAT_EVERY)
            if done:
                return task.result()
            activity.heartbeat()
    finally:
        if not task.done():  # the activity was cancelled: the step's transaction rolls back first
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
