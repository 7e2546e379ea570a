"""Phase records, generic events, totals, and per-customer activation (rule 9).

The service the lifecycle activities (activities/lifecycle.py) adapt: an activation round reports
its progress (the last customer id decided) through a callback."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import structlog

from noticeflow import eventstore, notice_actions, records
from noticeflow.application.deps import Deps, Progress, mail_update
from noticeflow.application.notice_events import workflow_event
from noticeflow.application.shared import read_totals, switch_off, switch_subprocessor
from noticeflow.contracts import (
    ActivationRequest,
    ActivationRound,
    EventRequest,
    NoticeRecord,
    NoticeTotals,
    PhaseChange,
)
from noticeflow.crypto import ERASED, Field, load_keys
from noticeflow.domain import events
from noticeflow.domain import language as lang
from noticeflow.domain.notice import NoticeSpec
from noticeflow.domain.render import update_context
from noticeflow.domain.rules import (
    OFF_VERDICTS,
    REPLACED,
    Case,
    CaseStatus,
    ChangeKind,
    Delivery,
    Phase,
    Verdict,
    activation_ground,
    consent_required,
    decide,
    is_deemed_acceptance,
    is_settled,
)
from noticeflow.mailer import Recipient

PAGE = 1000
log = structlog.get_logger(__name__)


async def _switch_off_if_on(
    connection: Any,
    spec: NoticeSpec,
    subprocessor: str,
    customer_id: str,
    now: datetime,
    because: str | None = None,
) -> bool:
    """Switch ``subprocessor`` off for the customer if it is on for it (under any notice): a
    removal's effective date (because ``removed``), or a replacement's switch-on of the new one
    (the old one's, because ``replaced``). Recorded on this notice's stream, naming the one
    switched off. Returns whether it was on."""
    enabled = await connection.fetchval(
        "SELECT enabled FROM subprocessor_enablements WHERE customer_id = $1 AND subprocessor = $2"
        " FOR UPDATE",
        customer_id,
        subprocessor,
    )
    if not enabled:
        return False
    if because is None:
        because = Verdict.removed.value if spec.kind is ChangeKind.removal else REPLACED
    await switch_off(connection, spec.notice_id, subprocessor, customer_id, now, because)
    return True


async def _owe_mail(connection: Any, notice_id: str, customer_id: str) -> None:
    """The outbox flag: this customer is mailed that the notice took effect for it (the round
    mails after its batch; a round that stopped first mails it at the next one)."""
    await connection.execute(
        "UPDATE recipients SET activation_mail_due = true WHERE notice_id = $1 AND customer_id = $2",
        notice_id,
        customer_id,
    )


def taking_effect_words(spec: NoticeSpec, language: str | None = None) -> tuple[str, list[str]]:
    """The mail a customer gets when the notice takes effect for it (headline, paragraphs), in
    the customer's language (domain/language.py; None: English)."""
    names = {
        "name": spec.subprocessor,
        "services": ", ".join(spec.services),
        "notice_id": spec.notice_id,
        "replaces": spec.replaces,
    }
    if spec.kind is ChangeKind.removal:
        return lang.text(language, "activation.removal.headline", **names), [
            lang.text(language, "activation.removal", **names)
        ]
    if spec.kind is ChangeKind.material_change:
        fields = ", ".join(
            lang.text(language, f"field.{field}") if lang.language_of(language) != lang.DEFAULT
            else field.replace("_", " ")
            for field in sorted(spec.previous)
        )  # fmt: skip
        return lang.text(language, "activation.material_change.headline", **names), [
            lang.text(language, "activation.material_change", fields=fields, **names)
        ]
    words = [lang.text(language, "activation.in_use", **names)]
    if spec.kind is ChangeKind.replacement:
        words.append(lang.text(language, "activation.replaces", **names))
    return lang.text(language, "activation.headline", **names), words


def refusal_words(spec: NoticeSpec, language: str | None = None) -> tuple[str, list[str]]:
    """The mail a customer gets when a material change it refused switches the sub-processor
    off for it."""
    names = {
        "name": spec.subprocessor,
        "services": ", ".join(spec.services),
        "notice_id": spec.notice_id,
    }
    return lang.text(language, "refusal.headline", **names), [
        lang.text(language, "refusal", **names)
    ]


async def _superseded(
    connection: Any, spec: NoticeSpec, customer_id: str
) -> tuple[str, str] | None:
    """A later notice that switched this sub-processor off for the customer (a removal, a
    replacement, a material change it refused), and its kind: what this older notice must no
    longer undo (a case withdrawn, an opt-in given after it completed). None: nothing did."""
    row = await connection.fetchrow(
        "WITH mine AS (SELECT created_at FROM notices WHERE notice_id = $3)"
        " SELECT n.notice_id, n.spec ->> 'kind' AS kind FROM subprocessor_enablements e"
        " JOIN notices n ON n.notice_id = e.notice_id, mine"
        " WHERE e.customer_id = $1 AND e.subprocessor = $2 AND NOT e.enabled"
        " AND e.notice_id <> $3 AND n.spec ->> 'kind' IN ('removal', 'replacement',"
        "   'material_change') AND n.created_at > mine.created_at"
        # A removal that has taken effect for the customer, whether or not it was on then.
        " UNION ALL SELECT n.notice_id, 'removal' FROM recipients r"
        " JOIN notices n ON n.notice_id = r.notice_id, mine"
        " WHERE r.customer_id = $1 AND n.subprocessor = $2 AND n.notice_id <> $3"
        " AND n.spec ->> 'kind' = 'removal' AND r.verdict = 'removed'"
        " AND n.created_at > mine.created_at"
        " LIMIT 1",
        customer_id,
        spec.subprocessor,
        spec.notice_id,
    )
    return None if row is None else (row["notice_id"], row["kind"])


async def _exclude_superseded(
    connection: Any, spec: NoticeSpec, row: Any, later: tuple[str, str], now: datetime
) -> None:
    """Settle the customer without activation, as ops would (`notice exclude`), saying why."""
    customer_id = row["customer_id"]
    notice_id, kind = later
    done = {"removal": "removed", "replacement": "replaced", "material_change": "switched off"}
    keys = await load_keys(connection, [customer_id])
    key = keys.get(customer_id)

    def seal(name: str, text: str) -> str:
        return ERASED if key is None else key.seal(Field.event("customer_excluded", name), text)

    await records.record_one(
        connection,
        eventstore.notice_stream(spec.notice_id),
        f"superseded/{customer_id}/{notice_id}",
        events.CustomerExcluded(
            customer_id=customer_id,
            receipt_id=f"superseded-by-{notice_id}",
            by=seal("by", "noticeflow"),
            reason=seal(
                "reason",
                f"{spec.subprocessor} was {done.get(kind, 'switched off')} for this customer by"
                f" the later notice {notice_id}: this notice does not switch it on again",
            ),
            delivery=row["delivery"],
        ),
        now,
        keys,
    )


class LifecycleService:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    async def append_event(self, request: EventRequest) -> None:
        async with self.deps.pool.acquire() as connection, connection.transaction():
            # Who (and why) from the receipt, not Temporal.
            data = await notice_actions.with_actor(connection, request.data, request.receipt_id)
            # Validated by its model: an unknown type or invalid data fails for good, at once.
            event = workflow_event(request.event_type, data)
            # The approver's name reaches the notice's record as the event's projection.
            await records.record_one(
                connection,
                eventstore.notice_stream(request.notice_id),
                request.key,
                event,
                request.at,
            )

    async def record_phase(self, change: PhaseChange) -> None:
        log.info("phase", phase=change.phase.value, effective_at=change.effective_at)
        async with self.deps.pool.acquire() as connection, connection.transaction():
            # The notice's record follows from the event (the approver: from the approval's).
            await records.record_one(
                connection,
                eventstore.notice_stream(change.notice_id),
                change.key,
                events.PhaseChanged(
                    phase=change.phase,
                    effective_at=change.effective_at,
                    window_closes_at=change.window_closes_at,
                ),
                change.at,
            )

    async def load_notice_record(self, notice_id: str) -> NoticeRecord:
        row = await self.deps.pool.fetchrow(
            "SELECT phase, effective_at, window_closes_at FROM notices WHERE notice_id = $1",
            notice_id,
        )
        # No approver's name: it stays in the records (no names travel through Temporal).
        return NoticeRecord(
            phase=Phase(row["phase"]),
            effective_at=row["effective_at"],
            window_closes_at=row["window_closes_at"],
        )

    async def read_totals(self, notice_id: str) -> NoticeTotals:
        return await read_totals(self.deps.pool, notice_id)

    async def activate_due(self, request: ActivationRequest, progress: Progress) -> ActivationRound:
        """Decide every unsettled customer at ``now``; enable or disable per customer."""
        spec = request.spec
        activated = deactivated = 0
        next_due: datetime | None = None
        after = ""
        owed = [  # switched on by an earlier round that stopped before its mail went out
            row["customer_id"]
            for row in await self.deps.pool.fetch(
                "SELECT customer_id FROM recipients WHERE notice_id = $1 AND activation_mail_due"
                " ORDER BY customer_id",
                spec.notice_id,
            )
        ]
        await self._mail_activation(spec, owed, progress)
        while True:
            rows = await self.deps.pool.fetch(
                "SELECT customer_id, delivery, deadline, opted_in, activated, authorisation,"
                " excluded_at IS NOT NULL AS excluded_by_ops, EXISTS (SELECT 1 FROM intake i"
                "   WHERE i.notice_id = r.notice_id AND i.customer_id = r.customer_id"
                "   AND i.status = 'pending') AS pending_receipt"
                " FROM recipients r WHERE notice_id = $1 AND NOT settled AND customer_id > $2"
                " ORDER BY customer_id LIMIT $3",
                spec.notice_id,
                after,
                PAGE,
            )
            if not rows:
                break
            after = rows[-1]["customer_id"]
            cases = await self._cases(spec.notice_id, [row["customer_id"] for row in rows])
            newly_on: list[str] = []
            removed: list[str] = []  # a removal's: told it is off
            for row in rows:
                if row["pending_receipt"]:
                    # An action received for it is not judged yet: decide after it (soon).
                    soon = request.now + timedelta(seconds=2)
                    next_due = min(filter(None, [next_due, soon]))
                    continue
                customer_cases = cases.get(row["customer_id"], [])
                verdict = decide(
                    now=request.now,
                    effective_at=spec.effective_at,
                    delivery=Delivery(row["delivery"]),
                    deadline=row["deadline"],
                    # This customer's consent: an opt-in notice, or its contract (specific).
                    opt_in_notice=consent_required(spec.opt_in, row["authorisation"]),
                    opted_in=row["opted_in"],
                    cases=customer_cases,
                    excluded_by_ops=row["excluded_by_ops"],
                    kind=spec.kind,
                )
                if verdict is Verdict.wait_for_deadline and row["deadline"] is not None:
                    next_due = min(filter(None, [next_due, row["deadline"]]))
                changed = await self._apply(spec, row, verdict, customer_cases, request.now)
                if changed == "on":
                    activated += 1
                    newly_on.append(row["customer_id"])
                elif changed == "off":
                    deactivated += 1
                    if not row["activated"]:  # off under another notice: told so
                        removed.append(row["customer_id"])
            await self._mail_activation(spec, newly_on + removed, progress)
            progress(after)
        totals = await read_totals(self.deps.pool, spec.notice_id)
        log.info(
            "activation round",
            activated=activated,
            deactivated=deactivated,
            unsettled=totals.unsettled,
            next_due=next_due,
        )
        return ActivationRound(
            activated_now=activated, deactivated_now=deactivated, next_due=next_due, totals=totals
        )

    async def _cases(self, notice_id: str, customer_ids: list[str]) -> dict[str, list[Case]]:
        rows = await self.deps.pool.fetch(
            "SELECT customer_id, status, timely FROM objections"
            " WHERE notice_id = $1 AND customer_id = ANY($2::text[])",
            notice_id,
            customer_ids,
        )
        found: dict[str, list[Case]] = {}
        for row in rows:
            found.setdefault(row["customer_id"], []).append(
                Case(CaseStatus(row["status"]), row["timely"])
            )
        return found

    async def _apply(
        self, spec: NoticeSpec, row: Any, verdict: Verdict, cases: list[Case], now: datetime
    ) -> str | None:
        customer_id = row["customer_id"]
        stream = eventstore.notice_stream(spec.notice_id)
        settled = is_settled(verdict, cases)
        consent = consent_required(spec.opt_in, row["authorisation"])
        change = None
        async with self.deps.pool.acquire() as connection, connection.transaction():
            # The customer's row and enablement are the events' projection; only the outbox
            # flag for the activation mail is written here.
            if verdict is Verdict.activate and not row["activated"]:
                later = await _superseded(connection, spec, customer_id)
                if later is not None:  # removed, replaced or re-termed since: never on again
                    await _exclude_superseded(connection, spec, row, later, now)
                    verdict = Verdict.excluded_by_ops
                    settled = is_settled(verdict, cases)
            if verdict is Verdict.activate and not row["activated"]:
                change = "on"
                if is_deemed_acceptance(consent, cases, row["opted_in"]):
                    await records.record_one(
                        connection,
                        stream,
                        f"deemed/{customer_id}",
                        events.DeemedAcceptance(customer_id=customer_id, deadline=row["deadline"]),
                        row["deadline"],
                    )
                await switch_subprocessor(
                    connection,
                    spec.notice_id,
                    spec.subprocessor,
                    customer_id,
                    True,
                    now,
                    activation_ground(consent, cases, row["opted_in"]),
                )
                await _owe_mail(connection, spec.notice_id, customer_id)
                if spec.replaces is not None:  # a replacement: the old one off, in the same step
                    await _switch_off_if_on(connection, spec, spec.replaces, customer_id, now)
            elif verdict is Verdict.removed:
                # Off for the customer whichever notice switched it on (nothing if it was not on);
                # a customer it was on for is told it is off (the same outbox flag).
                if await _switch_off_if_on(connection, spec, spec.subprocessor, customer_id, now):
                    change = "off"
                    await _owe_mail(connection, spec.notice_id, customer_id)
            elif (
                verdict in OFF_VERDICTS
                and spec.kind is ChangeKind.material_change
                and not row["activated"]
            ):
                # The customer refused the changed terms: the sub-processor, on for it under an
                # earlier notice, is switched off (it cannot go on under terms it refused), and
                # the customer is told (the same outbox flag).
                off = await _switch_off_if_on(
                    connection, spec, spec.subprocessor, customer_id, now, verdict.value
                )
                if off:
                    change = "off"
                    await _owe_mail(connection, spec.notice_id, customer_id)
            elif (verdict in OFF_VERDICTS or verdict is Verdict.held) and row["activated"]:
                # held: a timely case judged after the switch-on (a reply mail's receipt time
                # before the deadline, classified later) holds it off until ops resolve (rule 9).
                change = "off"
                await switch_off(
                    connection, spec.notice_id, spec.subprocessor, customer_id, now, verdict.value
                )
            if settled:
                await records.record_one(
                    connection,
                    stream,
                    f"settled/{customer_id}/{verdict.value}/{now.isoformat()}",
                    events.CustomerSettled(customer_id=customer_id, verdict=verdict),
                    now,
                )
        return change

    async def _mail_activation(
        self, spec: NoticeSpec, customer_ids: list[str], progress: Progress
    ) -> None:
        if not customer_ids:
            return
        refused: set[str] = set()
        if spec.kind is ChangeKind.material_change:  # those switched off: they refused it
            refused = {
                row["customer_id"]
                for row in await self.deps.pool.fetch(
                    "SELECT customer_id FROM recipients WHERE notice_id = $1"
                    " AND customer_id = ANY($2::text[]) AND NOT activated",
                    spec.notice_id,
                    customer_ids,
                )
            }
        contexts: dict[tuple[bool, str], dict[str, Any]] = {}  # one per kind of mail and language

        def context_for(recipient: Recipient) -> dict[str, Any]:
            key = (recipient.customer_id in refused, lang.language_of(recipient.language))
            if key not in contexts:
                words = refusal_words if key[0] else taking_effect_words
                contexts[key] = update_context(spec, *words(spec, key[1]), key[1])
            return contexts[key]

        await mail_update(self.deps, spec, customer_ids, "activation", context_for, progress)
        await self.deps.pool.execute(
            "UPDATE recipients SET activation_mail_due = false"
            " WHERE notice_id = $1 AND customer_id = ANY($2::text[])",
            spec.notice_id,
            customer_ids,
        )
