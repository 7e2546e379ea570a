"""What every activity needs: the database pool, the mailer, the link signer; shared helpers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.mailer import Mailer, MailJob, Recipient
from activities.records import load_recipients
from noticeflow.domain.notice import NoticeSpec
from noticeflow.links import LinkSigner


@dataclass(frozen=True)
class Deps:
    pool: asyncpg.Pool
    mailer: Mailer
    links: LinkSigner
    send_batch_size: int = 200


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


async def mail_update(
    deps: Deps,
    spec: NoticeSpec,
    customer_ids: Sequence[str],
    kind: str,
    context_for: Callable[[Recipient], dict[str, Any]],
) -> None:
    """Mail the ``update`` template to customers of a notice, a batch at a time (their contacts
    of the latest snapshot generation; erased customers have none), heartbeating progress."""
    size = deps.send_batch_size
    for start in range(0, len(customer_ids), size):
        chunk = list(customer_ids[start : start + size])
        recipients = await load_recipients(deps.pool, spec.notice_id, chunk)
        # Every mail about a notice carries the customer's own action page (the template shows it).
        deadlines = {
            row["customer_id"]: row["deadline"]
            for row in await deps.pool.fetch(
                "SELECT customer_id, deadline FROM recipients WHERE notice_id = $1"
                " AND customer_id = ANY($2::text[])",
                spec.notice_id,
                chunk,
            )
        }
        jobs = [
            MailJob(
                recipient,
                deps.links.links_for(
                    spec.notice_id,
                    recipient.customer_id,
                    deadlines.get(recipient.customer_id) or spec.effective_at,
                    spec.effective_at,
                )
                | context_for(recipient),
            )
            for recipient in recipients.values()
        ]
        await deps.mailer.mail_many(
            deps.pool, spec.notice_id, kind, "update", jobs, progress=activity.heartbeat
        )
