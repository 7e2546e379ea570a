"""Sending the notice: approval check, audience snapshot, batched mailing, resends, change mail.

The service the sending activities (activities/sending.py) adapt: its long loops report progress
(the last customer id recorded, which a retried send resumes after) through a callback."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from noticeflow import eventstore, notice_actions, records
from noticeflow.application.deps import Deps, Progress, mail_update
from noticeflow.application.notice_events import workflow_event
from noticeflow.application.shared import AUDIENCE_FILTER, audience_args, load_recipients
from noticeflow.calendar import DeadlineCalendar, deadline_calendar
from noticeflow.cancelling import finish_despite_cancel
from noticeflow.contracts import (
    MAX_SEND_SHARDS,
    ApprovalCheck,
    AudienceRequest,
    ChangeMailRequest,
    ResendRequest,
    ResendResult,
    SendRequest,
    SendResult,
)
from noticeflow.crypto import CustomerKey, Field
from noticeflow.domain import events
from noticeflow.domain import language as lang
from noticeflow.domain.deadlines import WindowUnit, customer_deadline
from noticeflow.domain.notice import NoticeSpec
from noticeflow.domain.render import mail_context, update_context
from noticeflow.domain.rules import ChangeKind, Delivery
from noticeflow.mail import TemporarySmtpError
from noticeflow.mailer import (
    ContactOutcome,
    MailingDeferred,
    MailingInterrupted,
    MailJob,
    Recipient,
    accepted_at,
    text_version,
    utcnow,
)

HEARTBEAT_EVERY = 10.0
HEARTBEAT_MIN = 1.0  # seconds between the heartbeats of finished messages


async def _heartbeat_every(seconds: float, cursor: str, progress: Progress) -> None:
    while True:
        await asyncio.sleep(seconds)
        progress(cursor)


# Seconds a mailed batch's record may take to end once the send is cancelled.
RECORD_GRACE = 30.0


_T = TypeVar("_T")


async def to_the_end(work: Awaitable[_T]) -> _T:
    """Await ``work`` (a mailed batch's record) to its end even when cancelled meanwhile, within
    RECORD_GRACE; the cancellation then goes on. A cancellation mail goes to every customer
    recorded as reached: what was mailed is recorded before a cancelled send stops."""
    return await finish_despite_cancel(work, RECORD_GRACE)


@dataclass(frozen=True)
class Delivered:
    customer_id: str
    outcomes: list[ContactOutcome]
    first: datetime | None
    delivered_at: datetime | None
    deadline: datetime | None
    held: str | None = None  # a contact only got 4xx replies (the last one's code): stays pending
    key: CustomerKey | None = None  # the customer's: the replies' texts go sealed into the event


def _deadline(spec: NoticeSpec, delivered_at: datetime, row: dict) -> datetime | None:
    """The customer's deadline for a delivery at ``delivered_at``; none for a removal (it is
    informational: no window)."""
    if spec.kind is ChangeKind.removal:
        return None
    return customer_deadline(
        delivered_at,
        spec.objection_window,
        row["timezone"],
        row["window_days"],
        WindowUnit(row["window_unit"] or "calendar"),
        country=row["country"],
    )


def _delivery_event(result: Delivered) -> type[events.NoticeDelivered | events.NoticeUndelivered]:
    """The delivery event's model (schema version 2: each contact's reply as code, enhanced status
    and the text sealed with the customer's key, "<event type>.smtp_text"; see events.py)."""
    return events.NoticeDelivered if result.first else events.NoticeUndelivered


def _contact(result: Delivered, outcome: ContactOutcome) -> events.ContactAttempt:
    """One contact's outcome in a delivery event: the reply's code and enhanced status, which
    identify nobody, and its text sealed for this event (it may echo the address or a name)."""
    reply = outcome.reply
    field = Field.event(_delivery_event(result).type, "smtp_text")
    return events.ContactAttempt(
        position=outcome.position,
        message_id=outcome.message_id,
        status=outcome.status,
        smtp_code=reply.code,
        smtp_status=reply.status,
        smtp_text=result.key.seal(field, reply.text) if result.key else None,
        at=outcome.at,
        text_sha256=outcome.text_sha256,
    )


def _frozen_audience(
    rows: list[Any], total: int, part: int | None, parts: int | None, after: str | None
) -> events.AudienceSnapshotted:
    """The event freezing ``rows`` (the whole audience, or one part of it in id order): their
    ids, timezones and terms, and the SHA-256 of the rows it holds."""
    # A general authorisation (the default) is left out of the digest and the terms, so an
    # audience of general contracts hashes as it did before modes existed.
    frozen = [events.frozen_terms_row({k: v for k, v in row.items() if k != "audience"})
              for row in rows]  # fmt: skip
    digest = hashlib.sha256(json.dumps(frozen, default=str, sort_keys=True).encode()).hexdigest()
    return events.AudienceSnapshotted(
        customers=total,
        snapshot_sha256=digest,
        customer_ids=[row["customer_id"] for row in rows],
        timezones={row["customer_id"]: row["timezone"] for row in rows},
        terms={
            row["customer_id"]: events.CustomerTerms(
                region=row["region"],
                services=list(row["services"]),
                window_days=row["window_days"],
                window_unit=row["window_unit"],
                country=row["country"],
                authorisation=frozen_row.get("authorisation"),
                language=frozen_row.get("language"),
            )
            for row, frozen_row in zip(rows, frozen, strict=True)
        },
        part=part,
        parts=parts,
        after=after,
    )


class SendingService:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    async def check_approval(self, request: AudienceRequest) -> ApprovalCheck:
        """Rule 6: the latest deadline any recipient would get if the notice went out now."""
        terms = await self.deps.pool.fetch(
            "SELECT c.timezone, c.window_days, c.window_unit, c.country, count(*) AS customers,"
            " min(c.customer_id) AS example"
            f" FROM customers c WHERE {AUDIENCE_FILTER}"
            " GROUP BY c.timezone, c.window_days, c.window_unit, c.country",
            *audience_args(request.spec),
        )
        size = sum(row["customers"] for row in terms)
        projected = [
            (deadline, row["example"])
            for row in terms
            if (deadline := _deadline(request.spec, request.at, dict(row))) is not None
        ]  # (none for a removal: no window, so no deadline can fall after its date)
        latest, customer_id = max(projected, default=(None, None))
        return ApprovalCheck(
            audience_size=size, latest_projected_deadline=latest, latest_customer_id=customer_id
        )

    async def snapshot_audience(self, request: AudienceRequest) -> int:
        """Rule 3: freeze customers, contacts and terms as sending starts. Idempotent.

        The audience is read through a cursor and frozen a part at a time (at most
        ``audience_part_size`` customers per event, all parts in this one transaction), so
        neither an event nor this worker's memory grows with the audience."""
        spec = request.spec
        size = self.deps.audience_part_size
        async with self.deps.pool.acquire() as connection, connection.transaction():
            # Done already (a retry after a lost completion): the frozen audience's size, from
            # its event (an audience frozen empty has no rows to count, but has its event).
            frozen = await connection.fetchval(
                "SELECT data->>'customers' FROM events WHERE stream_id = $1"
                " AND event_type = 'audience_snapshotted' ORDER BY stream_version LIMIT 1",
                eventstore.notice_stream(spec.notice_id),
            )
            if frozen is not None:
                return int(frozen)
            # The audience, as one snapshot of the customers (the cursor's), with its size:
            # its rows are the events' projection (noticeflow/records.py).
            cursor = await connection.cursor(
                "SELECT c.customer_id, c.region, c.services, c.timezone, c.window_days,"
                " c.window_unit, c.country, c.authorisation, c.language,"
                " count(*) OVER () AS audience"
                f" FROM customers c WHERE {AUDIENCE_FILTER}"
                " ORDER BY c.customer_id",
                *audience_args(spec),
            )
            rows = await cursor.fetch(size)
            total = int(rows[0]["audience"]) if rows else 0
            parts = -(-total // size) if total > size else None
            part, after = 1, None
            while True:
                await records.record_one(
                    connection,
                    eventstore.notice_stream(spec.notice_id),
                    "audience-snapshot" if parts is None else f"audience-snapshot/part-{part}",
                    _frozen_audience(rows, total, part if parts else None, parts, after),
                    request.at,
                )
                if parts is None or part >= parts:
                    break
                part, after = part + 1, rows[-1]["customer_id"]
                rows = await cursor.fetch(size)
            # The contacts as they stand (an input, frozen beside the audience).
            await connection.execute(
                "INSERT INTO recipient_contacts (notice_id, customer_id, generation, position, email,"
                " snapshot_at) SELECT r.notice_id, r.customer_id, 1, cc.position, cc.email, $2"
                " FROM recipients r JOIN customer_contacts cc USING (customer_id)"
                " WHERE r.notice_id = $1",
                spec.notice_id,
                request.at,
            )
            return total

    async def send_notices(
        self, request: SendRequest, start: str, progress: Progress
    ) -> SendResult:
        """Mail every pending customer of the request's shard after ``start`` (a resumed run's
        cursor, else ""), a batch at a time, reporting the cursor.

        A bounded number of shards (contracts.send_shards) keeps the workflow's history flat
        whatever the number of customers, and lets every worker send. After each batch is
        recorded, ``progress`` is told the last customer id; a retry after a crash resumes
        there (and re-selects only customers still pending, so nothing recorded is mailed again;
        the ledger covers the unrecorded rest).
        """
        after = start
        # A resumed run goes on from its cursor, then round to the customers before it (those an
        # earlier run held back because a contact only got 4xx replies are still pending).
        until: str | None = None
        held: list[Delivered] = []
        totals = SendResult(processed=0, delivered=0, undelivered=0)
        # One shard of several: only its customers (send_shard, migration 018). A large audience
        # is always sent in MAX_SEND_SHARDS, which an index serves (its expression written out:
        # migration 022); a smaller one scans its few rows.
        in_shard, shard_args = "", []
        if request.shards == MAX_SEND_SHARDS:
            in_shard, shard_args = (
                f" AND send_shard(customer_id, {MAX_SEND_SHARDS}) = $4",
                [request.shard],
            )
        elif request.shards > 1:
            in_shard, shard_args = (
                " AND send_shard(customer_id, $4) = $5",
                [
                    request.shards,
                    request.shard,
                ],
            )
        # The round back to the cursor stops at it, compared in the database (its collation's
        # order, as `customer_id > $2` and the ORDER BY; Python's order of the ids may differ).
        upto = (
            f" AND (${4 + len(shard_args)}::text IS NULL OR customer_id <= ${4 + len(shard_args)})"
        )
        while True:
            rows = await self.deps.pool.fetch(
                "SELECT customer_id, timezone, window_days, window_unit, country, authorisation,"
                " language FROM recipients"
                " WHERE notice_id = $1 AND delivery = 'pending' AND customer_id > $2"
                + in_shard
                + upto
                + " ORDER BY customer_id LIMIT $3",
                request.spec.notice_id,
                after,
                self.deps.send_batch_size,
                *shard_args,
                until,
            )
            if not rows:
                if start and until is None:
                    after, until = "", start
                    continue
                if held:  # the activity's retry (bounded backoff) tries them again
                    raise TemporarySmtpError(
                        f"{len(held)} customer(s) still pending: a contact only gets temporary"
                        f" replies, the last {held[-1].held}; recorded as failed once tried for"
                        " NOTICEFLOW_SMTP_GIVE_UP_AFTER"
                    )
                return totals
            results = await self._send_batch(
                request.spec, [dict(row) for row in rows], request.at, after, progress
            )
            held += [r for r in results if r.held]
            results = [r for r in results if not r.held]
            # Recorded to the end even if a cancel arrives meanwhile: these customers were
            # mailed, and the cancellation mail must find them.
            await to_the_end(self._record(request.spec, "notice", results, request.at))
            after = rows[-1]["customer_id"]
            progress(after)
            delivered = sum(r.first is not None for r in results)
            totals = SendResult(
                processed=totals.processed + len(results),
                delivered=totals.delivered + delivered,
                undelivered=totals.undelivered + len(results) - delivered,
            )

    async def _send_batch(
        self,
        spec: NoticeSpec,
        rows: list[dict[str, Any]],
        at: datetime,
        cursor: str,
        progress: Progress,
    ) -> list[Delivered]:
        recipients = await load_recipients(
            self.deps.pool, spec.notice_id, [row["customer_id"] for row in rows]
        )
        return await self._deliver(spec, rows, recipients, "notice", at, cursor, progress)

    async def _deliver(
        self,
        spec: NoticeSpec,
        rows: list[dict[str, Any]],
        recipients: dict[str, Recipient],
        kind: str,
        at: datetime,
        cursor: str,
        progress: Progress,
    ) -> list[Delivered]:
        """Mail customers' contacts (through the ledger); recording is done in bulk after."""
        now = max(utcnow(), at)
        jobs = []
        # The deadline and the mail's context once per distinct terms in the batch, not per
        # customer (the context renders the notice text twice: for itself and for its hash);
        # only the signed links are the customer's own.
        deadlines: dict[tuple[Any, ...], datetime | None] = {}
        shared: dict[tuple[Any, ...], dict[str, Any]] = {}
        calendars: dict[tuple[Any, ...], DeadlineCalendar] = {}
        for row in rows:
            if row["customer_id"] not in recipients:
                continue
            terms = (row["timezone"], row["window_days"], row["window_unit"], row["country"])
            if terms not in deadlines:
                deadlines[terms] = _deadline(spec, now, row)
            projected = deadlines[terms]
            links = (  # a removal is informational: no deadline, nothing to act on
                self.deps.links.links_for(
                    spec.notice_id, row["customer_id"], projected, spec.effective_at
                )
                if projected is not None
                else {}
            )
            authorisation = row.get("authorisation", "general")
            language = row.get("language") or "en"
            common = (row["timezone"], projected, authorisation, language)
            if common not in shared:
                shared[common] = mail_context(
                    spec, row["timezone"], projected, {}, authorisation, language
                )
                # The deadline as a calendar event, once per (language, deadline, timezone).
                if projected is not None:
                    moment = (language, projected, row["timezone"])
                    if moment not in calendars:
                        calendars[moment] = deadline_calendar(
                            notice_id=spec.notice_id,
                            subprocessor=spec.subprocessor,
                            deadline=projected,
                            timezone=row["timezone"],
                            language=language,
                            stamp=at,
                        )
                    shared[common]["calendar"] = calendars[moment]
            jobs.append(MailJob(recipients[row["customer_id"]], {**shared[common], **links}))
        held: dict[str, str] = {}
        last_beat = 0.0

        def beat() -> None:
            # A heartbeat per finished message cost the worker ~15% of its CPU per mail (the SDK
            # encodes and hands every one to its core, which only sends a few): at most one per
            # HEARTBEAT_MIN, and the timer below covers a message that takes long.
            nonlocal last_beat
            now = time.monotonic()
            if now - last_beat >= HEARTBEAT_MIN:
                last_beat = now
                progress(cursor)

        # Alive while one slow message is out (a heartbeat only per finished message would let a
        # server that takes minutes to reply pass the heartbeat timeout: a second attempt would
        # start beside this one).
        beating = asyncio.create_task(_heartbeat_every(HEARTBEAT_EVERY, cursor, progress))
        try:
            outcomes = await self.deps.mailer.mail_many(
                self.deps.pool,
                spec.notice_id,
                kind,
                "notice",
                jobs,
                progress=lambda _sent: beat(),
            )
        except MailingDeferred as deferred:
            # Everyone else was tried; customers with a contact that only got 4xx replies are
            # held (not recorded: they stay pending and are tried again later).
            outcomes, held = deferred.outcomes, deferred.deferred
        except MailingInterrupted as stop:
            # Cancelled part-way: record the customers already reached (their clocks started,
            # and a cancellation mail must find them), then let the cancel through. The rest
            # stay pending; a resumed send finds their outcomes in the ledger.
            reached = [
                r for r in self._results(spec, rows, recipients, stop.outcomes, at) if r.first
            ]
            await to_the_end(self._record(spec, kind, reached, at))
            raise
        finally:
            beating.cancel()
        return self._results(spec, rows, recipients, outcomes, at, held)

    @staticmethod
    def _results(
        spec: NoticeSpec,
        rows: list[dict[str, Any]],
        recipients: dict[str, Recipient],
        outcomes: dict[str, list[ContactOutcome]],
        at: datetime,
        held: dict[str, str] | None = None,
    ) -> list[Delivered]:
        results = []
        for row in rows:
            mailed = outcomes.get(row["customer_id"], [])
            first = accepted_at(mailed)
            # The clock never starts before the workflow asked for the mail (keeps time-skipped
            # runs true).
            delivered_at = max(first, at) if first else None
            deadline = _deadline(spec, delivered_at, row) if delivered_at else None
            recipient = recipients.get(row["customer_id"])
            results.append(Delivered(
                row["customer_id"], mailed, first, delivered_at, deadline,
                (held or {}).get(row["customer_id"]), recipient.key if recipient else None,
            ))  # fmt: skip
        return results

    async def _record(
        self, spec: NoticeSpec, kind: str, results: list[Delivered], at: datetime
    ) -> None:
        """One transaction for a whole batch: the delivery events and their projection, the
        recipients' delivery state (noticeflow/records.py)."""
        if not results:
            return
        stream = eventstore.notice_stream(spec.notice_id)
        async with self.deps.pool.acquire() as connection, connection.transaction():
            # The stream's lock first (it takes no transaction id), so what is read here cannot
            # change before the append (a resend of the same customer waits); then read, append
            # and project: the append is this transaction's first write (see eventstore).
            await connection.execute(eventstore.LOCK_SQL, stream)
            current = dict(await connection.fetch(
                "SELECT customer_id, delivery FROM recipients WHERE notice_id = $1"
                " AND customer_id = ANY($2::text[])",
                spec.notice_id, [r.customer_id for r in results],
            ))  # fmt: skip
            await records.record(connection, stream, [
                eventstore.NewEvent.of(
                    stream,
                    f"{kind}/{r.customer_id}",
                    _delivery_event(r)(
                        customer_id=r.customer_id,
                        kind=kind,
                        delivered_at=r.delivered_at,
                        deadline=r.deadline,
                        clock_started=r.first is not None
                        and current.get(r.customer_id) != Delivery.delivered.value,
                        # which version of the notice text the customer received (rule 12)
                        text_sha256=text_version(r.outcomes),
                        contacts=[_contact(r, o) for o in r.outcomes],
                    ),
                    r.first or at,
                )
                for r in results
            ])  # fmt: skip

    async def resend_notice(self, request: ResendRequest, progress: Progress) -> ResendResult:
        """Resend to a customer's current contacts (a new contact generation) — rule 4."""
        spec = request.spec
        pool = self.deps.pool
        row = await pool.fetchrow(
            "SELECT customer_id, timezone, window_days, window_unit, country, authorisation,"
            " language, delivery, deadline"
            " FROM recipients WHERE notice_id = $1 AND customer_id = $2",
            spec.notice_id,
            request.customer_id,
        )
        if row is None:
            return ResendResult(
                outcome="rejected",
                reason=f"customer {request.customer_id} is not a recipient of this notice",
            )
        async with pool.acquire() as connection, connection.transaction():
            generation = await connection.fetchval(
                "SELECT coalesce(max(generation), 0) + 1 FROM recipient_contacts"
                " WHERE notice_id = $1 AND customer_id = $2",
                spec.notice_id,
                request.customer_id,
            )
            already = await connection.fetchval(
                "SELECT generation FROM recipient_contacts WHERE notice_id = $1 AND customer_id = $2"
                " AND snapshot_at = $3 LIMIT 1",
                spec.notice_id,
                request.customer_id,
                request.at,
            )
            if already is None:
                await connection.execute(
                    "INSERT INTO recipient_contacts (notice_id, customer_id, generation, position,"
                    " email, snapshot_at) SELECT $1, customer_id, $3, position, email, $4"
                    " FROM customer_contacts WHERE customer_id = $2",
                    spec.notice_id,
                    request.customer_id,
                    generation,
                    request.at,
                )
        recipients = await load_recipients(pool, spec.notice_id, [request.customer_id])
        if request.customer_id not in recipients:
            return ResendResult(
                outcome="rejected", reason=f"customer {request.customer_id} has no contacts"
            )
        results = await self._deliver(
            spec, [dict(row)], recipients, request.key, request.at, request.customer_id, progress
        )
        held = [r.held for r in results if r.held]
        if held:  # a contact only got 4xx replies: the activity retries (until it is given up)
            raise TemporarySmtpError(f"a contact only gets temporary replies, the last {held[0]}")
        await to_the_end(self._record(spec, request.key, results, request.at))
        after = await pool.fetchrow(
            "SELECT delivery, deadline FROM recipients WHERE notice_id = $1 AND customer_id = $2",
            spec.notice_id,
            request.customer_id,
        )
        return ResendResult(
            outcome="sent", delivery=Delivery(after["delivery"]), deadline=after["deadline"]
        )

    async def mail_change(self, request: ChangeMailRequest, progress: Progress) -> None:
        """Postponement or cancellation: record it, then tell every customer that was told."""
        spec = request.spec
        pool = self.deps.pool
        async with pool.acquire() as connection, connection.transaction():
            # Who (and why) from the receipt, not Temporal.
            detail = await notice_actions.with_actor(connection, request.detail, request.receipt_id)
            # A cancellation settles those not switched on: the event's projection.
            await records.record_one(
                connection,
                eventstore.notice_stream(spec.notice_id),
                request.key,
                workflow_event(
                    f"notice_{'postponed' if request.kind == 'postponement' else 'cancelled'}",
                    # The text as it now stands: a postponement is a new version, with its own hash.
                    {**detail, "text_sha256": spec.text_sha256()},
                ),
                request.at,
            )
        # Everyone the notice reached: those recorded as reached, and those the ledger says a
        # notice mail (or a resend) was accepted for but whose batch was never recorded (its
        # worker died, and a cancel came before any retry could record it). Not the ledger's
        # `sending` rows: a whole batch is marked so before its first message, and most of a
        # dead worker's were never sent (the few it sent unwritten stay untold).
        ids = [
            row["customer_id"]
            for row in await pool.fetch(
                "SELECT r.customer_id FROM recipients r WHERE r.notice_id = $1"
                " AND (r.delivery = 'delivered' OR EXISTS ("
                "   SELECT 1 FROM deliveries d WHERE d.notice_id = r.notice_id"
                "   AND d.customer_id = r.customer_id AND d.status = 'accepted'"
                "   AND (d.kind = 'notice' OR d.kind LIKE 'resend-%')))"
                " AND NOT (r.activated AND $2) ORDER BY r.customer_id",
                spec.notice_id,
                request.kind == "cancellation",
            )
        ]
        if request.kind == "postponement":
            when = datetime.fromisoformat(str(request.detail["to"]))
        removal = spec.kind is ChangeKind.removal
        names = {"subprocessor": spec.subprocessor, "replaces": spec.replaces}
        cancelled = (
            "removal"
            if removal
            else "material_change"
            if spec.kind is ChangeKind.material_change
            else "other"
        )

        def context_for(recipient: Recipient) -> dict[str, Any]:
            tag = recipient.language  # the customer's language (domain/language.py)
            if request.kind == "postponement":
                headline = lang.text(tag, "update.postponed")
                moment = lang.instant(tag, when, recipient.timezone)
                paragraphs = [
                    lang.text(tag, f"update.postponed.{spec.kind.value}", when=moment, **names)
                    + ("" if removal else lang.text(tag, "update.deadline_unchanged"))
                ]
            else:
                headline = lang.text(tag, "update.cancelled")
                paragraphs = [
                    lang.text(tag, f"update.cancelled.{cancelled}", **names)
                    + lang.text(tag, "update.nothing_changes"),
                    lang.text(tag, "update.reason", reason=detail.get("reason", "")),
                ]
            return update_context(spec, headline, paragraphs, tag)

        await mail_update(self.deps, spec, ids, request.key, context_for, progress)
