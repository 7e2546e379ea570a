"""Every input is validated with pydantic and every problem is named (rule 1 and the contract)."""

from __future__ import annotations

import contextlib
import string
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from noticeflow.domain import signals
from noticeflow.domain.customers import parse_customers_csv
from noticeflow.domain.errors import InputError
from noticeflow.domain.notice import load_notice_file, parse_notice
from tests import helpers

REQUIRED = [
    "title",
    "subprocessor",
    "subprocessor_location",
    "purpose",
    "data_categories",
    "services",
    "transfer_mechanism",
    "effective_at",
]
NOW = datetime(2026, 11, 29, tzinfo=UTC)


def complete_notice() -> dict:
    return helpers.notice(NOW).model_dump(mode="json")


def test_an_empty_notice_lists_every_missing_field():
    with pytest.raises(InputError) as error:
        parse_notice({}, "notice.toml")
    message = str(error.value)
    for field in REQUIRED:
        assert f"{field}: missing" in message


@given(st.sets(st.sampled_from(REQUIRED), min_size=1))
def test_each_missing_field_is_named(missing):
    data = {k: v for k, v in complete_notice().items() if k not in missing}
    with pytest.raises(InputError) as error:
        parse_notice(data)
    for field in missing:
        assert field in str(error.value)


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("effective_at", "2026-12-01T00:00:00", "timezone offset"),
        ("objection_window", "P0D", "positive"),
        ("objection_window", "three weeks", "objection_window"),
        ("data_categories", [], "at least one"),
        ("services", ["  "], "at least one"),
        ("notice_id", "Not A Slug!", "notice_id"),
        ("colour", "blue", "colour"),
    ],
)
def test_invalid_values_are_explained(field, value, words):
    data = complete_notice() | {field: value}
    with pytest.raises(InputError, match=words):
        parse_notice(data)


def test_short_windows_work_for_trials():
    assert (
        parse_notice(
            complete_notice() | {"objection_window": "PT2M"}
        ).objection_window.total_seconds()
        == 120
    )


def test_notice_id_is_derived_when_absent():
    data = complete_notice()
    del data["notice_id"]
    assert parse_notice(data).notice_id.startswith("openai-llc-")


def test_the_seed_notice_file_is_complete(tmp_path: Path):
    from noticeflow.demo import demo_file

    path = tmp_path / "seed.toml"
    path.write_text(demo_file("openai-2023.toml"))
    spec = load_notice_file(path)
    assert spec.opt_in and spec.audience.regions == ["US"]
    assert spec.objection_window.days == 21


def test_broken_toml_is_reported_with_the_file(tmp_path: Path):
    path = tmp_path / "bad.toml"
    path.write_text("title = ")
    with pytest.raises(InputError, match=r"bad\.toml: not valid TOML"):
        load_notice_file(path)


def test_customers_csv_reports_every_bad_row_at_once():
    text = helpers.CUSTOMERS_CSV + (
        "bad id,X,US,a,not-an-email,Mars/Olympus,,\n"
        "ok2,Y,US,a,a@b.example,UTC,0,calendar\n"
        "ok3,Z,US,a,a@b.example,UTC,,fortnightly\n"
    )
    with pytest.raises(InputError) as error:
        parse_customers_csv(text, "customers.csv")
    message = str(error.value)
    assert "line 7" in message and "customer_id" in message
    assert "not an e-mail address: not-an-email" in message
    assert "unknown IANA timezone 'Mars/Olympus'" in message
    assert "line 8" in message and "window_days" in message
    assert "line 9" in message and "window_unit" in message


def test_customers_csv_needs_its_columns():
    with pytest.raises(InputError, match="missing columns: contact_emails"):
        parse_customers_csv("customer_id,name,region,services,timezone\n")


def test_customers_csv_parses_lists_and_terms():
    parsed = {c.customer_id: c for c in helpers.customers()}
    assert parsed["acme"].contact_emails == ["privacy@acme.example", "dpo@acme.example"]
    assert parsed["acme"].services == ["assistant", "goals"]
    assert parsed["globex"].window_days == 30


def test_a_mailbox_listed_twice_is_one_contact():
    csv = "customer_id,name,region,services,contact_emails,timezone\n"
    csv += "acme,Acme,US,assistant,DPO@acme.example;privacy@acme.example;dpo@ACME.example,UTC\n"
    (customer,) = parse_customers_csv(csv)
    assert customer.contact_emails == ["DPO@acme.example", "privacy@acme.example"]


@given(st.text(alphabet=string.printable, max_size=200))
def test_arbitrary_csv_text_never_crashes_the_parser(text):
    with contextlib.suppress(InputError):
        parse_customers_csv(text)


@given(
    st.dictionaries(
        st.sampled_from(["customer_id", "reason", "by", "channel", "idempotency_key", "x"]),
        st.one_of(st.none(), st.integers(), st.text(max_size=20)),
    )
)
def test_objection_payloads_validate_or_explain(payload):
    try:
        objection = signals.Objection.model_validate(payload)
    except Exception as error:
        assert type(error).__name__ == "ValidationError"
    else:
        assert objection.key()  # every accepted objection has an idempotency key


def test_objection_keys_are_deterministic_and_explicit_keys_win():
    first = signals.Objection(customer_id="c1", reason="no")
    assert first.key() == signals.Objection(customer_id="c1", reason="no").key()
    assert signals.Objection(customer_id="c1", reason="no", idempotency_key="k").key() == "k"
