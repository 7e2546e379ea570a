"""`noticeflow worker`: registers NoticeWorkflow and its activities on the task queue."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import structlog
from temporalio import activity
from temporalio.client import Client
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    Worker,
)

from activities.intake import IntakeActivities
from activities.lifecycle import LifecycleActivities
from activities.notice_events import NoticeEventActivities
from activities.reminders import ReminderActivities
from activities.sending import SendingActivities
from activities.webhooks import WebhookActivities
from noticeflow import crypto, db, keyring, subscriptions, webhooks
from noticeflow.application.deps import Deps
from noticeflow.config import Settings, install_keys
from noticeflow.contracts import notice_id_of, send_task_queue, webhook_task_queue
from noticeflow.control import sweep_intake
from noticeflow.links import LinkSigner
from noticeflow.mail import MailRenderer, SmtpTarget
from noticeflow.mailer import Mailer
from noticeflow.projections import run_projections
from noticeflow.replies.tokens import ReplyAddresses
from noticeflow.temporal import connect, metrics_runtime
from workflows.notice import NoticeWorkflow
from workflows.webhooks import WebhookWorkflow

log = structlog.get_logger()


class _BindLogContext(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        workflow_id = info.workflow_id or ""
        with structlog.contextvars.bound_contextvars(
            workflow_id=workflow_id,
            notice_id=notice_id_of(workflow_id) or "",
            activity=info.activity_type,
            attempt=info.attempt,
        ):
            if info.attempt >= ALERT_ATTEMPTS:
                # Only transient faults retry; this many in a row needs a person (alert on it).
                log.warning("activity still retrying", attempt=info.attempt)
            return await super().execute_activity(input)


ALERT_ATTEMPTS = 5


class LogContextInterceptor(Interceptor):
    """Binds notice id and workflow id into every log line an activity writes, and warns when an
    activity keeps retrying (an alert-worthy attempt count)."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _BindLogContext(next)


def activities_for(
    deps: Deps,
    sending: SendingActivities | None = None,
    webhook: WebhookActivities | None = None,
) -> Sequence[Callable[..., Any]]:
    sending, intake, lifecycle = (
        sending or SendingActivities(deps),
        IntakeActivities(deps),
        LifecycleActivities(deps),
    )
    return [
        sending.check_approval,
        sending.snapshot_audience,
        sending.send_notices,
        sending.resend_notice,
        sending.mail_change,
        intake.process_intake,
        intake.settle_receipt,
        lifecycle.append_event,
        lifecycle.record_phase,
        lifecycle.read_totals,
        lifecycle.load_notice_record,
        lifecycle.activate_due,
        ReminderActivities(deps).send_reminders,
        NoticeEventActivities(deps).record_notice_event,
        # Runs on the webhooks' own queue (build_worker); listed here too, as every activity the
        # worker knows (tests/workflows/test_activity_interfaces.py).
        (webhook or WebhookActivities(webhooks.Deliverer(deps.pool))).deliver_webhooks,
    ]


SEND_SLOTS: int = Settings.model_fields["send_slots"].default  # NOTICEFLOW_SEND_SLOTS


class NoticeWorkers:
    """The two Temporal workers of one `noticeflow worker`, started and stopped together: the
    notice workflows and their activities on ``task_queue``, and the sending shards on its send
    queue (contracts.send_task_queue), at most ``send_slots`` at once, so that one notice's
    shards slide over every worker instead of piling onto the first to poll."""

    def __init__(self, *workers: Worker) -> None:
        self.workers = workers
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> NoticeWorkers:
        async with contextlib.AsyncExitStack() as stack:
            for worker in self.workers:
                await stack.enter_async_context(worker)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Both at once (each hands its activities over on shutdown), then each one's exit.
        await asyncio.gather(*(worker.shutdown() for worker in self.workers))
        await self._stack.aclose()


def build_worker(
    client: Client,
    deps: Deps,
    task_queue: str,
    send_slots: int = SEND_SLOTS,
    deliverer: webhooks.Deliverer | None = None,
) -> NoticeWorkers:
    common: dict[str, Any] = dict(
        interceptors=[LogContextInterceptor()],
        # Heartbeats carry cancellations back: at most two seconds apart, a cancelled notice
        # stops mailing within seconds (the default is 80% of the heartbeat timeout).
        max_heartbeat_throttle_interval=timedelta(seconds=2),
        default_heartbeat_throttle_interval=timedelta(seconds=2),
    )
    sending = SendingActivities(deps)
    webhook = WebhookActivities(deliverer or webhooks.Deliverer(deps.pool))
    return NoticeWorkers(
        Worker(
            client,
            task_queue=task_queue,
            workflows=[NoticeWorkflow],
            # send_notices stays here too: a notice whose mailing started before shards existed
            # mails its whole audience in one activity on this queue.
            activities=activities_for(deps, sending, webhook),
            max_concurrent_activities=20,
            **common,
        ),
        Worker(
            client,
            task_queue=send_task_queue(task_queue),
            activities=[sending.send_notices],
            max_concurrent_activities=send_slots,
            **common,
        ),
        # Webhook deliveries on their own queue (docs/webhooks.md): a slow or dead endpoint
        # holds none of the slots a notice's activities need.
        Worker(
            client,
            task_queue=webhook_task_queue(task_queue),
            workflows=[WebhookWorkflow],
            activities=[webhook.deliver_webhooks],
            max_concurrent_activities=10,
            **common,
        ),
    )


def make_deps(
    pool: Any,
    smtp_url: str,
    mail_from: str,
    template_dir: Any = None,
    send_batch_size: int = 200,
    smtp_concurrency: int = 4,
    smtp_rate: float | None = None,
    secret_key: str | list[str] | None = None,
    public_url: str = Settings.model_fields["public_url"].default,
    smtp_give_up_after: timedelta = Settings.model_fields["smtp_give_up_after"].default,
    smtp_relay_rate: float | None = None,
    reply_address: str | None = None,
    smtp_pipelining: bool = True,
) -> Deps:
    # Replies (docs/replies.md): each customer's Reply-To, one HMAC per mail; None: none.
    replies = ReplyAddresses.configured(reply_address)
    mailer = Mailer(
        SmtpTarget.from_url(smtp_url),
        mail_from,
        MailRenderer(template_dir),
        smtp_concurrency,
        smtp_rate,
        smtp_give_up_after,
        smtp_relay_rate,
        reply_to=replies.for_recipient if replies else None,
        pipelining=smtp_pipelining,
    )
    # No default key: the link keys given (current first), else the process's installed ones.
    links = LinkSigner(secret_key or list(keyring.installed().keys["link"]), public_url)
    return Deps(pool=pool, mailer=mailer, links=links, send_batch_size=send_batch_size)


def build_deps(settings: Settings, pool: Any) -> Deps:
    return make_deps(
        pool,
        settings.require_smtp_url(),
        settings.mail_from,
        settings.template_dir,
        settings.send_batch_size,
        settings.smtp_concurrency,
        settings.smtp_rate,
        settings.verification_keys,
        settings.public_url,
        settings.smtp_give_up_after,
        settings.smtp_relay_rate,
        settings.reply_address,
        settings.smtp_pipelining,
    )


async def run_worker(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT (or ``stop``), then finish in-flight tasks and exit. Refuses to
    start without real keys (all four: an InputError naming every problem, before anything)."""
    os.umask(0o077)  # whatever the worker writes is its owner's alone
    install_keys(settings)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    database_url = settings.require_database_url()
    # The SDK's own metrics on their own port (NOTICEFLOW_WORKER_METRICS_ADDRESS), before anything
    # else: a taken port is a clear error at once.
    runtime = None
    if settings.worker_metrics_address:
        runtime = metrics_runtime(settings.worker_metrics_address)
    await db.upgrade_as_owner(database_url, settings.owner_database_url)  # no DDL as runtime
    pool = await db.create_pool(database_url)
    try:
        # A customer key this process cannot unwrap would fail every action for that customer,
        # again and again: refuse to start instead, naming the key-encryption keys (exit 2).
        await crypto.require_keks(pool)
        if await db.runs_as_owner(pool):
            log.warning(db.OWNER_WARNING)
        client = await connect(settings, runtime=runtime)
        worker = build_worker(
            client,
            build_deps(settings, pool),
            settings.task_queue,
            settings.send_slots,
            webhooks.Deliverer(
                pool,
                allow_private=settings.webhooks_allow_private,
                give_up_after=settings.webhooks_give_up_after,
            ),
        )
        log.info(
            "worker started",
            task_queue=settings.task_queue,
            send_task_queue=send_task_queue(settings.task_queue),
            send_slots=settings.send_slots,
            temporal=settings.temporal_address,
            metrics=f"http://{settings.worker_metrics_address}/metrics"
            if settings.worker_metrics_address
            else None,
        )
        projector = asyncio.create_task(run_projections(pool, stop), name="projections")
        sweeper = asyncio.create_task(
            sweep_intake(client, pool, stop, settings.task_queue), name="intake-sweeper"
        )
        outbox = asyncio.create_task(
            webhooks.run_outbox(pool, webhooks.temporal_waker(client, settings.task_queue), stop),
            name="webhook-outbox",
        )
        # Informational mails to the public list's subscribers (docs/public.md): their own loop
        # and SMTP connection, beside the notices, never holding one.
        subscriber_mail = asyncio.create_task(
            subscriptions.run(
                pool,
                subscriptions.SubscriberMailer.configured(
                    pool,
                    settings.require_smtp_url(),
                    settings.mail_from,
                    settings.verification_keys,
                    settings.public_url,
                    settings.template_dir,
                    relay_rate=settings.smtp_relay_rate,  # the relay's pace, shared
                    pipelining=settings.smtp_pipelining,
                ),
                stop,
            ),
            name="subscriber-mail",
        )
        async with worker:
            await stop.wait()
            log.info("worker stopping")
        await projector
        await sweeper
        await outbox
        await subscriber_mail
    finally:
        await pool.close()
