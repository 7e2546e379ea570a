"""Re-derived verdicts: one notice stream's events replayed through the domain's own rules.

Pure: the events come in as plain records (:class:`EventRecord`: type, schema version, data as
JSON values, occurrence time, stream version), so the same replay serves a pack's
``events.jsonl`` and the event store alike. :func:`derive` returns, per customer, what the events
say its outcome is — delivered or not (and when), deadline, each case (``timely`` re-derived with
:func:`rules.is_timely`), opted in or not, excluded, activated or not at the end, the verdict and
why — and every place where a recorded decision does not follow from the rules at the moment it
was taken (a switch-on before the deadline, with a timely case open, without an opt-in on an
opt-in notice or while undelivered; a recorded ``timely`` that disagrees; a ``customer_settled``
verdict that ``decide`` would not give). docs/verifying.md writes the same algorithm for auditors.

What the events cannot say: an activation round that settles nobody appends nothing, so the
verdict of an unsettled customer (waiting for its deadline or delivery, held) is the rules' view
at ``as_of``, not a recorded fact; and the audience event carries a hash of the contract terms,
not the terms, so a deadline is checked against the terms only when they are given (``terms``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from noticeflow.domain.rules import (
    OFF_VERDICTS,
    REPLACED,
    Case,
    CaseStatus,
    ChangeKind,
    Delivery,
    Verdict,
    activation_ground,
    consent_required,
    decide,
    is_deemed_acceptance,
    is_settled,
    is_timely,
)

_VERDICTS = frozenset(verdict.value for verdict in Verdict)
CANCELLED = "cancelled"  # the records' verdict of a customer left off by a cancellation


class EventRecord(NamedTuple):
    """One event as stored: ``data`` holds JSON values (instants as ISO 8601 strings)."""

    event_type: str
    schema_version: int
    data: Mapping[str, Any]
    occurred_at: datetime
    version: int = 0  # its place in the stream (named in problems); 0 when unknown

    @classmethod
    def from_json(cls, event: Mapping[str, Any]) -> EventRecord:
        """From the stored JSON form (a pack's events.jsonl line, ``StoredEvent.as_json``)."""
        return cls(
            str(event["event_type"]),
            int(event.get("schema_version", 1)),
            event.get("data") or {},
            datetime.fromisoformat(str(event["occurred_at"])),
            int(event.get("version", 0)),
        )


@dataclass(frozen=True)
class Problem:
    """A place where the events (or the records compared with them) break the rules."""

    customer_id: str | None
    field: str
    message: str
    version: int | None = None  # the event's stream version, when one event is at fault

    def __str__(self) -> str:
        where = f"customer {self.customer_id}" if self.customer_id else "notice"
        event = f" (event version {self.version})" if self.version else ""
        return f"{where}: {self.message}{event}"


@dataclass(frozen=True)
class CaseOutcome:
    key: str
    received_at: datetime
    timely: bool  # re-derived: is_timely(received_at, the customer's deadline when judged)
    recorded_timely: bool | None
    status: CaseStatus
    resolved_at: datetime | None = None


@dataclass(frozen=True)
class CustomerOutcome:
    """What the events say about one customer, at the end of the stream."""

    customer_id: str
    delivery: Delivery
    delivered_at: datetime | None
    deadline: datetime | None
    cases: tuple[CaseOutcome, ...]
    opted_in: bool
    opted_in_at: datetime | None
    excluded_at: datetime | None
    activated: bool
    activated_at: datetime | None
    switched_at: datetime | None  # its last switch-on or switch-off
    deemed_accepted_at: datetime | None
    verdict: str | None  # a Verdict value, "cancelled", or None (not decided yet)
    settled: bool
    record_verdict: str | None  # the verdict the records hold (see _Customer.record_verdict)
    ground: str  # why, in one word: an activation ground, a verdict, or what it waits for
    why: str  # the same, readable, with its instants

    @property
    def latest_case(self) -> CaseOutcome | None:
        return max(self.cases, key=lambda c: c.received_at, default=None)


@dataclass(frozen=True)
class Derivation:
    notice_id: str | None
    opt_in: bool
    effective_at: datetime | None
    cancelled: bool
    customers: dict[str, CustomerOutcome]
    problems: tuple[Problem, ...]


# --- the replay ----------------------------------------------------------------------------------


@dataclass
class _Case:
    key: str
    received_at: datetime
    timely: bool
    recorded_timely: bool | None
    status: CaseStatus = CaseStatus.open
    resolved_at: datetime | None = None


@dataclass
class _Customer:
    customer_id: str
    delivery: Delivery = Delivery.pending
    delivered_at: datetime | None = None
    deadline: datetime | None = None
    cases: dict[str, _Case] = field(default_factory=dict)
    opted_in: bool = False
    opted_in_at: datetime | None = None
    excluded_at: datetime | None = None
    activated: bool = False
    activated_at: datetime | None = None
    switched_at: datetime | None = None
    deemed_accepted_at: datetime | None = None
    deemed_event: datetime | None = None  # the deadline its deemed_acceptance event names
    ground: str = ""  # the activation ground at its last switch-on
    verdict: str | None = None
    settled: bool = False
    # The verdict the records hold (noticeflow/records.py): a switch-on's "activate", a
    # switch-off's verdict (none for a revoked opt-in or a resolution), a settlement's, a
    # cancellation's; an unsettled verdict is no event.
    record_verdict: str | None = None
    # What its contract asks (as frozen with the audience): general, specific or dora.
    authorisation: str = "general"

    def rule_cases(self) -> list[Case]:
        return [Case(c.status, c.timely) for c in self.cases.values()]


@dataclass
class _Replay:
    terms: Callable[[str, datetime], datetime | None] | None
    notice_id: str | None = None
    opt_in: bool = False
    kind: ChangeKind = ChangeKind.addition
    subprocessor: str | None = None
    replaces: str | None = None
    effective_at: datetime | None = None
    cancelled: bool = False
    customers: dict[str, _Customer] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    audience: list[EventRecord] = field(default_factory=list)  # the snapshot, or its parts

    def problem(self, customer_id: str | None, name: str, message: str, e: EventRecord) -> None:
        self.problems.append(Problem(customer_id, name, message, e.version or None))

    def customer(self, e: EventRecord) -> _Customer | None:
        customer_id = str(e.data.get("customer_id"))
        found = self.customers.get(customer_id)
        if found is None:
            self.problem(
                customer_id, "customer_id", f"{e.event_type} for a customer not in the audience", e
            )
        return found

    def consent(self, c: _Customer) -> bool:
        """Whether silence is refusal for this customer (an opt-in notice, or its contract)."""
        return consent_required(self.opt_in, c.authorisation)

    def verdict_at(self, c: _Customer, now: datetime) -> Verdict | None:
        if self.effective_at is None or now < self.effective_at:
            return None
        return decide(
            now=now,
            effective_at=self.effective_at,
            delivery=c.delivery,
            deadline=c.deadline,
            opt_in_notice=self.consent(c),
            opted_in=c.opted_in,
            cases=c.rule_cases(),
            excluded_by_ops=c.excluded_at is not None,
            kind=self.kind,
        )

    # one method per event type; unknown types change no outcome

    def notice_created(self, e: EventRecord) -> None:
        spec = e.data.get("spec") or {}
        self.notice_id = spec.get("notice_id")
        self.opt_in = bool(spec.get("opt_in"))
        try:  # as the notice says (none said before change kinds: an addition)
            self.kind = ChangeKind(spec.get("kind") or ChangeKind.addition)
        except ValueError:
            self.problem(None, "kind", f"unknown change kind {spec.get('kind')!r}", e)
        self.subprocessor = spec.get("subprocessor")
        self.replaces = spec.get("replaces")
        self.effective_at = _instant(spec.get("effective_at"))

    def notice_postponed(self, e: EventRecord) -> None:
        self.effective_at = _instant(e.data.get("to")) or self.effective_at

    def phase_changed(self, e: EventRecord) -> None:
        self.effective_at = _instant(e.data.get("effective_at")) or self.effective_at
        if e.data.get("phase") == CANCELLED:
            self.cancelled = True

    def notice_cancelled(self, e: EventRecord) -> None:
        self.cancelled = True
        for c in self.customers.values():  # as the records: those not switched on are settled
            if not c.activated:
                c.verdict, c.settled, c.record_verdict = CANCELLED, True, CANCELLED

    def audience_snapshotted(self, e: EventRecord) -> None:
        self.audience.append(e)
        terms = e.data.get("terms") or {}
        for customer_id in e.data.get("customer_ids") or []:
            c = self.customers.setdefault(str(customer_id), _Customer(str(customer_id)))
            c.authorisation = str((terms.get(customer_id) or {}).get("authorisation") or "general")

    def notice_delivered(self, e: EventRecord) -> None:
        c = self.customer(e)
        if c is None:
            return
        starts = c.delivery is not Delivery.delivered
        recorded = e.data.get("clock_started")
        if recorded is not None and bool(recorded) != starts:
            self.problem(
                c.customer_id,
                "clock_started",
                f"notice_delivered says clock_started {_word(recorded)}, the events before it"
                f" say {_word(starts)}",
                e,
            )
        if not starts:
            return  # a resend to a delivered customer: its clock already runs
        c.delivery = Delivery.delivered
        c.delivered_at = _instant(e.data.get("delivered_at"))
        c.deadline = _instant(e.data.get("deadline"))
        if self.kind is ChangeKind.removal:  # informational: no window, so no deadline
            if c.deadline is not None:
                self.problem(
                    c.customer_id, "deadline", "notice_delivered gives a removal a deadline", e
                )
                c.deadline = None
            return
        if c.delivered_at is None or c.deadline is None:
            self.problem(
                c.customer_id, "deadline", "notice_delivered without delivered_at or deadline", e
            )
        elif self.terms is not None:
            expected = self.terms(c.customer_id, c.delivered_at)
            if expected is not None and expected != c.deadline:
                self.problem(
                    c.customer_id,
                    "deadline",
                    f"notice_delivered says deadline {_at(c.deadline)}, the contract terms give"
                    f" {_at(expected)} for delivery at {_at(c.delivered_at)}",
                    e,
                )

    def notice_undelivered(self, e: EventRecord) -> None:
        c = self.customer(e)
        if c is not None and c.delivery is not Delivery.delivered:
            c.delivery, c.delivered_at, c.deadline = Delivery.undelivered, None, None

    def objection_received(self, e: EventRecord) -> None:
        c = self.customers.get(str(e.data.get("customer_id")))
        if c is not None and e.data.get("request") == "changes" and c.authorisation != "dora":
            self.problem(
                c.customer_id,
                "request",
                f"a request for changes from a customer with {c.authorisation} authorisation"
                " (only a dora contract requests changes)",
                e,
            )
        self._case(e)

    def _case(self, e: EventRecord) -> None:
        c = self.customer(e)
        if c is None:
            return
        key = str(e.data.get("idempotency_key") or e.data.get("receipt_id"))
        received_at = _instant(e.data.get("received_at")) or e.occurred_at
        timely = is_timely(received_at, c.deadline)
        recorded = e.data.get("timely")
        if recorded is not None and bool(recorded) != timely:
            self.problem(
                c.customer_id,
                "timely",
                f"objection {key} is recorded as {'timely' if recorded else 'late'}; received"
                f" {_at(received_at)} against deadline {_at(c.deadline)} it is"
                f" {'timely' if timely else 'late'}",
                e,
            )
        if "deadline" in e.data and _instant(e.data.get("deadline")) != c.deadline:
            self.problem(
                c.customer_id,
                "deadline",
                f"objection {key} was judged against deadline {_at(_instant(e.data['deadline']))},"
                f" the events before it say {_at(c.deadline)}",
                e,
            )
        c.cases[key] = _Case(key, received_at, timely, None if recorded is None else bool(recorded))
        c.settled = False

    def objection_resolved(self, e: EventRecord) -> None:
        c = self.customer(e)
        if c is None:
            return
        outcome = str(e.data.get("outcome"))
        try:
            status = CaseStatus(outcome)
        except ValueError:
            self.problem(c.customer_id, "outcome", f"unknown case outcome {outcome!r}", e)
            return
        keys = [str(k) for k in e.data.get("objections") or []]
        still_open = {k for k, case in c.cases.items() if case.status is CaseStatus.open}
        for key in keys:
            case = c.cases.get(key)
            if case is None or case.status is not CaseStatus.open:
                self.problem(
                    c.customer_id, "objections", f"objection_resolved closes {key}, not open", e
                )
                continue
            case.status, case.resolved_at = status, e.occurred_at
        left = still_open - set(keys)
        if left:
            self.problem(
                c.customer_id,
                "objections",
                f"objection_resolved leaves {', '.join(sorted(left))} open (a resolution closes"
                " every open case)",
                e,
            )
        c.settled = False

    def opt_in_recorded(self, e: EventRecord) -> None:
        self._opt_in(e, True)

    def opt_in_revoked(self, e: EventRecord) -> None:
        self._opt_in(e, False)

    def _opt_in(self, e: EventRecord, opted_in: bool) -> None:
        c = self.customer(e)
        if c is None:
            return
        if not self.consent(c) and c.authorisation != "dora":
            self.problem(
                c.customer_id,
                "opted_in",
                f"{e.event_type} on an ordinary notice, from a customer with {c.authorisation}"
                " authorisation",
                e,
            )
        c.opted_in, c.opted_in_at, c.settled = opted_in, e.occurred_at, False

    def customer_excluded(self, e: EventRecord) -> None:
        c = self.customer(e)
        if c is not None:
            c.excluded_at = c.excluded_at or e.occurred_at
            c.settled = False

    def deemed_acceptance(self, e: EventRecord) -> None:
        c = self.customer(e)
        if c is None:
            return
        deadline = _instant(e.data.get("deadline"))
        if deadline != c.deadline:
            self.problem(
                c.customer_id,
                "deemed_accepted_at",
                f"deemed_acceptance names deadline {_at(deadline)}, the events say"
                f" {_at(c.deadline)}",
                e,
            )
        if not is_deemed_acceptance(self.consent(c), c.rule_cases(), c.opted_in):
            self.problem(
                c.customer_id,
                "deemed_accepted_at",
                "deemed_acceptance where silence is not acceptance"
                + (
                    " (an opt-in notice)"
                    if self.opt_in
                    else " (specific authorisation)"
                    if self.consent(c)
                    else " (a timely objection)"
                ),
                e,
            )
        c.deemed_event = deadline

    def _other(self, e: EventRecord) -> bool:
        """A switch of a sub-processor this notice does not engage (only a replacement's
        switch-off of the one it replaces is allowed); True when ``e`` is one."""
        name = e.data.get("subprocessor")
        if self.subprocessor is None or name == self.subprocessor:
            return False
        c = self.customer(e)
        if c is None:
            return True
        now = e.occurred_at
        if (
            e.event_type != "subprocessor_disabled"
            or self.kind is not ChangeKind.replacement
            or name != self.replaces
        ):
            self.problem(
                c.customer_id,
                "subprocessor",
                f"{e.event_type} names {name!r}, which this notice does not engage"
                + (f" or replace ({self.replaces!r})" if self.replaces else ""),
                e,
            )
        elif e.data.get("because") != REPLACED:
            self.problem(
                c.customer_id,
                "because",
                f"{name} switched off because {e.data.get('because')!r}; a replacement switches"
                f" it off because {REPLACED!r}",
                e,
            )
        elif not c.activated or c.switched_at != now:
            self.problem(
                c.customer_id,
                "activated",
                f"{name} switched off as replaced {_at(now)} without {self.subprocessor} switched"
                " on for the customer at that instant",
                e,
            )
        return True

    def subprocessor_enabled(self, e: EventRecord) -> None:
        if self._other(e):
            return
        c = self.customer(e)
        if c is None:
            return
        now = e.occurred_at
        broken = self._why_not_on(c, now)
        if broken:
            self.problem(c.customer_id, "activated", f"switched on {_at(now)} {broken}", e)
        ground = activation_ground(self.consent(c), c.rule_cases(), c.opted_in)
        because = e.data.get("because")
        if because is not None and because != ground:
            self.problem(
                c.customer_id,
                "ground",
                f"switched on because {because!r}, the rules give {ground!r}",
                e,
            )
        deemed = is_deemed_acceptance(self.consent(c), c.rule_cases(), c.opted_in)
        if deemed and c.deemed_event is None:
            self.problem(
                c.customer_id, "deemed_accepted_at", "deemed acceptance without its event", e
            )
        if c.activated:
            self.problem(c.customer_id, "activated", "switched on while already on", e)
        c.activated, c.activated_at, c.switched_at, c.ground = True, now, now, ground
        c.record_verdict = Verdict.activate.value
        c.deemed_accepted_at = c.deadline if deemed else None

    def subprocessor_disabled(self, e: EventRecord) -> None:
        if self._other(e):
            return
        c = self.customer(e)
        if c is None:
            return
        if self.kind is ChangeKind.removal:
            self._removed(c, e)
            return
        if self.kind is ChangeKind.material_change and not c.activated:
            self._refused_change(c, e)
            return
        if not c.activated:
            self.problem(c.customer_id, "activated", "switched off while not on", e)
        c.activated, c.switched_at = False, e.occurred_at
        because = e.data.get("because")
        c.record_verdict = because if because in _VERDICTS else None

    def _removed(self, c: _Customer, e: EventRecord) -> None:
        """A removal's switch-off: on its effective date, whichever notice switched it on (the
        customer was never on under the removal itself)."""
        verdict = self.verdict_at(c, e.occurred_at)
        because = e.data.get("because")
        if verdict is not Verdict.removed:
            self.problem(
                c.customer_id,
                "activated",
                f"switched off {_at(e.occurred_at)} before the removal's effective date"
                f" {_at(self.effective_at)}",
                e,
            )
        elif because != Verdict.removed.value:
            self.problem(c.customer_id, "because", f"a removal switched off because {because!r}", e)
        if c.switched_at is not None:
            self.problem(c.customer_id, "activated", "switched off twice by the removal", e)
        c.switched_at = e.occurred_at
        c.record_verdict = because if because in _VERDICTS else None

    def _refused_change(self, c: _Customer, e: EventRecord) -> None:
        """A material change's switch-off of a customer it never switched on: the customer
        refused the changed terms (an off verdict at that instant, and ``because`` says which),
        so the sub-processor, on under an earlier notice, is off for it."""
        verdict = self.verdict_at(c, e.occurred_at)
        because = e.data.get("because")
        if verdict is None or verdict not in OFF_VERDICTS:
            self.problem(
                c.customer_id,
                "activated",
                f"switched off {_at(e.occurred_at)} while not on, and the rules give"
                f" {verdict.value if verdict else 'no verdict'} (not a refusal of the change)",
                e,
            )
        elif because != verdict.value:
            self.problem(
                c.customer_id,
                "because",
                f"switched off because {because!r}, the rules give {verdict.value!r}",
                e,
            )
        if c.switched_at is not None:
            self.problem(c.customer_id, "activated", "switched off twice by the change", e)
        c.switched_at = e.occurred_at
        c.record_verdict = because if because in _VERDICTS else None

    def customer_settled(self, e: EventRecord) -> None:
        c = self.customer(e)
        if c is None:
            return
        recorded = str(e.data.get("verdict"))
        derived = self.verdict_at(c, e.occurred_at)
        if derived is None or derived.value != recorded:
            self.problem(
                c.customer_id,
                "verdict",
                f"settled as {recorded} at {_at(e.occurred_at)}; the rules give"
                f" {derived.value if derived else 'no verdict (before the effective date)'}",
                e,
            )
        elif any(case.status is CaseStatus.open for case in c.cases.values()):
            self.problem(
                c.customer_id, "settled", f"settled as {recorded} with a case still open", e
            )
        elif not is_settled(derived, c.rule_cases()):
            self.problem(
                c.customer_id, "settled", f"settled as {recorded}, which settles nothing", e
            )
        if recorded == Verdict.activate.value and not c.activated:
            self.problem(c.customer_id, "activated", "settled as activate while switched off", e)
        if recorded in {v.value for v in OFF_VERDICTS} and c.activated:
            self.problem(c.customer_id, "activated", f"settled as {recorded} while on", e)
        c.verdict, c.settled, c.record_verdict = recorded, True, recorded

    def _why_not_on(self, c: _Customer, now: datetime) -> str | None:
        """Why a switch-on at ``now`` breaks the rules (None: ``decide`` says activate)."""
        if self.cancelled:
            return "after the notice was cancelled"
        if self.effective_at is None or now < self.effective_at:
            return f"before the effective date {_at(self.effective_at)}"
        verdict = self.verdict_at(c, now)
        if verdict is Verdict.activate:
            return None
        return {
            Verdict.wait_for_delivery: "while undelivered",
            Verdict.wait_for_deadline: f"before its deadline {_at(c.deadline)}",
            Verdict.held: "while a timely objection was open"
            + _since(c, lambda case: case.status is CaseStatus.open and case.timely),
            Verdict.declined: "without an opt-in on an opt-in notice"
            if self.opt_in
            else "without the authorisation its specific contract requires",
            Verdict.excluded: "after its objection was upheld (excluded)",
            Verdict.terminated: "after the affected service was terminated",
            Verdict.excluded_by_ops: f"after ops excluded it ({_at(c.excluded_at)})",
            Verdict.removed: "by a removal notice",
        }.get(verdict or Verdict.wait_for_deadline, f"against the verdict {verdict}")


HANDLED = {
    "notice_created", "notice_postponed", "phase_changed", "notice_cancelled",
    "audience_snapshotted", "notice_delivered", "notice_undelivered", "objection_received",
    "objection_resolved", "opt_in_recorded", "opt_in_revoked", "customer_excluded",
    "deemed_acceptance", "subprocessor_enabled", "subprocessor_disabled", "customer_settled",
}  # fmt: skip


def derive(
    events: Iterable[EventRecord],
    *,
    as_of: datetime | None = None,
    terms: Callable[[str, datetime], datetime | None] | None = None,
) -> Derivation:
    """Replay one notice stream, in stream order. ``as_of``: the moment the outcome of an
    unsettled customer is judged at (default: the last event's time). ``terms``: the deadline a
    customer's contract terms give for a delivery at an instant (None: unknown, not checked)."""
    replay = _Replay(terms)
    last: datetime | None = None
    for event in events:
        last = event.occurred_at if last is None else max(last, event.occurred_at)
        if event.event_type in HANDLED:
            getattr(replay, event.event_type)(event)
    _check_parts(replay)
    moment = as_of or last
    outcomes = {
        customer_id: _outcome(replay, c, moment)
        for customer_id, c in sorted(replay.customers.items())
    }
    return Derivation(
        replay.notice_id,
        replay.opt_in,
        replay.effective_at,
        replay.cancelled,
        outcomes,
        tuple(replay.problems),
    )


def _check_parts(replay: _Replay) -> None:
    """An audience frozen in parts: parts 1..n in order, each ``after`` the last id of the part
    before, no customer in two parts, together as many customers as each says. (The order of the
    ids within and across parts is the database's collation's: not checked here.)"""
    parted = [e for e in replay.audience if e.data.get("part")]
    if not parted:
        if len(replay.audience) > 1:
            replay.problem(
                None, "audience", "the audience is frozen more than once", replay.audience[1]
            )
        return
    last: str | None = None
    seen: set[str] = set()
    for number, e in enumerate(parted, start=1):
        ids = [str(i) for i in e.data.get("customer_ids") or []]
        said = e.data.get("part"), e.data.get("after")
        if said != (number, last) or seen.intersection(ids) or len(set(ids)) != len(ids):
            replay.problem(
                None, "audience", f"audience part {said[0]} is not part {number} after"
                f" {last or 'the start'} (parts missing, repeated, out of order or overlapping)", e,
            )  # fmt: skip
            return
        seen.update(ids)
        last = ids[-1] if ids else last
    expected = {e.data.get("parts") for e in parted} | {len(parted)}
    total = {e.data.get("customers") for e in parted} | {len(seen)}
    if len(expected) > 1 or len(total) > 1 or len(replay.audience) != len(parted):
        replay.problem(
            None, "audience", f"the audience's parts do not add up: {len(parted)} part(s) of"
            f" {sorted(map(str, expected))}, {len(seen)} customer(s) of"
            f" {sorted(map(str, total))}", parted[-1],
        )  # fmt: skip


def _outcome(replay: _Replay, c: _Customer, as_of: datetime | None) -> CustomerOutcome:
    verdict, ground, why = c.verdict, "", ""
    if c.activated:
        ground = c.ground
        why = f"switched on {_at(c.activated_at)}: " + {
            "opted_in": "opted in",
            "approved": "approved the change (a dora contract)",
            "deemed_acceptance": f"silence until its deadline {_at(c.deadline)}",
            "objection_withdrawn": "its timely objection was withdrawn",
        }.get(ground, ground)
    elif c.settled and verdict is not None:
        ground, why = verdict, _off_words(replay, c, verdict)
    else:
        current = (
            replay.verdict_at(c, as_of) if as_of is not None and not replay.cancelled else None
        )
        if replay.cancelled:
            ground, why = CANCELLED, "the notice was cancelled"
        elif current is None:
            ground = "not_yet_effective"
            why = f"before the effective date {_at(replay.effective_at)}"
        else:
            ground, why = current.value, _off_words(replay, c, current.value)
            if current in OFF_VERDICTS or current is Verdict.activate:
                if any(case.status is CaseStatus.open for case in c.cases.values()):
                    ground = "case_open"  # final but for a (late) case ops have not closed
                    why = "a late objection is open" + _since(
                        c, lambda case: case.status is CaseStatus.open
                    )
                else:  # due: no activation round has recorded it yet
                    ground = "due"
                    why = f"the rules give {current.value} at {_at(as_of)}; not recorded yet"
        if not c.settled:
            verdict = None if current is None else current.value
    cases = tuple(
        CaseOutcome(k.key, k.received_at, k.timely, k.recorded_timely, k.status, k.resolved_at)
        for k in sorted(c.cases.values(), key=lambda k: (k.received_at, k.key))
    )
    return CustomerOutcome(
        customer_id=c.customer_id,
        delivery=c.delivery,
        delivered_at=c.delivered_at,
        deadline=c.deadline,
        cases=cases,
        opted_in=c.opted_in,
        opted_in_at=c.opted_in_at,
        excluded_at=c.excluded_at,
        activated=c.activated,
        activated_at=c.activated_at,
        switched_at=c.switched_at,
        deemed_accepted_at=c.deemed_accepted_at,
        verdict=verdict,
        settled=c.settled,
        record_verdict=c.record_verdict,
        ground=ground,
        why=why,
    )


def _off_words(replay: _Replay, c: _Customer, verdict: str) -> str:
    return {
        Verdict.wait_for_delivery.value: "not delivered",
        Verdict.wait_for_deadline.value: f"its window is open until {_at(c.deadline)}",
        Verdict.held.value: "objection open and timely"
        + _since(c, lambda case: case.status is CaseStatus.open and case.timely),
        Verdict.declined.value: "no opt-in where silence is refusal (an opt-in notice or a"
        " specific contract)",
        Verdict.excluded.value: "its objection was upheld (excluded)",
        Verdict.terminated.value: "the affected service is terminated",
        Verdict.excluded_by_ops.value: f"excluded by ops {_at(c.excluded_at)}",
        Verdict.activate.value: "switched on",
        Verdict.removed.value: f"removed: off for everyone from {_at(replay.effective_at)}",
        CANCELLED: "the notice was cancelled",
    }.get(verdict, verdict)


def _since(c: _Customer, which: Callable[[_Case], bool]) -> str:
    found = [case.received_at for case in c.cases.values() if which(case)]
    return f" since {_at(min(found))}" if found else ""


def _instant(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def _at(value: datetime | None) -> str:
    return "none" if value is None else value.isoformat()


def _word(value: Any) -> str:
    return "true" if value else "false"
