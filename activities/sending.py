"""Sending the notice: approval check, audience snapshot, batched mailing, resends, change mail.

Thin adapters over :class:`noticeflow.application.sending.SendingService` (the SQL, the events and
the mail are the service's): the send heartbeats its cursor and resumes from the last one a
crashed attempt left, and hands over at once when the worker shuts down; an event no model
accepts fails the change mail for good."""

from __future__ import annotations

from temporalio import activity

from activities.deps import beating, handed_over_on_shutdown, lasting_faults_fail_for_good
from noticeflow.application.deps import Deps
from noticeflow.application.sending import SendingService
from noticeflow.contracts import (
    Activity,
    ApprovalCheck,
    AudienceRequest,
    ChangeMailRequest,
    ResendRequest,
    ResendResult,
    SendRequest,
    SendResult,
)


class SendingActivities:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.service = SendingService(deps)

    @activity.defn(name=Activity.check_approval)
    async def check_approval(self, request: AudienceRequest) -> ApprovalCheck:
        """Rule 6: the latest deadline any recipient would get if the notice went out now."""
        return await self.service.check_approval(request)

    @activity.defn(name=Activity.snapshot_audience)
    async def snapshot_audience(self, request: AudienceRequest) -> int:
        """Rule 3: freeze customers, contacts and terms as sending starts. Idempotent. Heartbeats
        while it runs: a million customers take a minute or two, in a few long statements."""
        with lasting_faults_fail_for_good():
            return await beating(self.service.snapshot_audience(request))

    @activity.defn(name=Activity.send_notices)
    async def send_notices(self, request: SendRequest) -> SendResult:
        """Mail every pending customer, a batch at a time, heartbeating the cursor (the last
        customer id recorded); a retry resumes after the cursor its predecessor heartbeated."""
        with lasting_faults_fail_for_good():
            async with handed_over_on_shutdown():
                details = activity.info().heartbeat_details
                start = str(details[0]) if details else ""
                return await self.service.send_notices(request, start, progress=activity.heartbeat)

    @activity.defn(name=Activity.resend_notice)
    async def resend_notice(self, request: ResendRequest) -> ResendResult:
        """Resend to a customer's current contacts (a new contact generation) — rule 4."""
        with lasting_faults_fail_for_good():
            return await self.service.resend_notice(request, progress=activity.heartbeat)

    @activity.defn(name=Activity.mail_change)
    async def mail_change(self, request: ChangeMailRequest) -> None:
        """Postponement or cancellation: record it, then tell every customer that was told."""
        with lasting_faults_fail_for_good():
            await self.service.mail_change(request, progress=activity.heartbeat)
