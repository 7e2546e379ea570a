"""Customers' responses: objections (with cases and acknowledgements), resolutions, opt-ins."""

from __future__ import annotations

import structlog
from temporalio import activity

from activities.deps import Deps, update_context
from activities.names import Activity
from activities.records import load_recipients, switch_subprocessor
from noticeflow import eventstore
from noticeflow.contracts import (
    ObjectionRequest,
    ObjectionResult,
    OptInRequest,
    OptInResult,
    ResolutionRequest,
    ResolutionResult,
)
from noticeflow.crypto import ensure_keys, seal
from noticeflow.domain.notice import NoticeSpec
from noticeflow.domain.rules import is_timely

OUTCOME_WORDS = {
    "withdrawn": "Your objection has been withdrawn; the sub-processor may be used for your organisation.",
    "excluded": "Your objection is upheld: the sub-processor will not be used for your organisation.",
    "terminated": "As agreed, the affected service will be terminated for your organisation.",
}


log = structlog.get_logger(__name__)


class ResponseActivities:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    async def _open_count(self, notice_id: str) -> int:
        return int(
            await self.deps.pool.fetchval(
                "SELECT count(*) FROM objections WHERE notice_id = $1 AND status = 'open'",
                notice_id,
            )
        )

    async def _mail_update(
        self, spec: NoticeSpec, customer_id: str, kind: str, headline: str, paragraphs: list[str]
    ) -> None:
        recipients = await load_recipients(self.deps.pool, spec.notice_id, [customer_id])
        if customer_id not in recipients:
            return
        await self.deps.mailer.mail_customer(
            self.deps.pool,
            spec.notice_id,
            recipients[customer_id],
            kind,
            "update",
            update_context(spec, headline, paragraphs),
        )

    async def _spec(self, notice_id: str) -> NoticeSpec:
        raw = await self.deps.pool.fetchval(
            "SELECT spec FROM notices WHERE notice_id = $1", notice_id
        )
        return NoticeSpec.model_validate_json(raw)

    @activity.defn(name=Activity.record_objection)
    async def record_objection(self, request: ObjectionRequest) -> ObjectionResult:
        """Rule 7: record with the time the workflow received it; open a case; acknowledge by mail."""
        objection = request.objection
        key = objection.key()
        stream = eventstore.notice_stream(request.notice_id)
        pool = self.deps.pool
        deadline_row = await pool.fetchrow(
            "SELECT deadline FROM recipients WHERE notice_id = $1 AND customer_id = $2",
            request.notice_id,
            objection.customer_id,
        )
        if deadline_row is None:
            reason = f"unknown customer {objection.customer_id!r}: not a recipient of this notice"
            await eventstore.append(
                pool,
                stream,
                f"objection-rejected/{key}",
                "objection_rejected",
                {
                    "customer_id": objection.customer_id,
                    "idempotency_key": key,
                    "reason": reason,
                    "channel": objection.channel,
                    "received_at": request.received_at,
                },
                request.received_at,
            )
            return ObjectionResult(
                outcome="rejected",
                reason=reason,
                open_objections=await self._open_count(request.notice_id),
            )
        timely = is_timely(request.received_at, deadline_row["deadline"])
        # Who objected and why are personal data: sealed with the customer's key (crypto-shredding).
        customer_key = (await ensure_keys(pool, [objection.customer_id]))[objection.customer_id]
        sealed_by = seal(customer_key, objection.customer_id, objection.by)
        sealed_reason = seal(customer_key, objection.customer_id, objection.reason)
        async with pool.acquire() as connection, connection.transaction():
            inserted = await connection.execute(
                "INSERT INTO objections (notice_id, idempotency_key, customer_id, received_at, channel,"
                " objected_by, reason, timely, status) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'open')"
                " ON CONFLICT DO NOTHING",
                request.notice_id,
                key,
                objection.customer_id,
                request.received_at,
                objection.channel,
                sealed_by,
                sealed_reason,
                timely,
            )
            new = inserted.endswith(" 1")
            if new:
                await eventstore.append(
                    connection,
                    stream,
                    f"objection/{key}",
                    "objection_received",
                    {
                        "customer_id": objection.customer_id,
                        "idempotency_key": key,
                        "timely": timely,
                        "channel": objection.channel,
                        "by": sealed_by,
                        "reason": sealed_reason,
                        "received_at": request.received_at,
                        "deadline": deadline_row["deadline"],
                    },
                    request.received_at,
                )
                await connection.execute(
                    "UPDATE recipients SET settled = false WHERE notice_id = $1 AND customer_id = $2",
                    request.notice_id,
                    objection.customer_id,
                )
        log.info("objection", customer_id=objection.customer_id, key=key, timely=timely, new=new)
        spec = await self._spec(request.notice_id)
        await self._mail_update(
            spec,
            objection.customer_id,
            f"acknowledgement/{key}",
            "We have received your objection",
            [
                f"Your objection to {spec.subprocessor} was received on "
                f"{request.received_at.isoformat()} and is recorded as "
                f"{'timely' if timely else 'late (after your deadline)'}.",
                "Our privacy team will contact you to resolve it. Until then the sub-processor "
                "will not be used for your organisation"
                + ("." if timely else " unless the objection is resolved otherwise."),
            ],
        )
        return ObjectionResult(
            outcome="accepted" if new else "duplicate",
            timely=timely,
            open_objections=await self._open_count(request.notice_id),
        )

    @activity.defn(name=Activity.resolve_objection)
    async def resolve_objection(self, request: ResolutionRequest) -> ResolutionResult:
        """Close every open case of one customer with the outcome ops chose."""
        spec = request.spec
        resolution = request.resolution
        pool = self.deps.pool
        key = resolution.key()
        async with pool.acquire() as connection, connection.transaction():
            resolved = await connection.fetch(
                "UPDATE objections SET status = $3, resolved_by = $4, resolved_at = $5,"
                " resolution_note = $6 WHERE notice_id = $1 AND customer_id = $2 AND status = 'open'"
                " RETURNING idempotency_key",
                spec.notice_id,
                resolution.customer_id,
                resolution.outcome.value,
                resolution.by,
                request.at,
                resolution.note,
            )
            if not resolved:
                done = await connection.fetchval(
                    "SELECT 1 FROM events WHERE event_id = $1",
                    eventstore.event_id(
                        eventstore.notice_stream(spec.notice_id), f"resolution/{key}"
                    ),
                )
                if done:
                    return ResolutionResult(
                        outcome="duplicate", open_objections=await self._open_count(spec.notice_id)
                    )
                return ResolutionResult(
                    outcome="rejected",
                    reason=f"customer {resolution.customer_id!r} has no open objection on this notice",
                )
            await eventstore.append(
                connection,
                eventstore.notice_stream(spec.notice_id),
                f"resolution/{key}",
                "objection_resolved",
                {
                    "customer_id": resolution.customer_id,
                    "outcome": resolution.outcome.value,
                    "by": resolution.by,
                    "note": resolution.note,
                    "objections": [row["idempotency_key"] for row in resolved],
                },
                request.at,
            )
            await connection.execute(
                "UPDATE recipients SET settled = false WHERE notice_id = $1 AND customer_id = $2",
                spec.notice_id,
                resolution.customer_id,
            )
        await self._mail_update(
            spec,
            resolution.customer_id,
            f"resolution/{key}",
            "Your objection has been resolved",
            [OUTCOME_WORDS[resolution.outcome.value]]
            + ([resolution.note] if resolution.note else []),
        )
        return ResolutionResult(
            outcome="resolved", open_objections=await self._open_count(spec.notice_id)
        )

    @activity.defn(name=Activity.record_opt_in)
    async def record_opt_in(self, request: OptInRequest) -> OptInResult:
        """Rule 8: opt in, or revoke (before or after activation; after, it switches off at once)."""
        spec = request.spec
        pool = self.deps.pool
        async with pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(
                "SELECT opted_in, activated FROM recipients WHERE notice_id = $1 AND customer_id = $2"
                " FOR UPDATE",
                spec.notice_id,
                request.customer_id,
            )
            if row is None:
                return OptInResult(
                    outcome="rejected",
                    reason=f"unknown customer {request.customer_id!r}: not a recipient of this notice",
                )
            if row["opted_in"] == request.opted_in:
                return OptInResult(outcome="unchanged")
            await connection.execute(
                "UPDATE recipients SET opted_in = $3, opted_in_at = $4, settled = false,"
                " activated = activated AND $3 WHERE notice_id = $1 AND customer_id = $2",
                spec.notice_id,
                request.customer_id,
                request.opted_in,
                request.at,
            )
            stream = eventstore.notice_stream(spec.notice_id)
            await eventstore.append(
                connection,
                stream,
                f"opt-in/{request.key}",
                "opt_in_recorded" if request.opted_in else "opt_in_revoked",
                {
                    "customer_id": request.customer_id,
                    "by": seal(
                        (await ensure_keys(connection, [request.customer_id]))[request.customer_id],
                        request.customer_id,
                        request.by,
                    ),
                    "channel": request.channel,
                },
                request.at,
            )
            if row["activated"] and not request.opted_in:
                await switch_subprocessor(
                    connection,
                    spec.notice_id,
                    spec.subprocessor,
                    request.customer_id,
                    False,
                    request.at,
                    "opt_in_revoked",
                )
        return OptInResult(outcome="recorded")
