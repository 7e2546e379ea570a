"""Webhook delivery: a thin adapter over :class:`noticeflow.webhooks.Deliverer`.

A transient failure (timeout, connection error, 408/425/429/5xx) has recorded its attempt and
fails the activity with the delivery's own next delay (``next_retry_delay``): Temporal waits that
long and retries the same subscription, whose oldest pending delivery is that one again. A
delivery that fails for good (or whose 24 h are up) is recorded as failed inside the activity, and
the next one proceeds. A missing key for the stored secret (configuration: transient) is retried
every ten minutes, never a failed workflow; a secret that does not open under its key (the row was
altered: lasting) fails the subscription's pending deliveries, recorded, and ends the workflow."""

from __future__ import annotations

from datetime import timedelta

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities.deps import handed_over_on_shutdown
from noticeflow.contracts import Activity, WebhookRequest, WebhookRound
from noticeflow.webhooks import Deliverer, RetryLater, SecretKeyMissing

CONFIGURATION_RETRY = timedelta(minutes=10)
log = structlog.get_logger(__name__)


class WebhookActivities:
    def __init__(self, deliverer: Deliverer) -> None:
        self.deliverer = deliverer

    @activity.defn(name=Activity.deliver_webhooks)
    async def deliver_webhooks(self, request: WebhookRequest) -> WebhookRound:
        try:
            async with handed_over_on_shutdown():
                done = await self.deliverer.deliver_pending(
                    request.subscription_id, request.batch, progress=activity.heartbeat
                )
        except RetryLater as retry:
            # Benign: the deliverer has logged the attempt in one line; Temporal logs a benign
            # failure at DEBUG (otherwise a WARNING with the whole traceback, every retry).
            raise ApplicationError(
                str(retry),
                type="WebhookRetry",
                non_retryable=False,
                next_retry_delay=retry.delay,
                category=ApplicationErrorCategory.BENIGN,
            ) from None
        except SecretKeyMissing as error:
            log.warning(
                "webhook secret key missing; will retry",
                subscription_id=request.subscription_id,
                retry_in_seconds=CONFIGURATION_RETRY.total_seconds(),
            )
            raise ApplicationError(
                str(error),
                type="WebhookUnavailable",
                non_retryable=False,
                next_retry_delay=CONFIGURATION_RETRY,
                category=ApplicationErrorCategory.BENIGN,
            ) from None
        return WebhookRound(
            delivered=done.delivered,
            failed=done.failed,
            more=done.more,
            stopped=done.stopped,
            reason=done.reason,
        )
