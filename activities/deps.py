"""What only Temporal knows, shared by the activities: the hand-over when a worker shuts down,
and the non-retryable failure for an event no model accepts. The activities' dependencies are the
application's (:class:`noticeflow.application.deps.Deps`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

from temporalio import activity
from temporalio.exceptions import ApplicationError

from noticeflow.domain.events import EventError
from noticeflow.eventstore import EventIdConflict


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
