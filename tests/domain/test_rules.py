"""The settlement rules as pure functions (rules 4, 6, 7, 8 and 9): no PostgreSQL, Temporal or SMTP.

Properties are checked with hypothesis over every combination of delivery, deadline, cases and
opt-in; example tests pin each verdict. Instants are generated, never read from the clock, so no
verdict depends on the seed or the machine's speed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from noticeflow.domain.deadlines import customer_deadline
from noticeflow.domain.rules import (
    OFF_VERDICTS,
    Case,
    CaseStatus,
    Delivery,
    Verdict,
    activation_ground,
    decide,
    effective_date_problem,
    is_deemed_acceptance,
    is_settled,
    is_timely,
)

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
EFFECTIVE = T0 + timedelta(days=30)
instants = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
)
cases = st.lists(
    st.builds(Case, status=st.sampled_from(list(CaseStatus)), timely=st.booleans()), max_size=4
)


@st.composite
def situations(draw: st.DrawFn) -> dict:
    """Everything `decide` looks at, at a moment at or after the effective date."""
    effective_at = draw(instants)
    now = effective_at + draw(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=60)))
    deadline = draw(
        st.one_of(
            st.none(),
            st.just(now),  # exactly at the deadline
            st.builds(
                lambda d: now + d,
                st.timedeltas(min_value=timedelta(days=-60), max_value=timedelta(days=60)),
            ),
        )
    )
    return {
        "now": now,
        "effective_at": effective_at,
        "delivery": draw(st.sampled_from(list(Delivery))),
        "deadline": deadline,
        "opt_in_notice": draw(st.booleans()),
        "opted_in": draw(st.booleans()),
        "cases": draw(cases),
        "excluded_by_ops": draw(st.booleans()),
    }


def base(**overrides: object) -> dict:
    """A delivered customer of an ordinary notice, its deadline passed, nothing else going on."""
    return {
        "now": EFFECTIVE,
        "effective_at": EFFECTIVE,
        "delivery": Delivery.delivered,
        "deadline": EFFECTIVE - timedelta(days=1),
        "opt_in_notice": False,
        "opted_in": False,
        "cases": (),
        "excluded_by_ops": False,
        **overrides,
    }


def open_timely(cases: list[Case]) -> bool:
    return any(case.status is CaseStatus.open and case.timely for case in cases)


# --- properties ---------------------------------------------------------------------------------


@given(situations())
def test_never_activated_inside_a_window_rule_6(s):
    verdict = decide(**s)
    if s["deadline"] is None or s["now"] < s["deadline"]:
        assert verdict is not Verdict.activate


@given(situations())
def test_never_activated_undelivered_rule_4(s):
    if s["delivery"] is not Delivery.delivered:
        assert decide(**s) is not Verdict.activate


@given(situations())
def test_never_activated_with_an_open_timely_case_rule_9(s):
    if open_timely(s["cases"]):
        assert decide(**s) is not Verdict.activate


@given(situations())
def test_never_activated_without_an_opt_in_on_an_opt_in_notice_rule_8(s):
    if s["opt_in_notice"] and not s["opted_in"]:
        assert decide(**s) is not Verdict.activate


@given(situations())
def test_an_upheld_objection_or_ops_exclusion_keeps_a_customer_off(s):
    statuses = {case.status for case in s["cases"]}
    verdict = decide(**s)
    if s["excluded_by_ops"]:
        assert verdict is Verdict.excluded_by_ops
    elif CaseStatus.terminated in statuses:
        assert verdict is Verdict.terminated
    elif CaseStatus.excluded in statuses:
        assert verdict is Verdict.excluded


@given(situations())
def test_activated_exactly_when_every_rule_allows_it(s):
    """The other direction: a customer that every rule lets through is activated (nobody is held
    for ever by a rule that does not apply), and only then."""
    statuses = {case.status for case in s["cases"]}
    allowed = (
        not s["excluded_by_ops"]
        and not statuses & {CaseStatus.terminated, CaseStatus.excluded}
        and s["delivery"] is Delivery.delivered
        and s["deadline"] is not None
        and s["now"] >= s["deadline"]
        and not open_timely(s["cases"])
        and (s["opted_in"] or not s["opt_in_notice"])
    )
    assert (decide(**s) is Verdict.activate) == allowed


@given(situations())
def test_the_waiting_verdicts_say_what_is_awaited(s):
    verdict = decide(**s)
    if verdict is Verdict.wait_for_delivery:
        assert s["delivery"] is not Delivery.delivered or s["deadline"] is None
    if verdict is Verdict.wait_for_deadline:
        assert s["deadline"] is not None and s["now"] < s["deadline"]
    if verdict is Verdict.held:
        assert open_timely(s["cases"]) and s["now"] >= s["deadline"]
    if verdict is Verdict.declined:
        assert s["opt_in_notice"] and not s["opted_in"]


@given(situations(), st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=400)))
def test_an_activation_stays_an_activation_later(s, later):
    """Nothing but a new fact (an objection, a revoked opt-in) turns a customer off again."""
    if decide(**s) is Verdict.activate:
        assert decide(**{**s, "now": s["now"] + later}) is Verdict.activate


@given(situations())
def test_settled_means_a_final_verdict_and_no_open_case(s):
    verdict = decide(**s)
    settled = is_settled(verdict, s["cases"])
    any_open = any(case.status is CaseStatus.open for case in s["cases"])
    final = verdict is Verdict.activate or verdict in OFF_VERDICTS
    assert settled == (final and not any_open)


@given(instants, instants)
def test_timely_is_strictly_before_the_deadline_rule_7(received_at, deadline):
    assert is_timely(received_at, deadline) == (received_at < deadline)


@given(instants)
def test_an_objection_before_delivery_is_timely(received_at):
    assert is_timely(received_at, None)


@given(
    instants,
    st.integers(1, 60),
    st.sampled_from(["UTC", "America/New_York", "Europe/Berlin", "Asia/Tokyo"]),
    st.floats(0, 1),
)
def test_no_customer_is_activated_inside_its_counted_window(delivered, days, zone, fraction):
    """Deadlines as counted (EU 1182/71) and decide together: any moment from delivery up to the
    deadline is inside the window, and an objection then is timely."""
    deadline = customer_deadline(delivered, timedelta(days=days), zone)
    now = delivered + (deadline - delivered) * fraction
    assume(now < deadline)
    assert is_timely(now, deadline)
    verdict = decide(**base(now=now, effective_at=delivered, deadline=deadline))
    assert verdict is Verdict.wait_for_deadline
    assert decide(**base(now=deadline, effective_at=delivered, deadline=deadline)) is (
        Verdict.activate
    )


@given(instants, st.one_of(st.none(), instants), st.text(max_size=10))
@example(T0, T0, "c1")  # effective exactly at the deadline: allowed
@example(T0 - timedelta(microseconds=1), T0, "c1")  # a microsecond before: refused
def test_approval_is_refused_when_effective_before_a_projected_deadline_rule_6(
    effective_at, latest, customer_id
):
    problem = effective_date_problem(effective_at, latest, customer_id)
    if latest is not None and effective_at < latest:
        assert problem is not None
        assert latest.isoformat() in problem and f"customer {customer_id}" in problem
        assert effective_at.isoformat() in problem
    else:
        assert problem is None


# --- examples, one per verdict ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "verdict"),
    [
        ({}, Verdict.activate),
        ({"delivery": Delivery.pending, "deadline": None}, Verdict.wait_for_delivery),
        ({"delivery": Delivery.undelivered, "deadline": None}, Verdict.wait_for_delivery),
        ({"deadline": None}, Verdict.wait_for_delivery),
        ({"delivery": Delivery.undelivered}, Verdict.wait_for_delivery),
        ({"deadline": EFFECTIVE + timedelta(seconds=1)}, Verdict.wait_for_deadline),
        ({"deadline": EFFECTIVE}, Verdict.activate),  # at the deadline the window is closed
        ({"cases": [Case(CaseStatus.open, timely=True)]}, Verdict.held),
        ({"cases": [Case(CaseStatus.open, timely=False)]}, Verdict.activate),  # late: flagged
        ({"cases": [Case(CaseStatus.withdrawn, timely=True)]}, Verdict.activate),
        ({"cases": [Case(CaseStatus.excluded, timely=True)]}, Verdict.excluded),
        ({"cases": [Case(CaseStatus.excluded, timely=False)]}, Verdict.excluded),  # ops upheld
        ({"cases": [Case(CaseStatus.terminated, timely=True)]}, Verdict.terminated),
        (
            {"cases": [Case(CaseStatus.excluded, True), Case(CaseStatus.terminated, True)]},
            Verdict.terminated,
        ),
        ({"opt_in_notice": True}, Verdict.declined),
        ({"opt_in_notice": True, "opted_in": True}, Verdict.activate),
        ({"opted_in": True}, Verdict.activate),
        (
            {"opt_in_notice": True, "opted_in": True, "cases": [Case(CaseStatus.open, True)]},
            Verdict.held,
        ),
        ({"excluded_by_ops": True}, Verdict.excluded_by_ops),
        ({"excluded_by_ops": True, "delivery": Delivery.undelivered}, Verdict.excluded_by_ops),
        ({"cases": [Case(CaseStatus.excluded, True)], "deadline": None}, Verdict.excluded),
        (
            {"cases": [Case(CaseStatus.open, True)], "deadline": EFFECTIVE + timedelta(days=1)},
            Verdict.wait_for_deadline,
        ),
        ({"now": EFFECTIVE + timedelta(days=3)}, Verdict.activate),
    ],
)
def test_each_verdict(overrides, verdict):
    assert decide(**base(**overrides)) is verdict


def test_activation_is_decided_only_from_the_effective_date():
    with pytest.raises(ValueError, match="effective date"):
        decide(**base(now=EFFECTIVE - timedelta(microseconds=1)))
    assert decide(**base(now=EFFECTIVE)) is Verdict.activate


def test_an_objection_received_exactly_at_the_deadline_is_late():
    assert is_timely(T0 - timedelta(microseconds=1), T0)
    assert not is_timely(T0, T0)
    assert not is_timely(T0 + timedelta(microseconds=1), T0)


@pytest.mark.parametrize(
    ("verdict", "case_list", "settled"),
    [
        (Verdict.activate, [], True),
        (Verdict.excluded, [Case(CaseStatus.excluded, True)], True),
        (Verdict.terminated, [Case(CaseStatus.terminated, True)], True),
        (Verdict.declined, [], True),
        (Verdict.excluded_by_ops, [], True),
        (Verdict.activate, [Case(CaseStatus.open, timely=False)], False),  # ops still to look
        (Verdict.held, [Case(CaseStatus.open, True)], False),
        (Verdict.wait_for_deadline, [], False),
        (Verdict.wait_for_delivery, [], False),
        (Verdict.held, [], False),
    ],
)
def test_settled_examples(verdict, case_list, settled):
    assert is_settled(verdict, case_list) is settled


@pytest.mark.parametrize(
    ("opt_in", "case_list", "ground"),
    [
        (True, [], "opted_in"),
        (True, [Case(CaseStatus.withdrawn, True)], "opted_in"),
        (False, [], "deemed_acceptance"),
        (False, [Case(CaseStatus.withdrawn, timely=False)], "deemed_acceptance"),
        (False, [Case(CaseStatus.withdrawn, timely=True)], "objection_withdrawn"),
        (False, [Case(CaseStatus.withdrawn, False), Case(CaseStatus.withdrawn, True)],
         "objection_withdrawn"),
    ],
)  # fmt: skip
def test_activation_ground_says_why(opt_in, case_list, ground):
    assert activation_ground(opt_in, case_list) == ground
    assert is_deemed_acceptance(opt_in, case_list) == (ground == "deemed_acceptance")


def test_the_seed_notice_dates_pass_rule_6_only_with_a_long_enough_window():
    """The seed notice: sent 27 Sept 2023, effective 18 Oct 2023, 21 days. A US customer on
    Pacific time delivered that day has until the end of 18 October local time: activation on
    the 18th at 00:00 UTC would be inside its window, so approval is refused."""
    sent = datetime(2023, 9, 27, 16, 0, tzinfo=UTC)
    effective = datetime(2023, 10, 18, 0, 0, tzinfo=UTC)
    deadline = customer_deadline(sent, timedelta(days=21), "America/Los_Angeles")
    assert effective_date_problem(effective, deadline, "us-1") is not None
    assert effective_date_problem(deadline, deadline, "us-1") is None
