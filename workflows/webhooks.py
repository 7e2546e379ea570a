"""WebhookDelivery: one workflow per webhook subscription (id ``webhook-<subscription id>``,
on the webhooks' own task queue), which delivers its subscription's outbox in order.

Each round is one ``deliver_webhooks`` activity: it POSTs the pending deliveries oldest first and
returns when none is left (or after a batch). A transient failure fails the activity with that
delivery's own delay, and Temporal retries it (at-least-once; the receiver sees the same
``webhook-id``); the activity itself gives a delivery up after 24 h and moves on, so the retries
are bounded and one dead endpoint holds only its own subscription. Between rounds the workflow
sleeps until woken: the outbox follower signals ``wake`` when it writes a delivery, and every
minute for each subscription whose oldest pending delivery is due (a wake lost while Temporal was
away; one in retry backoff is not woken).
No timer of its own: an idle subscription costs no history (and a time-skipping test server
skips no polling rounds). A removed subscription ends it. The history stays flat: continue-as-new every 100
rounds or when the server suggests it; the state carried is the subscription id only.

Deterministic: only the activity interface and the workflow clock."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

from noticeflow.activity_interfaces import Webhooks
from noticeflow.contracts import (
    WEBHOOK_WAKE_SIGNAL,
    WEBHOOK_WORKFLOW_TYPE,
    WebhookRequest,
)

ROUNDS_PER_RUN = 100
# Only the activity's own faults use this policy's intervals (a database away, a worker gone): a
# failed POST says its own delay (next_retry_delay), from 5 s doubling to at most an hour.
RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(hours=1),
    maximum_attempts=0,
)


@workflow.defn(name=WEBHOOK_WORKFLOW_TYPE)
class WebhookWorkflow:
    def __init__(self) -> None:
        self.woken = False

    @workflow.signal(name=WEBHOOK_WAKE_SIGNAL)
    def wake(self) -> None:
        self.woken = True

    @workflow.run
    async def run(self, subscription_id: str) -> str:
        for _ in range(ROUNDS_PER_RUN):
            self.woken = False  # a wake during the round is kept for the next
            done = await workflow.execute_activity_method(
                Webhooks.deliver_webhooks,
                WebhookRequest(subscription_id=subscription_id),
                start_to_close_timeout=timedelta(minutes=30),
                heartbeat_timeout=timedelta(minutes=1),
                retry_policy=RETRY,
                summary="deliver pending webhooks",
            )
            if done.stopped:
                return done.reason or "removed"
            if workflow.info().is_continue_as_new_suggested():
                break
            if not done.more:
                await workflow.wait_condition(lambda: self.woken)
        workflow.continue_as_new(subscription_id)
