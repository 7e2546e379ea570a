"""Coalesced wake-ups: a burst of receipts for one notice costs a few signals, not one each.

A receipt is durable in the intake before anyone is woken, and the workflow's ``process_intake``
takes every pending receipt of its notice in one round. So a notice needs one signal after the
last receipt written, not one per receipt. Per notice, at most one signal is in flight; receipts
written while it flies share one trailing signal, sent once it has landed (a signal that landed
earlier may have reached a round that read the intake before they were written, hence the
trailing one). Under a burst of thousands of customer link posts the workflow's history grows by
a few signals per round instead of one per action, and the web's posts do not queue behind
Temporal round trips. While the notice's intake round runs (it keeps taking receipts as they
arrive), no signal is needed at all. The worker's sweeper remains the safety net for a signal that fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
from temporalio.client import Client

from noticeflow import control
from noticeflow.contracts import TASK_QUEUE
from noticeflow.domain.signals import WAKE_SIGNAL

# A mark older than this is stale (the round's worker died): signal as usual.
ROUND_MARK_FRESH = timedelta(seconds=30)


@dataclass
class _Notice:
    flying: asyncio.Task[str | None] | None = None
    trailing: asyncio.Task[str | None] | None = None


class Waker:
    def __init__(
        self,
        client: Callable[[], Awaitable[tuple[Client | None, str | None]]],
        pool: asyncpg.Pool,
        task_queue: str = TASK_QUEUE,
    ) -> None:
        self._client = client
        self._pool = pool
        self._task_queue = task_queue
        self._notices: dict[str, _Notice] = {}
        self.signals_sent = 0
        self.skipped = 0

    async def _round_running(self, notice_id: str) -> bool:
        """Whether the notice's intake round runs now (noticeflow/application/intake.py marks it). The round
        clears the mark and then looks for pending receipts once more, so a receipt written
        before this read is taken by the round, and one written after it finds no mark."""
        if self._pool is None:
            return False
        try:
            return bool(
                await self._pool.fetchval(
                    "SELECT intake_round_at > clock_timestamp() - $2::interval FROM notices"
                    " WHERE notice_id = $1",
                    notice_id,
                    ROUND_MARK_FRESH,
                )
            )
        except Exception:  # cannot tell: signal, which is always safe
            return False

    async def wake(self, notice_id: str, signal: str, receipt_id: str | None) -> str | None:
        """Make sure the notice is signalled after this call began, unless its intake round is
        running (that round takes the receipt); None, or why it was not woken."""
        if await self._round_running(notice_id):
            self.skipped += 1
            return None
        if len(self._notices) > 10_000:  # forget notices with nothing in flight
            for key, idle in list(self._notices.items()):
                if (idle.flying is None or idle.flying.done()) and idle.trailing is None:
                    del self._notices[key]
        entry = self._notices.setdefault(notice_id, _Notice())
        if entry.flying is None or entry.flying.done():
            entry.flying = asyncio.create_task(self._send(notice_id, signal, receipt_id))
            task = entry.flying
        else:
            if entry.trailing is None:
                entry.trailing = asyncio.create_task(self._trail(notice_id, entry, entry.flying))
            task = entry.trailing
        return await asyncio.shield(task)

    async def _trail(
        self, notice_id: str, entry: _Notice, before: asyncio.Task[str | None]
    ) -> str | None:
        await asyncio.gather(before, return_exceptions=True)
        entry.flying, entry.trailing = entry.trailing, None  # this task is the one in flight now
        return await self._send(notice_id, WAKE_SIGNAL, None)

    async def _send(self, notice_id: str, signal: str, receipt_id: str | None) -> str | None:
        client, problem = await self._client()
        problem = await control.try_wake(
            client, self._pool, notice_id, signal, receipt_id, self._task_queue,
            connect_error=problem,
        )  # fmt: skip
        if problem is None:
            self.signals_sent += 1
        return problem
