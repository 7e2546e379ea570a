"""What every activity needs: the database pool and the mailer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from activities.mailer import Mailer
from noticeflow.domain.deadlines import describe_deadline
from noticeflow.domain.notice import NoticeSpec
from noticeflow.links import LinkSigner


@dataclass(frozen=True)
class Deps:
    pool: asyncpg.Pool
    mailer: Mailer
    links: LinkSigner
    send_batch_size: int = 200


def mail_context(
    spec: NoticeSpec, timezone: str, deadline: datetime | None, links: dict[str, str]
) -> dict[str, Any]:
    """Template context for one customer: the notice, its dates in the customer's timezone and
    the customer's signed action links (``object_url``, ``opt_in_url``)."""
    local_effective = spec.effective_at.astimezone(ZoneInfo(timezone))
    return {
        **links,
        "spec": spec,
        "notice_text": spec.text(),
        "text_sha256": spec.text_sha256(),
        "deadline_text": describe_deadline(deadline, timezone) if deadline else "not yet set",
        "effective_text": f"{local_effective:%A %d %B %Y %H:%M %Z} ({timezone})",
    }


def update_context(spec: NoticeSpec, headline: str, paragraphs: list[str]) -> dict[str, Any]:
    return {"spec": spec, "headline": headline, "paragraphs": paragraphs}
