"""What every service needs: the database pool, the mailer, the link signer; how a long loop
reports progress; the update mail shared by several services."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg

from noticeflow.application.shared import load_recipients
from noticeflow.domain.events import AUDIENCE_PART_SIZE
from noticeflow.domain.notice import NoticeSpec
from noticeflow.domain.render import silence_terms
from noticeflow.domain.rules import Authorisation
from noticeflow.links import LinkSigner
from noticeflow.mailer import Mailer, MailJob, Recipient


@dataclass(frozen=True)
class Deps:
    pool: asyncpg.Pool
    mailer: Mailer
    links: LinkSigner
    send_batch_size: int = 200
    audience_part_size: int = AUDIENCE_PART_SIZE  # smaller in tests, to freeze in parts


class Progress(Protocol):
    """Told, with details, that a long piece of work is still moving (an activity passes its
    heartbeat; the details are what a retry resumes from, where it reads them)."""

    def __call__(self, *details: Any) -> None: ...


def quiet(*details: Any) -> None:
    """Progress nobody watches (a service called outside an activity)."""


def _mode(row: Any) -> str:
    """A recipient's frozen authorisation mode (general when unknown)."""
    return str(row["authorisation"] or Authorisation.general) if row else Authorisation.general


async def mail_update(
    deps: Deps,
    spec: NoticeSpec,
    customer_ids: Sequence[str],
    kind: str,
    context_for: Callable[[Recipient], dict[str, Any]],
    progress: Progress,
) -> None:
    """Mail the ``update`` template to customers of a notice, a batch at a time (their contacts
    of the latest snapshot generation; erased customers have none), reporting progress."""
    size = deps.send_batch_size
    for start in range(0, len(customer_ids), size):
        chunk = list(customer_ids[start : start + size])
        recipients = await load_recipients(deps.pool, spec.notice_id, chunk)
        # Every mail about a notice carries the customer's own action page (the template shows it).
        frozen = {
            row["customer_id"]: row
            for row in await deps.pool.fetch(
                "SELECT customer_id, deadline, authorisation FROM recipients WHERE notice_id = $1"
                " AND customer_id = ANY($2::text[])",
                spec.notice_id,
                chunk,
            )
        }
        deadlines = {customer: row["deadline"] for customer, row in frozen.items()}
        jobs = [
            MailJob(
                recipient,
                deps.links.links_for(
                    spec.notice_id,
                    recipient.customer_id,
                    deadlines.get(recipient.customer_id) or spec.effective_at,
                    spec.effective_at,
                )
                # the customer's language picks the templates (unless the context says one)
                | {"language": recipient.language}
                # whether it may consent or approve: the page link the template offers
                | silence_terms(spec.opt_in, _mode(frozen.get(recipient.customer_id)))
                | context_for(recipient),
            )
            for recipient in recipients.values()
        ]
        await deps.mailer.mail_many(
            deps.pool, spec.notice_id, kind, "update", jobs, progress=progress
        )
