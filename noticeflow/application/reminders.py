"""Reminders: a mail some time before a customer's deadline, to customers who have not acted."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from noticeflow import eventstore
from noticeflow.application.deps import Deps, Progress, mail_update
from noticeflow.contracts import ReminderRequest, ReminderRound
from noticeflow.domain import events
from noticeflow.domain import language as lang
from noticeflow.domain.notice import NoticeSpec
from noticeflow.domain.render import silence_words, update_context
from noticeflow.domain.rules import Authorisation, consent_required
from noticeflow.mailer import Recipient

# Not acted: no case at all (objection, request for changes), not opted in (an opt-in where
# consent is required, a dora contract's approval; nobody else can opt in). Inside the window.
CANDIDATES = (
    "SELECT r.customer_id, r.deadline, r.timezone, r.authorisation FROM recipients r"
    " WHERE r.notice_id = $1 AND r.delivery = 'delivered' AND r.deadline > $2"
    " AND NOT r.opted_in"
    " AND NOT EXISTS (SELECT 1 FROM objections o WHERE o.notice_id = r.notice_id"
    "   AND o.customer_id = r.customer_id)"
    " ORDER BY r.customer_id"
)


class ReminderService:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    async def send_reminders(self, request: ReminderRequest, progress: Progress) -> ReminderRound:
        """Remind every candidate whose reminder time has come; say when the next one is due."""
        spec = request.spec
        assert spec.reminder_before is not None
        rows = await self.deps.pool.fetch(CANDIDATES, spec.notice_id, request.now)
        due = [row for row in rows if row["deadline"] - spec.reminder_before <= request.now]
        later: list[datetime] = [
            row["deadline"] - spec.reminder_before
            for row in rows
            if row["deadline"] - spec.reminder_before > request.now
        ]
        await self._remind(spec, due, request.now, progress)
        return ReminderRound(sent=len(due), next_due=min(later, default=None))

    async def _remind(
        self, spec: NoticeSpec, due: list[asyncpg.Record], now: datetime, progress: Progress
    ) -> None:
        deadlines = {row["customer_id"]: row["deadline"] for row in due}
        modes = {row["customer_id"]: row["authorisation"] for row in due}

        def context_for(recipient: Recipient) -> dict[str, Any]:
            tag = recipient.language  # the customer's language (domain/language.py)
            deadline = lang.deadline(tag, deadlines[recipient.customer_id], recipient.timezone)
            mode = modes[recipient.customer_id]
            if consent_required(spec.opt_in, mode):
                action = "opt_in"
            elif mode == Authorisation.dora:
                action = "dora"
            else:
                action = "object"
            return update_context(
                spec,
                lang.text(tag, f"reminder.headline.{action}"),
                [
                    lang.text(
                        tag, "reminder.plan", subprocessor=spec.subprocessor, purpose=spec.purpose
                    ),
                    lang.text(tag, f"reminder.before.{action}", deadline=deadline),
                    silence_words(spec.subprocessor, spec.opt_in, mode, tag),
                ],
                tag,
            )

        await mail_update(self.deps, spec, list(deadlines), "reminder", context_for, progress)
        stream = eventstore.notice_stream(spec.notice_id)
        reminded = [
            eventstore.NewEvent.of(
                stream,
                f"reminder/{row['customer_id']}",
                events.ReminderSent(customer_id=row["customer_id"], deadline=row["deadline"]),
                now,
            )
            for row in due
        ]
        async with self.deps.pool.acquire() as connection:
            await eventstore.append_events(connection, stream, reminded)
