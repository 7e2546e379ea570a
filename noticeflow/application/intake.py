"""Judging the intake: pending receipts in receipt order, many per activity, by their receipt time.

Each customer action is judged in its own transaction together with its receipt's outcome, so a
retried activity never judges one twice. Whatever will fail again — an unknown or erased customer,
a payload that does not fit, a conflict, a bug in one judgement — becomes a rejection with its reason
on that receipt; only transient faults (database or network) leave the activity to retry. The
first pending action about the notice as a whole (approve, postpone, cancel) stops the round and is
handed to the workflow, which judges it against its own state. Confirmations are mailed after the
commit, through the delivery ledger (``mail_due`` marks one still owed).

The service the intake activities (activities/intake.py) adapt: a round reports its progress (each
receipt taken, judged or confirmed) through a callback. A customer's action is judged by its
handler in a typed dispatch table (:class:`~noticeflow.contracts.CustomerActionKind`).
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
import structlog

from noticeflow import eventstore, intake, notice_actions, records
from noticeflow.application.deps import Deps, Progress
from noticeflow.application.sending import SendingService
from noticeflow.application.shared import (
    load_recipients,
    read_totals,
    switch_off,
    switch_subprocessor,
)
from noticeflow.contracts import (
    CustomerActionKind,
    IntakeRequest,
    IntakeRound,
    NoticeAction,
    ReceiptOutcome,
    ResendRequest,
)
from noticeflow.crypto import ERASED, CustomerKey, Field, load_keys
from noticeflow.domain import events, signals
from noticeflow.domain import language as lang
from noticeflow.domain.notice import NoticeSpec
from noticeflow.domain.render import silence_terms, update_context
from noticeflow.domain.rules import (
    Authorisation,
    ChangeKind,
    Outcome,
    Phase,
    consent_required,
    is_timely,
)
from noticeflow.mailer import TemporarySmtpError

log = structlog.get_logger(__name__)

SENT = {Phase.notifying, Phase.window_open, Phase.awaiting_effective_date, Phase.active}
# A cancelled notice takes no new objection or opt-in, but a customer switched on before the
# cancel can still revoke, and ops can still close cases and settle customers.
AFTER_CANCEL = {"revoke_opt_in", "resolve_objection", "exclude"}
# A removal is informational: a customer's answer to it has nothing to act on.
NOTHING_TO_ANSWER = {"object", "request_changes", "opt_in", "revoke_opt_in"}
# Ops' actions about an erased customer (its personal data is gone, its cases are not).
ERASED_OK = intake.ERASED_OK
# Faults that may pass: the activity fails and Temporal retries it (bounded backoff).
TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.AdminShutdownError,
    asyncpg.LockNotAvailableError,
    asyncpg.QueryCanceledError,
    eventstore.ConcurrencyError,
)


CONFIRMATION_SESSIONS = 8  # confirmations mailed at once after a round
# A round takes receipts as they arrive for up to this long, then hands back to the workflow
# (which starts the next round at once if any are pending).
ROUND_SECONDS = 5.0


def _raised_at(error: BaseException) -> list[str]:
    """Where an error was raised (the innermost frames: file, line, function): for a log line
    that must not carry the error's own words."""
    frames = traceback.extract_tb(error.__traceback__)[-4:]
    return [f"{frame.filename.rsplit('/', 2)[-1]}:{frame.lineno} {frame.name}" for frame in frames]


def content_refs(key: CustomerKey, reason: str) -> list[str]:
    """The key an objection's words are recognised by (a repeat of an open case is a duplicate):
    keyed with the customer's ``ids`` subkey, first; then those cases opened before it may carry
    (the blind index of the reason, under the root key or the index subkey), to be recognised too."""
    # Case-folded, as the blind index before it was: "No" and "no" are the same words.
    return [
        records.objection_ref(key, reason),
        key.legacy_index(reason),
        key.index(reason),
    ]


class Refused(Exception):
    """This action cannot be accepted; the message is the reason recorded on its receipt."""


@dataclass
class Judged:
    status: str = intake.ACCEPTED
    reason: str | None = None
    # headline, paragraphs (catalogue keys and fields, domain/language.py): a confirmation to mail
    mail: dict[str, Any] | None = None
    changed: bool = True
    deliveries_changed: bool = False


@dataclass
class Context:
    connection: asyncpg.Connection
    spec: NoticeSpec
    phase: Phase
    receipt: intake.Receipt
    keys: dict[str, CustomerKey]
    recipient: asyncpg.Record | None = None

    @property
    def customer_id(self) -> str:
        return str(self.receipt.customer_id)

    @property
    def stream(self) -> str:
        return eventstore.notice_stream(self.spec.notice_id)

    def seal(self, place: str, text: str) -> str:
        """``text`` sealed with the customer's key for one place (``"objections.reason"``,
        ``"objection_received.reason"``); ``[erased]`` for a customer without a key."""
        key = self.keys.get(self.customer_id)
        return ERASED if key is None else key.seal(place, text)


# One customer's action, judged in the context's transaction from its typed payload.
Judge = Callable[[Context, Any], Awaitable[Judged]]


class IntakeService:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.sending = SendingService(deps)
        self.judges: Mapping[CustomerActionKind, Judge] = {
            CustomerActionKind.object: self._object,
            CustomerActionKind.request_changes: self._object,
            CustomerActionKind.resolve_objection: self._resolve,
            CustomerActionKind.opt_in: self._opt_in,
            CustomerActionKind.revoke_opt_in: self._opt_in,
            CustomerActionKind.exclude: self._exclude,
        }

    # --- the round -----------------------------------------------------------------------------

    async def process_intake(self, request: IntakeRequest, progress: Progress) -> IntakeRound:
        pool = self.deps.pool
        spec = request.spec
        counts = {"handled": 0, "accepted": 0, "rejected": 0}
        for raw in request.raw:  # raw signals first: they were received before this round
            try:
                written = await intake.record(
                    pool,
                    spec.notice_id,
                    raw.action,
                    raw.payload,
                    channel="temporal",
                    receipt_id=raw.receipt_id,
                    received_at=raw.received_at,
                    problem=raw.problem,
                )
            except TRANSIENT:
                raise
            except Exception as error:  # a payload that cannot even be stored: kept as rejected
                log.warning("raw signal not storable", error=type(error).__name__)
                written = await intake.record(
                    pool,
                    spec.notice_id,
                    raw.action,
                    None,
                    channel="temporal",
                    receipt_id=raw.receipt_id,
                    received_at=raw.received_at,
                    problem=f"the payload could not be stored ({type(error).__name__})",
                )
            progress()
            if written.status == intake.REJECTED and not written.repeat:
                counts["handled"] += 1
                counts["rejected"] += 1
        loop = asyncio.get_running_loop()
        await _round_running(pool, spec.notice_id, True)
        try:
            more, notice_action, changed, deliveries_changed, result = await self._passes(
                spec, request, counts, loop.time() + ROUND_SECONDS, progress
            )
        except BaseException:
            with contextlib.suppress(Exception):  # signals resume; the retry marks it again
                await _round_running(pool, spec.notice_id, False)
            raise
        totals = await read_totals(pool, spec.notice_id)
        return result.model_copy(
            update={
                **counts,
                "notice_action": notice_action,
                "more": more,
                "changed": changed,
                "deliveries_changed": deliveries_changed,
                "totals": totals,
            }
        )

    async def _passes(
        self,
        spec: NoticeSpec,
        request: IntakeRequest,
        counts: dict[str, int],
        give_up: float,
        progress: Progress,
    ) -> tuple[bool, NoticeAction | None, bool, bool, IntakeRound]:
        """A round keeps taking receipts while they arrive (a burst of customer links): each pass
        judges what is pending now; the web does not signal a notice whose round is running."""
        pool = self.deps.pool
        loop = asyncio.get_running_loop()
        result = IntakeRound(handled=0)
        changed = deliveries_changed = False
        notice_action: NoticeAction | None = None
        more = False
        taken = 0
        while True:
            rows = await pool.fetch(
                "SELECT * FROM intake WHERE notice_id = $1 AND status = 'pending'"
                " ORDER BY received_at, seq LIMIT $2",
                spec.notice_id,
                request.limit + 1,
            )
            more = len(rows) > request.limit  # only pending receipts call for another round
            rows = rows[: request.limit]
            # Confirmations still owed (mail deferred earlier) ride along, a bounded few per pass.
            if taken == 0:  # once per round: a confirmation deferred by SMTP is not retried hot
                rows += await pool.fetch(
                    "SELECT * FROM intake WHERE notice_id = $1 AND status <> 'pending'"
                    " AND mail_due IS NOT NULL ORDER BY seq LIMIT 50",
                    spec.notice_id,
                )
            if not rows:
                # Nothing left: say so first, then look once more. A receipt written before the
                # web read "running" is seen by this look; one written after it is signalled.
                await _round_running(pool, spec.notice_id, False)
                more = await _any_pending(pool, spec.notice_id)
                break
            keys = await load_keys(pool, {r["customer_id"] for r in rows if r["customer_id"]})
            owed: list[str] = []
            chunk = _Chunk(self.deps.pool)
            deferred_before = result.deferred
            try:
                for row in rows:
                    if row["status"] == intake.PENDING:
                        if row["action"] in signals.NOTICE_ACTIONS or row["action"] == "resend":
                            await chunk.commit()  # judged outside the chunk: in receipt order
                        if row["action"] in signals.NOTICE_ACTIONS:
                            notice_action = await self._notice_action(row, keys)
                            if notice_action is not None:
                                more = True
                                break
                            continue  # rejected: its payload could not be read
                        connection = None if row["action"] == "resend" else await chunk.connection()
                        judged = await self._judge(
                            spec, request.phase, row, keys, progress, connection
                        )
                        if judged.status == intake.PENDING:
                            result = result.model_copy(update={"deferred": result.deferred + 1})
                            continue
                        counts["handled"] += 1
                        counts["accepted" if judged.status == intake.ACCEPTED else "rejected"] += (
                            judged.status != intake.DUPLICATE
                        )
                        changed |= judged.changed and judged.status == intake.ACCEPTED
                        deliveries_changed |= judged.deliveries_changed
                        if judged.mail is None:
                            progress(row["seq"])
                            continue
                    owed.append(row["receipt_id"])
                    progress(row["seq"])
                await chunk.commit()
            finally:
                await chunk.close()  # a fault before the commit rolls the chunk back: pending
            # Judging never waits for mail: the pass's confirmations go out after it, a few SMTP
            # sessions at a time (each through the ledger under its own kind: nothing twice).
            await self._mail_owed(spec, owed, progress)
            taken += len(rows)
            if result.deferred > deferred_before:  # waiting for the audience snapshot
                await _round_running(pool, spec.notice_id, False)
                break  # `more` only when the limit cut the pass: deferred ones wait
            if notice_action is not None or loop.time() >= give_up:
                await _round_running(pool, spec.notice_id, False)
                more = more or notice_action is not None or await _any_pending(pool, spec.notice_id)
                break
        return more, notice_action, changed, deliveries_changed, result

    async def _notice_action(
        self, row: asyncpg.Record, keys: dict[str, CustomerKey]
    ) -> NoticeAction | None:
        payload = intake.open_payload(row, keys)
        if not isinstance(payload, dict):
            await self._settle(row, intake.REJECTED, "the payload could not be read")
            return None
        typed, problem = intake.validate(row["action"], payload)
        if typed is None:
            await self._settle(row, intake.REJECTED, problem or "invalid payload")
            return None
        # The workflow judges it from ids and facts: the name and any free text stay here.
        return NoticeAction(
            receipt_id=row["receipt_id"],
            action=row["action"],
            payload=notice_actions.workflow_payload(row["action"], typed),
            received_at=row["received_at"],
            facts=await notice_actions.facts(
                self.deps.pool, row["notice_id"], str(getattr(typed, "by", ""))
            ),
        )

    async def _judge(
        self,
        spec: NoticeSpec,
        phase: Phase,
        row: asyncpg.Record,
        keys: dict[str, CustomerKey],
        progress: Progress,
        chunk: asyncpg.Connection | None = None,
    ) -> Judged:
        """Judge one receipt in one transaction with its outcome; never raises a lasting fault.

        With ``chunk`` (a connection inside the round's open transaction) the receipt is judged in
        a savepoint of it: a lasting fault rolls back this receipt's work only, and the chunk's
        receipts commit together (one commit per chunk instead of one per receipt).
        """
        receipt = intake._row_receipt(row)
        try:
            resent: Judged | None = None
            if receipt.action == "resend":  # it mails: judged before its outcome is written
                try:
                    resent = await self._resend(spec, phase, row, keys, progress)
                except Refused as refusal:
                    resent = Judged(status=intake.REJECTED, reason=str(refusal), changed=False)
            async with _transaction(self.deps.pool, chunk) as connection:
                status = await connection.fetchval(
                    "SELECT status FROM intake WHERE receipt_id = $1 FOR UPDATE", receipt.receipt_id
                )
                if status != intake.PENDING:  # judged by an earlier attempt of this activity
                    return Judged(status=status, changed=False)
                context = Context(connection, spec, phase, receipt, keys)
                try:
                    judged = resent or await self._judge_one(context, row)
                except Refused as refusal:
                    judged = Judged(status=intake.REJECTED, reason=str(refusal), changed=False)
                await self._write_outcome(connection, context, judged)
                return judged
        except TRANSIENT:
            raise
        except Exception as error:  # a lasting fault in one judgement must not stop the rest
            # The type and where it was raised, not its message or a formatted traceback: an
            # error raised while reading a payload may quote it (free text, names, addresses).
            log.error(
                "intake judgement failed",
                receipt_id=receipt.receipt_id,
                error_type=type(error).__name__,
                raised_at=_raised_at(error),
            )
            reason = f"could not be processed ({type(error).__name__}); reported to the operators"
            async with _transaction(self.deps.pool, chunk) as connection:
                await connection.execute(
                    "UPDATE intake SET status = 'rejected', reason = $2, handled_at = clock_timestamp()"
                    " WHERE receipt_id = $1 AND status = 'pending'",
                    receipt.receipt_id,
                    reason,
                )
                await intake.append_rejection(connection, receipt, reason)
            return Judged(status=intake.REJECTED, reason=reason, changed=False)

    async def _judge_one(self, context: Context, row: asyncpg.Record) -> Judged:
        action = context.receipt.action
        customer_id = context.customer_id
        erased = customer_id not in context.keys
        if erased and action not in ERASED_OK and await _erased_for_good(context):
            raise Refused(self._erased(customer_id))  # ids only were kept: nothing to read
        payload = intake.open_payload(row, context.keys)
        if payload is None and erased:
            raise Refused(self._erased(customer_id))
        typed, problem = intake.validate(action, payload)
        if problem is not None or typed is None:
            raise Refused(problem or "the payload could not be read")
        if context.phase is Phase.cancelled and action not in AFTER_CANCEL:
            raise Refused("the notice was cancelled; nothing can be recorded on it any more")
        if context.phase not in SENT | {Phase.cancelled}:
            raise Refused(f"the notice is {context.phase} and was not sent yet")
        context.recipient = await context.connection.fetchrow(
            "SELECT * FROM recipients WHERE notice_id = $1 AND customer_id = $2 FOR UPDATE",
            context.spec.notice_id,
            customer_id,
        )
        if context.recipient is None:
            if context.phase is Phase.notifying and not await context.connection.fetchval(
                "SELECT EXISTS (SELECT 1 FROM recipients WHERE notice_id = $1)",
                context.spec.notice_id,
            ):
                return Judged(status=intake.PENDING, changed=False)  # judged once snapshotted
            raise Refused(await self._unknown(context))
        if erased and action not in ERASED_OK:
            raise Refused(self._erased(customer_id))
        if context.spec.kind is ChangeKind.removal and action in NOTHING_TO_ANSWER:
            raise Refused(
                f"notice {context.spec.notice_id} is a removal: informational, nothing to object"
                " to or opt in to"
            )
        return await self.judges[CustomerActionKind(action)](context, typed)

    @staticmethod
    def _erased(customer_id: str) -> str:
        return intake.erased_reason(customer_id)

    async def _unknown(self, context: Context) -> str:
        known = [
            r["customer_id"]
            for r in await context.connection.fetch(
                "SELECT customer_id FROM recipients WHERE notice_id = $1", context.spec.notice_id
            )
        ]
        close = difflib.get_close_matches(context.customer_id, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown customer {context.customer_id!r}: not a recipient of this notice{hint}"

    async def _write_outcome(
        self, connection: asyncpg.Connection, context: Context, judged: Judged
    ) -> None:
        if judged.status == intake.PENDING:  # not judged yet (the audience is being snapshotted)
            return
        mail_due = None
        if judged.mail is not None and context.customer_id in context.keys:
            mail_due = context.seal(Field.INTAKE_MAIL_DUE, orjson.dumps(judged.mail).decode())
        await connection.execute(
            "UPDATE intake SET status = $2, reason = $3, mail_due = $4, handled_at = clock_timestamp()"
            " WHERE receipt_id = $1",
            context.receipt.receipt_id,
            judged.status,
            judged.reason,
            mail_due,
        )
        if judged.status == intake.REJECTED:
            await intake.append_rejection(connection, context.receipt, str(judged.reason))

    async def _settle(self, row: asyncpg.Record, status: str, reason: str | None) -> None:
        async with self.deps.pool.acquire() as connection, connection.transaction():
            await connection.execute(
                "UPDATE intake SET status = $2, reason = $3, handled_at = clock_timestamp()"
                " WHERE receipt_id = $1 AND status = 'pending'",
                row["receipt_id"],
                status,
                reason,
            )
            if status == intake.REJECTED:
                await intake.append_rejection(connection, intake._row_receipt(row), str(reason))

    # --- one judgement per action ----------------------------------------------------------------

    async def _object(self, context: Context, objection: signals.Objection) -> Judged:
        """Rule 7: judged by its receipt time; a case opened; acknowledged by mail. A request for
        changes (a DORA contract's third answer) is judged the same way: a case that holds
        activation until ops resolve it."""
        receipt, recipient, spec = context.receipt, context.recipient, context.spec
        assert recipient is not None
        changes = receipt.action == CustomerActionKind.request_changes
        if changes and recipient["authorisation"] != Authorisation.dora:
            raise Refused(
                f"customer {context.customer_id!r} has {recipient['authorisation']} authorisation"
                " in its contract: only a dora contract may request changes; it may object"
                + (
                    " or opt in"
                    if consent_required(spec.opt_in, recipient["authorisation"])
                    else ""
                )
            )
        content_ref, *earlier_refs = content_refs(
            context.keys[context.customer_id], objection.reason
        )
        same = await context.connection.fetchval(
            "SELECT receipt_id FROM objections WHERE notice_id = $1 AND customer_id = $2"
            " AND status = 'open' AND content_ref = ANY($3::text[]) AND request = $4 LIMIT 1",
            spec.notice_id,
            context.customer_id,
            [content_ref, *earlier_refs],
            "changes" if changes else "objection",
        )
        what = "request for changes" if changes else "objection"
        if same is not None:
            return Judged(
                status=intake.DUPLICATE,
                reason=f"the same {what} is already open (receipt {same})",
                changed=False,
            )
        timely = is_timely(receipt.received_at, recipient["deadline"])
        received = "objection_received"
        # The case (objections) and the customer's row are the event's projection.
        await records.record_one(
            context.connection,
            context.stream,
            f"objection/{receipt.receipt_id}",
            events.ObjectionReceived(
                customer_id=context.customer_id,
                idempotency_key=receipt.receipt_id,
                receipt_id=receipt.receipt_id,
                timely=timely,
                channel=receipt.channel,
                by=context.seal(Field.event(received, "by"), objection.by),
                reason=context.seal(Field.event(received, "reason"), objection.reason),
                received_at=receipt.received_at,
                deadline=recipient["deadline"],
                request="changes" if changes else None,
            ),
            receipt.received_at,
            context.keys,
        )
        # Kept as catalogue keys and fields: written in the customer's language when mailed.
        what, judged = ("changes" if changes else "objection"), ("timely" if timely else "late")
        when = lang.stored_instant(receipt.received_at, recipient["timezone"])
        return Judged(
            reason=None if timely else "late: received after the customer's deadline",
            mail={
                "headline": lang.stored(f"ack.{what}.headline"),
                "paragraphs": [
                    lang.stored(
                        f"ack.{what}.received.{judged}",
                        subprocessor=spec.subprocessor,
                        when=when,
                        receipt=receipt.receipt_id,
                    ),
                    lang.stored(f"ack.{what}.next.{judged}"),
                ],
            },
        )

    async def _resolve(self, context: Context, resolution: signals.ResolveObjection) -> Judged:
        """Close every open case of one customer with the outcome ops chose."""
        spec, receipt = context.spec, context.receipt
        resolved = await self._open_cases(context)
        if not resolved:
            last = await context.connection.fetchrow(
                "SELECT status, resolved_at FROM objections WHERE notice_id = $1 AND customer_id = $2"
                " ORDER BY resolved_at DESC NULLS LAST LIMIT 1",
                spec.notice_id,
                context.customer_id,
            )
            tail = (
                f"; its last case was resolved {last['status']} at "
                f"{last['resolved_at'].isoformat()}"
                if last is not None and last["resolved_at"] is not None
                else ""
            )
            raise Refused(
                f"customer {context.customer_id!r} has no open case (objection or request for"
                f" changes){tail}"
            )
        await records.record_one(
            context.connection,
            context.stream,
            f"resolution/{receipt.receipt_id}",
            events.ObjectionResolved(
                customer_id=context.customer_id,
                receipt_id=receipt.receipt_id,
                outcome=resolution.outcome,
                by=context.seal(Field.event(events.ObjectionResolved.type, "by"), resolution.by),
                note=context.seal(
                    Field.event(events.ObjectionResolved.type, "note"), resolution.note
                )
                if resolution.note
                else "",
                objections=resolved,
            ),
            receipt.received_at,
            context.keys,
        )
        recipient = context.recipient
        if (
            resolution.outcome.value != "withdrawn"
            and recipient is not None
            and recipient["activated"]
        ):
            # Upheld after activation (a late case, or a cancelled notice): off at once.
            await switch_off(
                context.connection,
                spec.notice_id,
                spec.subprocessor,
                context.customer_id,
                receipt.received_at,
                resolution.outcome.value,
            )
        requests = {
            row["request"]
            for row in await context.connection.fetch(
                "SELECT request FROM objections WHERE notice_id = $1 AND customer_id = $2"
                " AND idempotency_key = ANY($3::text[])",
                spec.notice_id,
                context.customer_id,
                resolved,
            )
        }
        what = "changes" if requests == {"changes"} else "objection"
        return Judged(
            mail={
                "headline": lang.stored(f"ack.resolved.headline.{what}"),
                "paragraphs": [lang.stored(f"ack.resolved.{resolution.outcome.value}.{what}")]
                + ([resolution.note] if resolution.note else []),  # ops' words, as written
            }
        )

    async def _opt_in(self, context: Context, opt_in: signals.OptIn) -> Judged:
        """Rule 8: opt in, or revoke — before or after activation, also after completion."""
        spec, receipt, recipient = context.spec, context.receipt, context.recipient
        assert recipient is not None
        opted_in = receipt.action == "opt_in"
        mode = recipient["authorisation"]
        consent = consent_required(spec.opt_in, mode)
        if not consent and mode != Authorisation.dora:
            raise Refused(
                "this notice is not an opt-in notice and customer"
                f" {context.customer_id!r} has general authorisation (silence is deemed"
                " acceptance); it objects instead"
            )
        if recipient["opted_in"] == opted_in:
            return Judged(
                status=intake.DUPLICATE,
                reason="already opted in" if opted_in else "not opted in",
                changed=False,
            )
        await records.record_one(
            context.connection,
            context.stream,
            f"opt-in/{receipt.receipt_id}",
            (events.OptInRecorded if opted_in else events.OptInRevoked)(
                customer_id=context.customer_id,
                receipt_id=receipt.receipt_id,
                by=context.seal(
                    Field.event("opt_in_recorded" if opted_in else "opt_in_revoked", "by"),
                    opt_in.by,
                ),
                channel=receipt.channel,
                received_at=receipt.received_at,
            ),
            receipt.received_at,
            context.keys,
        )
        # A dora customer's approval, withdrawn, does not switch it off: without an objection
        # the change goes ahead there (an objection or a request for changes stops it).
        switched_off = bool(recipient["activated"]) and not opted_in and consent
        if switched_off:
            await switch_subprocessor(
                context.connection,
                spec.notice_id,
                spec.subprocessor,
                context.customer_id,
                False,
                receipt.received_at,
                "opt_in_revoked",
            )
        # Kept as catalogue keys and fields: written in the customer's language when mailed.
        if not consent:  # a dora customer's approval (or its withdrawal)
            what = "approve" if opted_in else "withdraw"
            paragraph = f"ack.{what}"
        elif opted_in:
            what, paragraph = "opt_in", "ack.opt_in"
        else:
            what = "revoke"
            paragraph = f"ack.revoke.{'switched_off' if switched_off else 'not_used'}"
        return Judged(
            mail={
                "headline": lang.stored(f"ack.{what}.headline"),
                "paragraphs": [
                    lang.stored(
                        paragraph, subprocessor=spec.subprocessor, receipt=receipt.receipt_id
                    )
                ],
            }
        )

    async def _exclude(self, context: Context, exclude: signals.Exclude) -> Judged:
        """Ops settle a customer without activation; switched off if it was on."""
        spec, receipt, recipient = context.spec, context.receipt, context.recipient
        assert recipient is not None
        if recipient["excluded_at"] is not None:
            return Judged(status=intake.DUPLICATE, reason="already excluded", changed=False)
        # Sealed once per place (an erased customer's come out "[erased]": nothing is kept).
        by, reason = exclude.by, exclude.reason
        await records.record_one(
            context.connection,
            context.stream,
            f"exclusion/{receipt.receipt_id}",
            events.CustomerExcluded(
                customer_id=context.customer_id,
                receipt_id=receipt.receipt_id,
                by=context.seal(Field.event(events.CustomerExcluded.type, "by"), by),
                reason=context.seal(Field.event(events.CustomerExcluded.type, "reason"), reason),
                delivery=recipient["delivery"],
            ),
            receipt.received_at,
            context.keys,
        )
        # Its open cases end with it: the sub-processor stays off, as an upheld objection would.
        closed = await self._open_cases(context)
        if closed:
            await records.record_one(
                context.connection,
                context.stream,
                f"resolution/{receipt.receipt_id}",
                events.ObjectionResolved(
                    customer_id=context.customer_id,
                    receipt_id=receipt.receipt_id,
                    outcome=Outcome.excluded,
                    by=context.seal(Field.event(events.ObjectionResolved.type, "by"), by),
                    note=context.seal(Field.event(events.ObjectionResolved.type, "note"), reason),
                    objections=closed,
                ),
                receipt.received_at,
                context.keys,
            )
        if recipient["activated"]:
            await switch_off(
                context.connection,
                spec.notice_id,
                spec.subprocessor,
                context.customer_id,
                receipt.received_at,
                "excluded_by_ops",
            )
        return Judged()

    async def _open_cases(self, context: Context) -> list[str]:
        """The keys of the customer's open cases, oldest first."""
        rows = await context.connection.fetch(
            "SELECT idempotency_key FROM objections WHERE notice_id = $1 AND customer_id = $2"
            " AND status = 'open' ORDER BY received_at, idempotency_key",
            context.spec.notice_id,
            context.customer_id,
        )
        return [row["idempotency_key"] for row in rows]

    # --- resend: mails inside the judgement -----------------------------------------------------

    async def _resend(
        self,
        spec: NoticeSpec,
        phase: Phase,
        row: asyncpg.Record,
        keys: dict[str, CustomerKey],
        progress: Progress,
    ) -> Judged:
        receipt = intake._row_receipt(row)
        _, problem = intake.validate("resend", intake.open_payload(row, keys))
        if problem is not None:
            raise Refused(problem)
        if phase is Phase.cancelled:
            raise Refused("the notice was cancelled; nothing can be recorded on it any more")
        if phase not in SENT - {Phase.notifying}:
            raise Refused(f"the notice is {phase}: resend only after the first sending")
        exists = await self.deps.pool.fetchrow(
            "SELECT excluded_at FROM recipients WHERE notice_id = $1 AND customer_id = $2",
            spec.notice_id,
            receipt.customer_id,
        )
        if exists is not None and exists["excluded_at"] is not None:
            raise Refused(
                f"customer {receipt.customer_id!r} was excluded by ops; a resend would reopen"
                " its window (use a new notice to reach it)"
            )
        if exists is None:
            async with self.deps.pool.acquire() as connection:
                context = Context(connection, spec, phase, receipt, {})
                raise Refused(await self._unknown(context))
        result = await self.sending.resend_notice(
            ResendRequest(
                spec=spec,
                customer_id=str(receipt.customer_id),
                key=f"resend-{receipt.receipt_id}",
                at=receipt.received_at,
            ),
            progress,
        )
        if result.outcome == "rejected":
            raise Refused(result.reason)
        return Judged(
            reason=f"delivery {result.delivery}" if result.delivery else None,
            deliveries_changed=True,
        )

    # --- mail owed ---------------------------------------------------------------------------------

    async def _mail_owed(
        self, spec: NoticeSpec, receipt_ids: list[str], progress: Progress
    ) -> None:
        gate = asyncio.Semaphore(CONFIRMATION_SESSIONS)

        async def one(receipt_id: str) -> None:
            async with gate:
                await self._mail_due(spec, receipt_id)
                progress()

        # The round's few SMTP sessions are reused from one confirmation to the next.
        async with self.deps.mailer.reusing_sessions():
            await asyncio.gather(*(one(receipt_id) for receipt_id in receipt_ids))

    async def _mail_due(self, spec: NoticeSpec, receipt_id: str) -> None:
        """Mail the confirmation a receipt owes (through the ledger: a repeat sends nothing twice)."""
        pool = self.deps.pool
        row = await pool.fetchrow(
            "SELECT customer_id, mail_due FROM intake WHERE receipt_id = $1", receipt_id
        )
        if row is None or row["mail_due"] is None:
            return
        customer_id = row["customer_id"]
        recipients = await load_recipients(pool, spec.notice_id, [customer_id])
        recipient = recipients.get(customer_id)
        due = recipient.key.unseal(Field.INTAKE_MAIL_DUE, row["mail_due"]) if recipient else ERASED
        if recipient is not None and due != ERASED:  # else nobody to mail, or nothing to read
            plan = orjson.loads(due)
            frozen = await pool.fetchrow(
                "SELECT deadline, authorisation FROM recipients WHERE notice_id = $1"
                " AND customer_id = $2",
                spec.notice_id,
                customer_id,
            )
            deadline = frozen["deadline"] if frozen else None
            mode = (frozen["authorisation"] if frozen else None) or Authorisation.general
            # The customer's own page, so "you can revoke at any time" is one click away: the
            # opt-in page for a customer that may consent or approve (silence_terms).
            links = self.deps.links.links_for(
                spec.notice_id, customer_id, deadline or spec.effective_at, spec.effective_at
            ) | silence_terms(spec.opt_in, mode)
            # Written in the customer's language now (a plan stored before the catalogue held
            # its English sentences: they come out as they are).
            headline, paragraphs = lang.written_mail(recipient.language, plan)
            try:
                await self.deps.mailer.mail_customer(
                    pool,
                    spec.notice_id,
                    recipient,
                    f"confirmation/{receipt_id}",
                    "update",
                    links | update_context(spec, headline, paragraphs, recipient.language),
                )
            except TemporarySmtpError as error:  # owed still: the sweeper wakes the notice later
                log.warning("confirmation deferred", receipt_id=receipt_id, reply=str(error)[:120])
                return
        await pool.execute("UPDATE intake SET mail_due = NULL WHERE receipt_id = $1", receipt_id)

    # --- the workflow's own verdicts ---------------------------------------------------------------

    async def settle_receipt(self, outcome: ReceiptOutcome) -> None:
        """Write the outcome of a notice action the workflow judged (approve, postpone, cancel)."""
        async with self.deps.pool.acquire() as connection, connection.transaction():
            # A reason naming the person says {by}: the name comes from the receipt, not Temporal.
            reason = await notice_actions.fill_names(connection, outcome.reason, outcome.receipt_id)
            row = await connection.fetchrow(
                "UPDATE intake SET status = $2, reason = $3, handled_at = clock_timestamp()"
                f" WHERE receipt_id = $1 AND status = 'pending' RETURNING {intake.RECEIPT_COLUMNS}",
                outcome.receipt_id,
                outcome.status,
                reason,
            )
            if row is not None and outcome.status == intake.REJECTED:
                await intake.append_rejection(connection, intake._row_receipt(row), str(reason))


async def _erased_for_good(context: Context) -> bool:
    return bool(
        await context.connection.fetchval(
            "SELECT EXISTS (SELECT 1 FROM customer_erasures WHERE customer_id = $1)",
            context.customer_id,
        )
    )


CHUNK = 100  # receipts judged in one transaction (each in its own savepoint)


@contextlib.asynccontextmanager
async def _transaction(
    pool: asyncpg.Pool, chunk: asyncpg.Connection | None
) -> AsyncIterator[asyncpg.Connection]:
    """A transaction of its own, or a savepoint inside the chunk's open transaction."""
    if chunk is not None:
        async with chunk.transaction():
            yield chunk
        return
    async with pool.acquire() as connection, connection.transaction():
        yield connection


class _Chunk:
    """One connection and one open transaction for up to CHUNK consecutive receipts."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._connection: Any = None
        self._transaction: Any = None
        self._count = 0

    async def connection(self) -> asyncpg.Connection:
        if self._count >= CHUNK:
            await self.commit()
        if self._connection is None:
            self._connection = await self.pool.acquire()
        if self._transaction is None:
            self._transaction = self._connection.transaction()
            await self._transaction.start()
        self._count += 1
        connection: asyncpg.Connection = self._connection
        return connection

    async def commit(self) -> None:
        if self._transaction is not None:
            transaction, self._transaction, self._count = self._transaction, None, 0
            await transaction.commit()

    async def close(self) -> None:
        try:
            if self._transaction is not None:
                transaction, self._transaction = self._transaction, None
                with contextlib.suppress(Exception):
                    await transaction.rollback()
        finally:
            if self._connection is not None:
                connection, self._connection = self._connection, None
                await self.pool.release(connection)


async def _round_running(pool: asyncpg.Pool, notice_id: str, running: bool) -> None:
    """Mark (or clear) the notice's intake round as running: while it runs, the web does not
    signal the notice for a new receipt (noticeflow/waker.py), the round takes it."""
    await pool.execute(
        "UPDATE notices SET intake_round_at = CASE WHEN $2 THEN clock_timestamp() END"
        " WHERE notice_id = $1",
        notice_id,
        running,
    )


async def _any_pending(pool: asyncpg.Pool, notice_id: str) -> bool:
    return bool(
        await pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM intake WHERE notice_id = $1 AND status = 'pending')",
            notice_id,
        )
    )
