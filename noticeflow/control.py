"""Driving notices from outside: start one, and hand it actions through the intake.

An action is written to the intake first (``noticeflow.intake``), then the notice's workflow is
woken by signal-with-start: a running workflow gets the signal; a completed one (every customer was
settled, rule 9) is started again as a new run of the same workflow id, from the notice's state in
the records, judges the action and completes again. So a customer keeps its rights after
completion — revoking an opt-in, objecting late — through the same commands. The caller then
watches its own receipt, never another caller's.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from noticeflow import intake, repository
from noticeflow.contracts import (
    TASK_QUEUE,
    WORKFLOW_TYPE,
    NoticeInput,
    NoticeState,
    NoticeStatus,
    notice_stream,
    workflow_id,
)
from noticeflow.domain.errors import InputError
from noticeflow.domain.notice import NoticeSpec
from noticeflow.domain.rules import Phase
from noticeflow.domain.signals import WAKE_SIGNAL
from noticeflow.domain.summaries import static_details, static_summary

log = structlog.get_logger(__name__)


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
        WORKFLOW_TYPE,
        # No name travels through Temporal: the author is in the records (four eyes is judged
        # from them, noticeflow/notice_actions.py).
        NoticeInput(spec=spec, author=""),
        id=workflow_id(spec.notice_id),
        task_queue=task_queue,
        # What the Temporal Web UI shows for this run (the workflow keeps "current details").
        static_summary=static_summary(spec),
        static_details=static_details(spec),
    )


async def query_status(client: Client, notice_id: str) -> NoticeStatus:
    handle: WorkflowHandle[Any, Any] = client.get_workflow_handle(workflow_id(notice_id))
    try:
        return await handle.query("status", result_type=NoticeStatus)
    except RPCError as error:
        if error.status is RPCStatusCode.NOT_FOUND:
            raise InputError(f"no running workflow for notice {notice_id!r}") from None
        raise


async def restart_input(pool: asyncpg.Pool, notice_id: str) -> NoticeInput:
    """The input of a new run of a notice's workflow, from its records: the notice as it stands.

    Its event counter starts past every event of the notice's stream, so the step keys of the new
    run never meet those of an earlier one.
    """
    row = await pool.fetchrow(
        "SELECT n.spec, n.phase, n.effective_at, n.window_closes_at,"
        " coalesce(s.version, 0) AS version FROM notices n"
        " LEFT JOIN event_streams s ON s.stream_id = $2"
        " WHERE n.notice_id = $1",
        notice_id,
        notice_stream(notice_id),
    )
    if row is None:
        raise InputError(f"no notice {notice_id!r}")
    spec = NoticeSpec.model_validate_json(row["spec"]).model_copy(
        update={"effective_at": row["effective_at"]}
    )
    state = NoticeState(
        phase=Phase(row["phase"]),
        effective_at=row["effective_at"],
        window_closes_at=row["window_closes_at"],
        event_seq=int(row["version"]),
        needs_activation_round=True,
        restarted=True,
    )
    return NoticeInput(spec=spec, author="", state=state)


async def wake(
    client: Client,
    pool: asyncpg.Pool,
    notice_id: str,
    signal: str = WAKE_SIGNAL,
    receipt_id: str | None = None,
    task_queue: str = TASK_QUEUE,
) -> None:
    """Signal the notice's workflow, starting a new run if the last one completed."""
    restart = await restart_input(pool, notice_id)
    await client.start_workflow(
        WORKFLOW_TYPE,
        restart,
        id=workflow_id(notice_id),
        task_queue=task_queue,
        start_signal=signal,
        start_signal_args=[{"receipt_id": receipt_id} if receipt_id else {}],
        # Used only when this starts a new run (the last one completed); a signal to a running
        # workflow leaves its summary alone.
        static_summary=static_summary(restart.spec),
        static_details=static_details(restart.spec, restarted=True),
    )


async def submit(
    client: Client | None,
    pool: asyncpg.Pool,
    notice_id: str,
    action: str,
    payload: dict[str, Any],
    *,
    channel: str = "cli",
    task_queue: str = TASK_QUEUE,
    wait_seconds: float = 20.0,
    connect_error: str | None = None,
    received_at: datetime | None = None,
) -> tuple[intake.Receipt, str | None]:
    """Record an action, wake its notice, and wait for the outcome of this very receipt.

    ``received_at`` is for a receipt time known better than "now" (a reply mail's arrival); by
    default the database sets it as it writes.
    """
    receipt = await receive(pool, notice_id, action, payload, channel, received_at)
    return await hand_over(
        client, pool, receipt, task_queue, wait_seconds=wait_seconds, connect_error=connect_error
    )


async def receive(
    pool: asyncpg.Pool,
    notice_id: str,
    action: str,
    payload: dict[str, Any],
    channel: str = "cli",
    received_at: datetime | None = None,
) -> intake.Receipt:
    """Write the action to the intake: the moment of receipt, before anything else can delay it."""
    await repository.notice_row(pool, notice_id)  # a clear "no notice" error
    return await intake.record(
        pool, notice_id, action, payload, channel=channel, received_at=received_at
    )


async def hand_over(
    client: Client | None,
    pool: asyncpg.Pool,
    receipt: intake.Receipt,
    task_queue: str = TASK_QUEUE,
    *,
    wait_seconds: float = 20.0,
    connect_error: str | None = None,
) -> tuple[intake.Receipt, str | None]:
    """Wake the receipt's notice and wait for its outcome.

    Returns the receipt as it stands and, when it is still pending, why (no worker has judged it
    yet, or Temporal could not be reached: it is durable in the intake either way, and the
    worker's sweeper wakes the notice for it later).
    """
    if not receipt.pending:
        return receipt, None
    problem = await try_wake(
        client, pool, receipt.notice_id, receipt.action, receipt.receipt_id, task_queue,
        connect_error=connect_error,
    )  # fmt: skip
    if problem:
        return receipt, problem
    return await outcome(pool, receipt, wait_seconds)


async def try_wake(
    client: Client | None,
    pool: asyncpg.Pool,
    notice_id: str,
    signal: str,
    receipt_id: str | None,
    task_queue: str = TASK_QUEUE,
    *,
    connect_error: str | None = None,
) -> str | None:
    """``wake``, saying why it could not instead of raising: the receipt is durable in the
    intake either way, and the worker's sweeper wakes the notice for it later."""
    if client is None:
        return f"Temporal is not reachable ({connect_error})"
    try:
        await wake(client, pool, notice_id, signal, receipt_id, task_queue)
    except RPCError as error:
        return f"Temporal refused the signal ({error.message})"
    except Exception as error:
        return f"could not wake the notice ({type(error).__name__}: {error})"
    return None


async def outcome(
    pool: asyncpg.Pool, receipt: intake.Receipt, wait_seconds: float, poll: float = 0.1
) -> tuple[intake.Receipt, str | None]:
    """The receipt once judged, or as it stands after ``wait_seconds`` with why it is pending."""
    judged = await intake.wait_for(pool, receipt.receipt_id, wait_seconds, poll)
    if judged is None or judged.pending:
        return judged or receipt, "no worker has judged it yet"
    return judged, None


async def sweep_intake(
    client: Client,
    pool: asyncpg.Pool,
    stop: asyncio.Event,
    task_queue: str = TASK_QUEUE,
    every: float = 5.0,
    older_than: float = 15.0,
    again_after: float = 300.0,
) -> None:
    """Wake notices whose receipts wait: the signal failed (Temporal was down), or it reached a run
    that completed before taking it. Runs in the worker beside the projector."""
    while not stop.is_set():
        try:
            waiting = await intake.notices_waiting(pool, older_than, again_after)
        except Exception as error:  # the sweeper must outlive any one failure
            log.warning("intake sweep failed; trying again", error=str(error)[:200])
            waiting = []
        for notice_id in waiting:
            try:
                log.info("waking notice for pending receipts", notice_id=notice_id)
                await wake(client, pool, notice_id, task_queue=task_queue)
            except Exception as error:  # one notice failing does not stop the others
                log.warning("could not wake notice", notice_id=notice_id, error=str(error)[:200])
                with contextlib.suppress(Exception):  # not woken: due again at the next sweep
                    await pool.execute(
                        "UPDATE intake SET kicked_at = NULL WHERE notice_id = $1"
                        " AND (status = 'pending' OR mail_due IS NOT NULL)",
                        notice_id,
                    )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every)
