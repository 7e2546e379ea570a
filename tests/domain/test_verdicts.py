"""Re-derived verdicts, pure: a notice stream's events replayed through the rules.

Streams are built by hand as the activities append them (same types, fields and order); every
recorded decision that the rules would not take at its moment is a problem naming the customer
and the field. Instants are fixed, never read from the clock.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from noticeflow.domain.rules import CaseStatus, Delivery, Verdict
from noticeflow.domain.verdicts import EventRecord, derive

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
WINDOW = timedelta(days=21)
EFFECTIVE = T0 + timedelta(days=30)


class Stream:
    """Appends events as the product does; ``at`` is days after T0."""

    def __init__(self, opt_in: bool = False, customers: tuple[str, ...] = ("a", "b")) -> None:
        self.events: list[EventRecord] = []
        self.add(0, "notice_created", spec={"notice_id": "n", "opt_in": opt_in,
                                            "effective_at": EFFECTIVE.isoformat()})  # fmt: skip
        self.add(0, "audience_snapshotted", customer_ids=list(customers))

    def add(self, days: float, event_type: str, **data: Any) -> Stream:
        at = T0 + timedelta(days=days)
        self.events.append(EventRecord(event_type, 1, data, at, len(self.events) + 1))
        return self

    def delivered(self, customer: str, days: float = 0, started: bool = True) -> Stream:
        at = T0 + timedelta(days=days)
        return self.add(days, "notice_delivered", customer_id=customer, delivered_at=at.isoformat(),
                        deadline=(at + WINDOW).isoformat(), clock_started=started)  # fmt: skip

    def objection(self, customer: str, days: float, key: str, timely: bool) -> Stream:
        at = T0 + timedelta(days=days)
        return self.add(days, "objection_received", customer_id=customer, idempotency_key=key,
                        timely=timely, received_at=at.isoformat())  # fmt: skip

    def resolved(self, customer: str, days: float, outcome: str, *keys: str) -> Stream:
        return self.add(
            days, "objection_resolved", customer_id=customer, outcome=outcome, objections=list(keys)
        )

    def on(self, customer: str, days: float, because: str) -> Stream:
        return self.add(days, "subprocessor_enabled", customer_id=customer, because=because,
                        subprocessor="S")  # fmt: skip

    def off(self, customer: str, days: float, because: str) -> Stream:
        return self.add(days, "subprocessor_disabled", customer_id=customer, because=because,
                        subprocessor="S")  # fmt: skip

    def settled(self, customer: str, days: float, verdict: str) -> Stream:
        return self.add(days, "customer_settled", customer_id=customer, verdict=verdict)

    def deemed(self, customer: str) -> Stream:
        deadline = next(
            e.data["deadline"] for e in self.events
            if e.event_type == "notice_delivered" and e.data["customer_id"] == customer
        )  # fmt: skip
        self.events.append(
            EventRecord("deemed_acceptance", 1, {"customer_id": customer, "deadline": deadline},
                        datetime.fromisoformat(deadline), len(self.events) + 1)
        )  # fmt: skip
        return self

    def derive(self, **kwargs: Any):
        return derive(self.events, **kwargs)


def fields(result) -> set[tuple[str | None, str]]:
    return {(p.customer_id, p.field) for p in result.problems}


def test_an_ordinary_lifecycle_derives_without_problems():
    s = Stream(customers=("a", "b", "c", "d"))
    s.delivered("a").delivered("b").delivered("c").add(0, "notice_undelivered", customer_id="d")
    s.objection("b", 5, "k1", True).objection("c", 25, "k2", False)
    s.deemed("a").on("a", 30, "deemed_acceptance").settled("a", 30, "activate")
    s.on("c", 30, "deemed_acceptance")  # a late open case does not hold it (its event: deemed)
    s.resolved("b", 31, "excluded", "k1").settled("b", 31.1, "excluded")
    s.resolved("c", 32, "withdrawn", "k2").settled("c", 32.1, "activate")
    result = s.derive()
    assert fields(result) == {("c", "deemed_accepted_at")}  # c's deemed event is missing
    a, b, c, d = (result.customers[k] for k in "abcd")
    assert a.activated and a.verdict == "activate" and a.ground == "deemed_acceptance"
    assert a.deemed_accepted_at == T0 + WINDOW and a.settled
    assert not b.activated and b.verdict == "excluded" and b.cases[0].status is CaseStatus.excluded
    assert b.cases[0].timely and not c.cases[0].timely
    assert c.activated and c.settled
    assert d.delivery is Delivery.undelivered and d.deadline is None and not d.settled
    assert d.ground == Verdict.wait_for_delivery.value and d.verdict == "wait_for_delivery"


def test_switched_on_inside_the_window_is_a_violation_naming_the_customer():
    s = Stream().delivered("a", days=20)  # deadline day 41, after the effective date
    s.deemed("a").on("a", 30, "deemed_acceptance")
    result = s.derive()
    (problem,) = [p for p in result.problems if p.field == "activated"]
    assert problem.customer_id == "a" and "before its deadline" in str(problem)
    assert "customer a" in str(problem) and f"version {s.events[-1].version}" in str(problem)


def test_switched_on_before_the_effective_date_is_a_violation():
    s = Stream().delivered("a").deemed("a").on("a", 25, "deemed_acceptance")
    assert "before the effective date" in str(s.derive().problems[0])


def test_switched_on_with_an_open_timely_case_is_a_violation():
    s = Stream().delivered("a").objection("a", 3, "k", True).on("a", 30, "objection_withdrawn")
    problems = [str(p) for p in s.derive().problems if p.field == "activated"]
    assert problems and "while a timely objection was open since" in problems[0]


def test_switched_on_without_opt_in_on_an_opt_in_notice_is_a_violation():
    s = Stream(opt_in=True).delivered("a").on("a", 30, "opted_in")
    assert ("a", "activated") in fields(s.derive())
    ok = Stream(opt_in=True).delivered("a").add(3, "opt_in_recorded", customer_id="a")
    ok.on("a", 30, "opted_in").settled("a", 30, "activate")
    assert not ok.derive().problems and ok.derive().customers["a"].ground == "opted_in"


def test_switched_on_while_undelivered_is_a_violation():
    s = Stream().add(0, "notice_undelivered", customer_id="a").on("a", 30, "deemed_acceptance")
    assert any("while undelivered" in str(p) for p in s.derive().problems)


def test_a_recorded_timely_that_disagrees_is_named():
    s = Stream().delivered("a").objection("a", 25, "k", True)  # day 25 is after the deadline
    result = s.derive()
    assert fields(result) == {("a", "timely")}
    assert "recorded as timely" in str(result.problems[0])
    assert result.customers["a"].cases[0].timely is False


def test_a_settled_verdict_that_does_not_follow_is_named():
    s = Stream(opt_in=True).delivered("a").settled("a", 30, "excluded")
    assert ("a", "verdict") in fields(s.derive())
    s = Stream().delivered("a").objection("a", 3, "k", True).settled("a", 30, "held")
    assert ("a", "settled") in fields(s.derive())


def test_a_resend_to_a_delivered_customer_keeps_its_clock():
    s = Stream().delivered("a").delivered("a", days=5, started=False)
    assert s.derive().customers["a"].deadline == T0 + WINDOW and not s.derive().problems
    wrong = Stream().delivered("a").delivered("a", days=5, started=True)
    assert ("a", "clock_started") in fields(wrong.derive())


def test_an_unsettled_customer_says_what_it_waits_for():
    s = Stream().delivered("a").delivered("b").objection("b", 3, "k", True)
    before = s.derive(as_of=T0 + timedelta(days=10))
    assert before.customers["a"].ground == "not_yet_effective"
    after = s.derive(as_of=EFFECTIVE)
    assert after.customers["a"].ground == "due" and after.customers["a"].verdict == "activate"
    assert (
        after.customers["b"].ground == "held"
        and "open and timely since" in after.customers["b"].why
    )


def test_events_for_customers_outside_the_audience_are_named():
    s = Stream().delivered("z")
    assert ("z", "customer_id") in fields(s.derive())


def test_a_cancelled_notice_settles_those_not_switched_on():
    s = Stream().delivered("a").add(3, "notice_cancelled", phase="window_open")
    outcome = s.derive().customers["a"]
    assert outcome.verdict == "cancelled" and outcome.settled and outcome.ground == "cancelled"
    s.on("a", 31, "deemed_acceptance")
    assert any("after the notice was cancelled" in str(p) for p in s.derive().problems)


def test_a_postponement_moves_the_effective_date():
    later = EFFECTIVE + timedelta(days=5)
    s = Stream().delivered("a").add(3, "notice_postponed", to=later.isoformat())
    s.deemed("a").on("a", 31, "deemed_acceptance")
    assert any("before the effective date" in str(p) for p in s.derive().problems)


def test_contract_terms_check_the_deadline_when_given():
    s = Stream().delivered("a")
    assert not s.derive(terms=lambda _c, at: at + WINDOW).problems
    result = s.derive(terms=lambda _c, at: at + WINDOW + timedelta(days=9))
    assert fields(result) == {("a", "deadline")}


@given(
    delivered_day=st.integers(0, 28),
    objection_day=st.none() | st.integers(0, 40),
    outcome=st.none() | st.sampled_from(["withdrawn", "excluded", "terminated"]),
    opt_in=st.booleans(),
    opted=st.booleans(),
    round_day=st.integers(30, 60),
)
def test_a_switch_on_passes_exactly_when_decide_says_activate(
    delivered_day, objection_day, outcome, opt_in, opted, round_day
):
    """Whatever the facts, a switch-on at a round is a violation unless the rules allow it; a
    settled verdict recorded as ``decide`` gives it is never one."""
    from noticeflow.domain.rules import Case, activation_ground, decide

    s = Stream(opt_in=opt_in, customers=("a",)).delivered("a", days=delivered_day)
    cases: list[Case] = []
    if opt_in and opted:
        s.add(1, "opt_in_recorded", customer_id="a")
    if objection_day is not None:
        timely = objection_day < delivered_day + 21
        s.objection("a", objection_day, "k", timely)
        cases = [Case(CaseStatus.open, timely)]
        if outcome is not None:
            s.resolved("a", objection_day + 0.5, outcome, "k")
            cases = [Case(CaseStatus(outcome), timely)]
    verdict = decide(
        now=T0 + timedelta(days=round_day), effective_at=EFFECTIVE, delivery=Delivery.delivered,
        deadline=T0 + timedelta(days=delivered_day) + WINDOW, opt_in_notice=opt_in,
        opted_in=opted, cases=cases,
    )  # fmt: skip
    on = Stream(opt_in=opt_in, customers=("a",))
    on.events = list(s.events)
    if activation_ground(opt_in, cases) == "deemed_acceptance":
        on.deemed("a")
    on.on("a", round_day, activation_ground(opt_in, cases))
    switched = [p for p in on.derive().problems if p.field == "activated"]
    assert bool(switched) == (verdict is not Verdict.activate)
    settled = Stream(opt_in=opt_in, customers=("a",))
    settled.events = list(s.events)
    settled.settled("a", round_day, verdict.value)
    assert not [p for p in settled.derive().problems if p.field == "verdict"]
