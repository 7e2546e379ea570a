"""The per-customer list (noticeflow/domain/annex.py), pure: at any instant it equals a
brute-force replay of the events; a switch-off removes a sub-processor from that instant on;
before any switch-on the list is empty."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from noticeflow.domain.annex import AnnexEvent, in_use, parse_as_of
from noticeflow.domain.errors import InputError

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
NAMES = ("OpenAI, LLC", "Anthropic", "Mistral")
CUSTOMERS = ("acme", "globex")
NOTICES = ("n1", "n2", "n3")


def spec(notice: str, name: str) -> dict[str, Any]:
    return {
        "notice_id": notice,
        "subprocessor": name,
        "purpose": f"purpose of {notice}",
        "subprocessor_location": f"location of {notice}",
        "data_categories": ["user content"],
        "services": ["assistant"],
        "transfer_mechanism": f"SCCs ({notice})",
    }


def created(notice: str, name: str) -> AnnexEvent:
    return AnnexEvent("notice_created", {"spec": spec(notice, name)}, T0, f"notice-{notice}")


def switch(on: bool, customer: str, name: str, notice: str, at: datetime) -> AnnexEvent:
    kind = "subprocessor_enabled" if on else "subprocessor_disabled"
    data = {"customer_id": customer, "subprocessor": name, "because": "x"}
    return AnnexEvent(kind, data, at, f"notice-{notice}")


# A switch: (on?, customer, sub-processor, notice, minutes after T0). Few values, so that the
# same sub-processor is switched many times, by several notices, sometimes at the same instant.
switches = st.lists(
    st.tuples(
        st.booleans(),
        st.sampled_from(CUSTOMERS),
        st.sampled_from(NAMES),
        st.sampled_from(NOTICES),
        st.integers(0, 20),
    ),
    max_size=30,
)


def brute_force(customer: str, at: datetime, events: list[AnnexEvent]) -> dict[str, Any]:
    """Another way to the same answer: per name, the switches at or before ``at`` in time order
    (ties in the order given); in use when the last is a switch-on; since the earliest switch-on
    with no switch-off after it; details from the last switch-on."""
    specs = {
        e.stream_id: e.data["spec"] for e in reversed(events) if e.event_type == "notice_created"
    }
    result = {}
    for name in NAMES:
        mine = sorted(
            (
                (e.occurred_at, i, e)
                for i, e in enumerate(events)
                if e.event_type != "notice_created"
                and e.data["customer_id"] == customer
                and e.data["subprocessor"] == name
                and e.occurred_at <= at
            ),
            key=lambda x: (x[0], x[1]),
        )
        if not mine or mine[-1][2].event_type != "subprocessor_enabled":
            continue
        offs = [k for k, (_, _, e) in enumerate(mine) if e.event_type == "subprocessor_disabled"]
        run = mine[(offs[-1] + 1) if offs else 0 :]
        last = run[-1][2]
        result[name] = {
            "since": run[0][0],
            "notice_id": last.stream_id.removeprefix("notice-"),
            "purpose": specs[last.stream_id]["purpose"],
        }
    return result


def as_dict(customer: str, at: datetime, events: list[AnnexEvent]) -> dict[str, Any]:
    return {
        e.subprocessor: {"since": e.since, "notice_id": e.notice_id, "purpose": e.purpose}
        for e in in_use(customer, at, events)
    }


def build(raw: list[tuple[bool, str, str, str, int]]) -> list[AnnexEvent]:
    # Each notice names one sub-processor in its spec; the switches name any (a replacement's
    # notice switches the old one off), so details come from the enabling notice's spec.
    events = [created(n, NAMES[i % len(NAMES)]) for i, n in enumerate(NOTICES)]
    events += [switch(on, c, name, n, T0 + timedelta(minutes=m)) for on, c, name, n, m in raw]
    return events


@given(switches, st.integers(-1, 22), st.sampled_from(CUSTOMERS))
def test_the_list_at_any_instant_equals_a_brute_force_replay(raw, minute, customer):
    events = build(raw)
    at = T0 + timedelta(minutes=minute)
    assert as_dict(customer, at, events) == brute_force(customer, at, events)


@given(switches, st.sampled_from(CUSTOMERS))
def test_before_any_switch_on_the_list_is_empty(raw, customer):
    events = build(raw)
    ons = [e.occurred_at for e in events if e.event_type == "subprocessor_enabled"
           and e.data["customer_id"] == customer]  # fmt: skip
    first = min(ons, default=T0 + timedelta(days=1))
    assert in_use(customer, first - timedelta(microseconds=1), events) == []


@given(switches, st.sampled_from(CUSTOMERS), st.sampled_from(NAMES), st.integers(0, 20))
def test_a_switch_off_removes_it_from_that_instant_on(raw, customer, name, minute):
    off_at = T0 + timedelta(minutes=minute)
    # the switch-off is the latest event about this name: nothing switches it on again after
    events = [
        e for e in build(raw) if e.occurred_at <= off_at or e.data.get("subprocessor") != name
    ]
    events.append(switch(False, customer, name, "n1", off_at))
    for later in (off_at, off_at + timedelta(minutes=1), off_at + timedelta(days=400)):
        assert name not in {e.subprocessor for e in in_use(customer, later, events)}


def test_details_come_from_the_enabling_notice_and_since_is_its_instant():
    events = [
        created("n1", "OpenAI, LLC"),
        switch(True, "acme", "OpenAI, LLC", "n1", T0 + timedelta(days=1)),
        switch(True, "globex", "OpenAI, LLC", "n1", T0 + timedelta(days=3)),
        switch(False, "acme", "OpenAI, LLC", "n1", T0 + timedelta(days=5)),
    ]
    assert in_use("acme", T0, events) == []
    (entry,) = in_use("acme", T0 + timedelta(days=1), events)
    assert entry.as_json() == {
        "subprocessor": "OpenAI, LLC",
        "purpose": "purpose of n1",
        "location": "location of n1",
        "data_categories": ["user content"],
        "transfer_mechanism": "SCCs (n1)",
        "services": ["assistant"],
        "since": "2026-12-02T09:00:00Z",
        "notice_id": "n1",
    }
    assert in_use("acme", T0 + timedelta(days=5), events) == []
    assert [e.subprocessor for e in in_use("globex", T0 + timedelta(days=9), events)] == [
        "OpenAI, LLC"
    ]


def test_events_of_other_streams_and_a_missing_spec():
    events = [
        AnnexEvent("subprocessor_enabled", {"customer_id": "acme", "subprocessor": "X"}, T0,
                   "customer-acme"),
        switch(True, "acme", "Y", "no-spec", T0),
    ]  # fmt: skip
    (entry,) = in_use("acme", T0, events)
    assert (entry.subprocessor, entry.notice_id, entry.purpose, entry.services) == (
        "Y",
        "no-spec",
        None,
        (),
    )


def test_a_naive_instant_is_refused():
    with pytest.raises(ValueError):
        in_use("acme", datetime(2026, 12, 1), [])


NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, NOW),
        ("2026-12-01", datetime(2026, 12, 1, 23, 59, 59, 999999, tzinfo=UTC)),
        ("2026-12-01T09:00:00Z", datetime(2026, 12, 1, 9, tzinfo=UTC)),
        ("2026-12-01T10:00:00+01:00", datetime(2026, 12, 1, 9, tzinfo=UTC)),
    ],
)
def test_as_of(text, expected):
    assert parse_as_of(text, NOW) == expected


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("yesterday", "not an ISO date"),
        ("2026-13-01", "not an ISO date"),
        ("2026-12-01T09:00:00", "needs its offset"),
    ],
)
def test_a_bad_as_of_is_one_clear_line(text, words):
    with pytest.raises(InputError) as error:
        parse_as_of(text, NOW)
    assert words in str(error.value)
    assert "\n" not in str(error.value)
