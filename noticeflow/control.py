"""Driving a running notice from outside: start it, signal it, and wait to see what became of it."""

from __future__ import annotations

import asyncio
import getpass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from noticeflow import repository
from noticeflow.contracts import TASK_QUEUE, NoticeInput, NoticeStatus, workflow_id
from noticeflow.domain.errors import InputError
from noticeflow.domain.notice import NoticeSpec

REJECTION_EVENTS = ("signal_rejected", "objection_rejected")


def default_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"


async def start_notice(
    client: Client, pool: asyncpg.Pool, spec: NoticeSpec, author: str, task_queue: str = TASK_QUEUE
) -> None:
    await repository.create_notice(pool, spec, author, datetime.now(UTC))
    await client.start_workflow(
        "NoticeWorkflow",
        NoticeInput(spec=spec, author=author),
        id=workflow_id(spec.notice_id),
        task_queue=task_queue,
    )


async def query_status(client: Client, notice_id: str) -> NoticeStatus:
    handle: WorkflowHandle[Any, Any] = client.get_workflow_handle(workflow_id(notice_id))
    try:
        return await handle.query("status", result_type=NoticeStatus)
    except RPCError as error:
        if error.status is RPCStatusCode.NOT_FOUND:
            raise InputError(f"no running workflow for notice {notice_id!r}") from None
        raise


async def latest_rejection(pool: asyncpg.Pool, notice_id: str) -> str:
    reason = await pool.fetchval(
        "SELECT data->>'reason' FROM events WHERE stream_id = $1 AND event_type = ANY($2::text[])"
        " ORDER BY position DESC LIMIT 1",
        f"notice-{notice_id}",
        list(REJECTION_EVENTS),
    )
    return str(reason or "rejected by the workflow")


async def send_signal(
    client: Client,
    pool: asyncpg.Pool,
    notice_id: str,
    name: str,
    payload: dict[str, Any],
    wait_seconds: float = 20.0,
) -> tuple[NoticeStatus | None, str | None]:
    """Signal the workflow, then wait until it has handled the signal.

    Returns (status after, rejection reason or None). Status is None when no worker handled the
    signal in time: the signal is durable and will be handled once a worker runs.
    """
    before = await query_status(client, notice_id)
    if before.phase.value in {"cancelled"}:
        raise InputError(f"notice {notice_id} is cancelled")
    handle: WorkflowHandle[Any, Any] = client.get_workflow_handle(workflow_id(notice_id))
    await handle.signal(name, payload)
    loop = asyncio.get_running_loop()
    give_up = loop.time() + wait_seconds
    while loop.time() < give_up:
        await asyncio.sleep(0.2)
        try:
            after = await query_status(client, notice_id)
        except InputError:  # the workflow completed after this signal
            return None, None
        if after.signals_handled > before.signals_handled and after.pending_signals == 0:
            if after.rejected_signals > before.rejected_signals:
                return after, await latest_rejection(pool, notice_id)
            return after, None
    return None, None
