"""Who a notice goes to (rule 3): audience filters, and a customers file without duplicate ids."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from noticeflow.domain.customers import parse_customers_csv
from noticeflow.domain.errors import InputError
from noticeflow.domain.notice import Audience

# Small alphabets, so that filters and customers often meet
REGIONS = ["US", "EU", "UK"]
SERVICES = ["assistant", "search", "mail"]
IDS = ["c1", "c2", "c3", "c4"]
HEADER = "customer_id,name,region,services,contact_emails,timezone\n"

audiences = st.builds(
    Audience,
    regions=st.lists(st.sampled_from(REGIONS), unique=True, max_size=2),
    services=st.lists(st.sampled_from(SERVICES), unique=True, max_size=2),
    customers=st.lists(st.sampled_from(IDS), unique=True, max_size=3),
)
customers = st.tuples(
    st.sampled_from(REGIONS),
    st.lists(st.sampled_from(SERVICES), unique=True, max_size=3),
    st.sampled_from(IDS),
)


@given(audiences, customers)
def test_a_customer_is_selected_exactly_when_every_given_filter_matches(audience, customer):
    region, services, customer_id = customer
    expected = (
        (not audience.regions or region in audience.regions)
        and (not audience.services or any(s in audience.services for s in services))
        and (not audience.customers or customer_id in audience.customers)
    )
    assert audience.selects(region, services, customer_id) is expected


def test_no_filter_selects_everyone():
    assert Audience().selects("anywhere", [], "anyone")


@pytest.mark.parametrize(
    ("audience", "customer", "selected"),
    [
        ({"regions": ["US"]}, ("US", ["search"], "c1"), True),
        ({"regions": ["US"]}, ("EU", ["search"], "c1"), False),
        ({"regions": ["US", "UK"]}, ("UK", [], "c1"), True),
        ({"services": ["assistant"]}, ("US", ["search", "assistant"], "c1"), True),
        ({"services": ["assistant"]}, ("US", ["search"], "c1"), False),
        ({"services": ["assistant"]}, ("US", [], "c1"), False),  # no service: not affected
        ({"customers": ["c1"]}, ("US", [], "c1"), True),
        ({"customers": ["c1"]}, ("US", [], "c2"), False),
        ({"customers": ["c1"]}, ("US", [], "C1"), False),  # ids are exact
        ({"regions": ["US"], "services": ["assistant"]}, ("US", ["search"], "c1"), False),
        ({"regions": ["US"], "services": ["assistant"]}, ("EU", ["assistant"], "c1"), False),
        ({"regions": ["US"], "services": ["assistant"]}, ("US", ["assistant"], "c1"), True),
        ({"regions": ["US"], "customers": ["c2"]}, ("US", [], "c1"), False),
        ({"regions": ["EU"], "customers": ["c1"]}, ("US", [], "c1"), False),
        ({"regions": [" ", ""]}, ("US", [], "c1"), True),  # blank items are no filter
    ],
)
def test_audience_examples(audience, customer, selected):
    assert Audience.model_validate(audience).selects(*customer) is selected


def test_the_seed_notice_goes_to_us_customers_only():
    listing = parse_customers_csv(
        HEADER
        + "us-1,Acme,US,assistant,dpo@acme.example,America/New_York\n"
        + "eu-1,Bolt,EU,assistant,dpo@bolt.example,Europe/Berlin\n"
        + "us-2,Core,US,search;assistant,dpo@core.example,America/Los_Angeles\n"
    )
    audience = Audience(regions=["US"])
    chosen = [
        c.customer_id for c in listing if audience.selects(c.region, c.services, c.customer_id)
    ]
    assert chosen == ["us-1", "us-2"]


def _row(customer_id: str, n: int) -> str:
    return f"{customer_id},Name {n},US,assistant,dpo{n}@example.com,UTC\n"


@given(st.lists(st.sampled_from(IDS), min_size=1, max_size=6))
def test_duplicate_customer_ids_are_refused_every_one_named(ids):
    text = HEADER + "".join(_row(customer_id, n) for n, customer_id in enumerate(ids))
    repeated = len(ids) - len(set(ids))
    if not repeated:
        assert [c.customer_id for c in parse_customers_csv(text)] == ids
        return
    with pytest.raises(InputError) as raised:
        parse_customers_csv(text)
    message = str(raised.value)
    assert message.count("duplicate customer_id") == repeated
    for n, customer_id in enumerate(ids):
        if customer_id in ids[:n]:
            assert f"line {n + 2}: duplicate customer_id {customer_id}" in message


def test_a_duplicate_names_the_first_line_too():
    with pytest.raises(InputError, match=r"line 4: duplicate customer_id c1 \(first on line 2\)"):
        parse_customers_csv(HEADER + _row("c1", 1) + _row("c2", 2) + _row("c1", 3))


def test_a_refused_id_is_told_with_the_others():
    with pytest.raises(InputError, match="line 3: customer c2 was erased"):
        parse_customers_csv(HEADER + _row("c1", 1) + _row("c2", 2), refused={"c2": "was erased"})
