"""Every input is validated with pydantic and every problem is named (rule 1 and the contract)."""

from __future__ import annotations

import contextlib
import json
import os
import string
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from noticeflow.domain import signals
from noticeflow.domain.customers import CSV_COLUMNS, parse_customers_csv, read_customers_file
from noticeflow.domain.errors import InputError
from noticeflow.domain.notice import NoticeSpec, load_notice_file, parse_notice
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
        ("objection_window", "-P1D", "positive"),
        ("objection_window", 21, "not a bare number"),
        ("objection_window", "PT30S", "at least PT1M"),
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


def test_the_seed_notice_file_is_complete():
    import noticeflow

    # the file itself, without importing noticeflow.demo (which needs the whole stack)
    spec = load_notice_file(Path(noticeflow.__file__).parent / "demo" / "openai-2023.toml")
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
        assert objection.customer_id and objection.reason  # accepted means complete


# --- the notice file: durations -----------------------------------------------------------------

NOTICE_TOML = """\
title = "Sub-Processor Notification - OpenAI"
subprocessor = "OpenAI, LLC"
subprocessor_location = "United States"
purpose = "Chatbots"
data_categories = ["user content"]
services = ["assistant"]
transfer_mechanism = "None needed"
effective_at = 2026-12-22T00:00:00Z
"""


def notice_problem(**fields: object) -> str:
    with pytest.raises(InputError) as error:
        parse_notice(complete_notice() | fields, "notice.toml")
    return str(error.value)


def test_a_bare_number_window_is_an_error_not_seconds(tmp_path: Path):
    path = tmp_path / "notice.toml"
    path.write_text(NOTICE_TOML + "objection_window = 21\n")
    with pytest.raises(InputError) as error:
        load_notice_file(path)
    assert str(error.value) == (
        f"{path} is incomplete or invalid: objection_window: must be an ISO 8601 duration"
        " such as P21D or PT2M, not a bare number"
    )
    for number in (21.5, "21", " 21 "):
        assert notice_problem(objection_window=number).endswith("not a bare number")


def test_a_window_of_thousands_of_years_is_refused_up_front():
    assert notice_problem(objection_window="P3000000D") == (
        "notice.toml is incomplete or invalid: objection_window: must be at most P366D, not P3000000D"
    )
    assert "objection_window: is far too long" in notice_problem(
        objection_window="P9" + "9" * 20 + "D"
    )
    assert (
        parse_notice(complete_notice() | {"objection_window": "P366D"}).objection_window.days == 366
    )


@pytest.mark.parametrize("value", ["P1M", "P1Y", "P1Y2M3D", "p2m"])
def test_years_and_months_are_refused_with_a_hint(value):
    assert notice_problem(objection_window=value) == (
        "notice.toml is incomplete or invalid: objection_window: years and months are not a fixed"
        " length; give days instead, e.g. P30D or P365D"
    )


@pytest.mark.parametrize(
    ("text", "seconds", "canonical"),
    [
        ("P21D", 21 * 86400, "P21D"),
        ("PT2M", 120, "PT2M"),
        ("P3W", 21 * 86400, "P21D"),
        ("P1DT12H", 36 * 3600, "P1DT12H"),
        ("PT90S", 90, "PT1M30S"),
        ("PT1M0.5S", 60.5, "PT1M0.5S"),
        ("p2w", 14 * 86400, "P14D"),
        ("P365D", 365 * 86400, "P365D"),
        ("P366D", 366 * 86400, "P366D"),
    ],
)
def test_durations_round_trip_through_json(text, seconds, canonical):
    spec = parse_notice(complete_notice() | {"objection_window": text, "reminder_before": "PT30S"})
    assert spec.objection_window.total_seconds() == seconds
    as_json = spec.model_dump_json()
    assert f'"objection_window":"{canonical}"' in as_json and '"reminder_before":"PT30S"' in as_json
    assert NoticeSpec.model_validate_json(as_json) == spec  # Temporal payloads, the jsonb column
    assert parse_notice(spec.model_dump(mode="json")) == spec  # and back through a person's dict
    assert NoticeSpec.model_validate(spec.model_dump()) == spec  # timedeltas pass as they are


async def test_the_spec_round_trips_through_the_temporal_data_converter():
    from temporalio.contrib.pydantic import pydantic_data_converter

    spec = parse_notice(complete_notice() | {"objection_window": "PT2M", "reminder_before": "PT1M"})
    payloads = await pydantic_data_converter.encode([spec])
    assert b'"objection_window":"PT2M"' in payloads[0].data
    assert await pydantic_data_converter.decode(payloads, [NoticeSpec]) == [spec]


def test_stored_json_from_older_versions_still_reads():
    # pydantic's own serialiser wrote 365 days as P1Y; what we stored must stay readable
    stored = complete_notice() | {"objection_window": "P1Y"}
    assert NoticeSpec.model_validate_json(json.dumps(stored)).objection_window.days == 365


def test_the_reminder_must_fall_inside_the_window():
    spec = parse_notice(complete_notice() | {"reminder_before": "P3D"})
    assert spec.reminder_before == timedelta(days=3)
    assert notice_problem(reminder_before="P21D") == (
        "notice.toml is incomplete or invalid: reminder_before: must be shorter than"
        " objection_window (P21D), not P21D"
    )
    assert notice_problem(reminder_before=3).endswith(
        "reminder_before: must be an ISO 8601 duration such as P21D or PT2M, not a bare number"
    )
    assert notice_problem(reminder_before="PT0S").endswith("reminder_before: must be positive")


@pytest.mark.parametrize(
    "when", ["1999-12-31T23:59:59Z", "2101-01-01T00:00:00Z", "0001-01-01T00:00:00Z"]
)
def test_effective_dates_must_be_plausible(when):
    assert "effective_at: must be between 2000 and 2100" in notice_problem(effective_at=when)


# --- the notice file: text ----------------------------------------------------------------------


def test_a_title_with_a_line_break_is_refused_before_it_can_break_a_mail_header():
    assert notice_problem(title="Sub-processor notice\r\nBcc: everyone@example.com") == (
        "notice.toml is incomplete or invalid: title: contains a line break or control character"
        " (U+000D); must be one line"
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("title", "a\x00"),
        ("subprocessor", "OpenAI\x00"),
        ("subprocessor_location", "US\x00"),
        ("purpose", "x\x00"),
        ("transfer_mechanism", "x\x00"),
        ("how_to_object", "x\x00"),
        ("body", "x\x00"),
        ("notice_id", "x\x00"),
        ("data_categories", ["ok", "x\x00"]),
        ("services", ["x\x00"]),
    ],
)
def test_nul_is_refused_in_every_text_field(field, value):
    message = notice_problem(**{field: value})
    assert "contains a control character (U+0000)" in message and field in message


def test_one_line_fields_name_the_item():
    assert notice_problem(data_categories=["ok", "two\nlines"]).endswith(
        "data_categories item 2: contains a line break or control character (U+000A); must be one line"
    )


def test_multi_line_fields_keep_their_lines():
    body = "Dear customer,\n\n\tplease read this.\r\nRegards"
    spec = parse_notice(complete_notice() | {"body": body, "how_to_object": "Reply.\nOr click."})
    assert spec.body == body and spec.how_to_object == "Reply.\nOr click."
    assert parse_notice(complete_notice() | {"purpose": "p" * 2000}).purpose == "p" * 2000
    assert "purpose: is too long: 2001 characters, at most 2000" in notice_problem(
        purpose="p" * 2001
    )


def test_every_problem_of_a_notice_is_listed_at_once():
    message = notice_problem(
        title="a\nb", objection_window=21, colour="blue", effective_at="1999-01-01T00:00:00Z"
    )
    lines = message.splitlines()
    assert lines[0] == "notice.toml is incomplete or invalid (4 problems):"
    assert {line.split(":")[0].strip() for line in lines[1:]} == {
        "title",
        "objection_window",
        "effective_at",
        "colour",
    }
    assert "  colour: unknown field" in lines


def test_a_notice_file_with_a_byte_order_mark_loads(tmp_path: Path):
    path = tmp_path / "notice.toml"
    path.write_bytes(b"\xef\xbb\xbf" + NOTICE_TOML.replace("\n", "\r\n").encode())
    spec = load_notice_file(path)
    assert spec.title == "Sub-Processor Notification - OpenAI" and spec.objection_window.days == 21


def test_a_notice_file_that_is_not_utf8_is_one_clear_line(tmp_path: Path):
    path = tmp_path / "notice.toml"
    path.write_bytes(NOTICE_TOML.encode() + b'body = "Caf\xe9"\n')
    with pytest.raises(InputError) as error:
        load_notice_file(path)
    offset = len(NOTICE_TOML.encode()) + len(b'body = "Caf')
    assert str(error.value) == (
        f"{path}: not valid UTF-8: byte 0xe9 at byte offset {offset} (line 9); save the file as UTF-8"
    )


def test_unreadable_notice_files_are_one_clear_line(tmp_path: Path):
    with pytest.raises(InputError, match="no such file"):
        load_notice_file(tmp_path / "missing.toml")
    with pytest.raises(InputError, match="is a directory, not a notice file"):
        load_notice_file(tmp_path)
    # Too large for a notice: refused before reading (a regular file), or after 1 MB + 1 byte of
    # a pipe; a device unread (it read /dev/zero until memory ran out).
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * 1_000_001)
    pipe = tmp_path / "pipe.toml"
    os.mkfifo(pipe)
    writer = threading.Thread(target=_write_endlessly, args=(pipe,), daemon=True)
    writer.start()
    for path in (big, pipe):
        with pytest.raises(InputError) as error:
            load_notice_file(path)
        assert str(error.value) == (
            f"{path}: larger than 1,000,000 bytes; a notice file is a few kB"
        )
    writer.join(5)
    with pytest.raises(InputError) as error:
        load_notice_file(Path("/dev/zero"))
    assert str(error.value) == "/dev/zero: is a device, not a notice file"


def _write_endlessly(path: Path) -> None:
    """Feed a named pipe until its reader hangs up (as `yes | noticeflow ...` would)."""
    with contextlib.suppress(BrokenPipeError), path.open("wb") as stream:
        while True:
            stream.write(b"#" * 65536)


# --- the customers CSV --------------------------------------------------------------------------

HEADER = "customer_id,name,region,services,contact_emails,timezone,window_days,window_unit\n"


def csv_problem(text: str) -> str:
    with pytest.raises(InputError) as error:
        parse_customers_csv(text, "customers.csv")
    return str(error.value)


def test_a_csv_with_a_byte_order_mark_is_accepted(tmp_path: Path):
    assert [c.customer_id for c in parse_customers_csv("\ufeff" + helpers.CUSTOMERS_CSV)] == [
        c.customer_id for c in helpers.customers()
    ]
    path = tmp_path / "excel.csv"  # Excel's "CSV UTF-8": a byte order mark and CRLF
    path.write_bytes(b"\xef\xbb\xbf" + helpers.CUSTOMERS_CSV.replace("\n", "\r\n").encode())
    assert read_customers_file(path) == helpers.customers()
    # the CLI reads with encoding="utf-8", which keeps the mark as U+FEFF
    assert parse_customers_csv(path.read_text(encoding="utf-8")) == helpers.customers()


def test_a_csv_with_crlf_line_ends_is_accepted():
    crlf = helpers.CUSTOMERS_CSV.replace("\n", "\r\n")
    assert parse_customers_csv(crlf) == helpers.customers()


def test_a_trailing_comma_is_ignored():
    (customer,) = parse_customers_csv(HEADER + "acme,Acme,US,a,a@b.example,UTC,30,calendar,\n")
    assert customer.window_days == 30
    (customer,) = parse_customers_csv(
        HEADER.replace("\n", ",\n") + "acme,Acme,US,a,a@b.example,UTC,,,\n"
    )
    assert customer.customer_id == "acme"


def test_extra_fields_are_reported_not_a_traceback():
    assert csv_problem(HEADER + "acme,Acme,US,a,a@b.example,UTC,,,surprise\n") == (
        "customers.csv: line 2: more fields (9) than columns (8)"
    )


def test_nul_in_a_customer_id_is_named():
    assert csv_problem(HEADER + "ac\x00me,Acme,US,a,a@b.example,UTC,,\n") == (
        "customers.csv: line 2: customer_id: contains a control character (U+0000)"
    )


def test_control_characters_are_refused_in_every_field():
    message = csv_problem(HEADER + 'acme,"Acme\nCorp",U\x01S,a\x00,a@b\x00.example,UTC\x07,,\n')
    assert message.startswith("customers.csv: lines 2-3: ")
    for part in (
        "name: contains a line break or control character (U+000A); must be one line",
        "region: contains a control character (U+0001)",
        "services item 1: contains a control character (U+0000)",
        "contact_emails item 1: contains a control character (U+0000)",
        "timezone: contains a control character (U+0007)",
    ):
        assert part in message


def test_several_bad_rows_are_reported_together_one_line_each():
    message = csv_problem(
        HEADER
        + "acme,Acme,US,a,a@b.example,UTC,,\n"
        + "acme,Acme again,US,a,a@b.example,UTC,,\n"
        + "\n"
        + "b\x00,B,US,a,a@b.example,UTC,,\n"
        + "c,C,US,a,a@b.example,UTC,,,,x\n"
        + "d,D,US,a,nope,Nowhere/Zone,,\n"
    )
    assert message.splitlines() == [
        "customers.csv (4 problems):",
        "  line 3: duplicate customer_id acme (first on line 2)",
        "  line 5: customer_id: contains a control character (U+0000)",
        "  line 6: more fields (10) than columns (8)",
        "  line 7: contact_emails: not an e-mail address: nope (an e-mail address has exactly"
        " one @ (name@example.com)); timezone: unknown IANA timezone 'Nowhere/Zone'",
    ]


def test_contact_addresses_are_checked_as_the_relay_will_take_them():
    """Contacts are checked as subscribers' addresses are (IDNA2008 for the domain, RFC 5322
    atoms before the @): an internationalised domain is kept in its ASCII form, the form a relay
    takes without SMTPUTF8; an ASCII one as written, case and all."""
    text = HEADER + (
        "a,A,US,x,Privacy@ACME.example;info@bücher.example;dpo@straße.de;x@b.example.;"
        "jörg@acme.example;y@b.example\u3002;z@c.example\uff0e,UTC,,\n"
    )
    (customer,) = parse_customers_csv(text)
    assert customer.contact_emails == [
        "Privacy@ACME.example", "info@xn--bcher-kva.example", "dpo@xn--strae-oqa.de",
        "x@b.example", "jörg@acme.example",  # sent where the relay offers SMTPUTF8
        "y@b.example", "z@c.example",  # a trailing ideographic or fullwidth full stop: the root
    ]  # fmt: skip
    message = csv_problem(
        HEADER + "a,A,US,x,a@b..example;a@-x.example;jo..sé@x.example;a@xn--zz.example,UTC,,\n"
    )
    for part in (
        "a@b..example (the domain after the @ may hold letters, digits and hyphens",
        "a@-x.example (the domain after the @ may hold",
        "jo..sé@x.example (the part before the @ may hold letters, digits, dots (not two in a row",
        "a@xn--zz.example (the domain after the @ is not a valid internationalised domain name"
        " (IDNA2008))",
    ):
        assert part in message, message


def test_blank_rows_are_skipped():
    text = HEADER + "acme,Acme,US,a,a@b.example,UTC,,\n\n,,,,,,,\n"
    assert [c.customer_id for c in parse_customers_csv(text)] == ["acme"]


def test_country_and_language_are_optional_columns():
    assert CSV_COLUMNS[-3:] == ("country", "language", "authorisation")
    text = (
        "customer_id,name,region,services,contact_emails,timezone,country,language\n"
        "hooli,Hooli,EU,a,a@b.example,Europe/Berlin,de,de-de\n"
        "acme,Acme,US,a,a@b.example,UTC,,\n"
        "gb,Gb,EU,a,a@b.example,Europe/London,gb,EN-gb\n"
    )
    hooli, acme, gb = parse_customers_csv(text)
    assert (hooli.country, hooli.language) == ("DE", "de-DE")
    assert (acme.country, acme.language) == (None, "en")  # a blank language is English
    assert (gb.country, gb.language) == ("GB", "en-GB")
    assert parse_customers_csv(helpers.CUSTOMERS_CSV)[0].country is None  # columns may be absent


def test_authorisation_is_an_optional_column_general_by_default():
    text = (
        "customer_id,name,region,services,contact_emails,timezone,authorisation\n"
        "a,A,EU,x,a@b.example,UTC,specific\n"
        "b,B,EU,x,a@b.example,UTC, DORA \n"
        "c,C,EU,x,a@b.example,UTC,\n"
        "d,D,EU,x,a@b.example,UTC,general\n"
    )
    modes = [c.authorisation for c in parse_customers_csv(text)]
    assert modes == ["specific", "dora", "general", "general"]
    # No column: None, which keeps the mode an earlier import stored (tests/test_authorisation.py)
    assert parse_customers_csv(helpers.CUSTOMERS_CSV)[0].authorisation is None


def test_a_mistyped_authorisation_is_explained_with_every_other_problem():
    message = csv_problem(
        "customer_id,name,region,services,contact_emails,timezone,authorisation\n"
        "a,A,EU,x,a@b.example,UTC,specfic\n"
        "b,B,EU,x,nope,UTC,silence\n"
    )
    lines = message.splitlines()
    assert lines[0] == "customers.csv (2 problems):"
    assert "line 2: authorisation: 'specfic' is not an authorisation mode; use general" in lines[1]
    assert "specific (silence is refusal) or dora" in lines[1]
    assert "contact_emails" in lines[2] and "'silence' is not an authorisation mode" in lines[2]


def test_bad_countries_and_languages_are_explained():
    message = csv_problem(
        "customer_id,name,region,services,contact_emails,timezone,country,language\n"
        "a,A,EU,a,a@b.example,UTC,Germany,de_DE\n"
        "b,B,EU,a,a@b.example,UTC,QQ,english please\n"
    )
    assert message.splitlines() == [
        "customers.csv (2 problems):",
        "  line 2: country: 'Germany' is not an ISO 3166-1 alpha-2 country code such as US or DE;"
        " language: 'de_DE' is not a supported language (use '-', not '_'); use one of"
        " en (English), de (German), optionally with a region such as de-AT",
        "  line 3: country: no public holiday calendar for country QQ;"
        " language: 'english please' is not a supported language; use one of en (English),"
        " de (German), optionally with a region such as de-AT",
    ]


def test_a_csv_file_that_is_not_utf8_names_the_byte(tmp_path: Path):
    path = tmp_path / "latin1.csv"
    good = HEADER + "acme,Acme,US,a,a@b.example,UTC,,\n"
    path.write_bytes(
        b"\xef\xbb\xbf" + good.encode() + "cafe,Café,US,a,a@b.example,UTC,,\n".encode("latin-1")
    )
    with pytest.raises(InputError) as error:
        read_customers_file(path)
    offset = 3 + len(good.encode()) + len(b"cafe,Caf")
    assert str(error.value) == (
        f"{path}: not valid UTF-8: byte 0xe9 at byte offset {offset} (line 3); save the file as UTF-8"
    )
    with pytest.raises(InputError, match="no such file"):
        read_customers_file(tmp_path / "missing.csv")
    # A device is refused unread (it read /dev/zero until memory ran out), and so is a directory.
    with pytest.raises(InputError) as error:
        read_customers_file(Path("/dev/zero"))
    assert str(error.value) == "/dev/zero: is a device, not a CSV file"
    with pytest.raises(InputError, match="is a directory, not a CSV file"):
        read_customers_file(tmp_path)


def test_one_mailbox_typed_composed_or_decomposed_is_one_contact_and_odd_ones_are_escaped():
    text = HEADER + "a,A,US,x,jos\u00e9@acme.example;jose\u0301@acme.example,UTC,,\n"
    (customer,) = parse_customers_csv(text)
    assert customer.contact_emails == ["jos\u00e9@acme.example"]
    message = csv_problem(HEADER + "a,A,US,x,ab\u202ecd@acme.example,UTC,,\n")
    assert "\u202e" not in message and "'ab\\u202ecd@acme.example'" in message, message


def test_a_semicolon_separated_file_gets_a_hint():
    message = csv_problem(
        "customer_id;name;region;services;contact_emails;timezone\nacme;A;US;a;a@b.example;UTC\n"
    )
    assert message.endswith(
        "the file seems to use ';' between fields; save it with ',' (CSV UTF-8)"
    )


def test_an_empty_csv_says_what_it_needs():
    assert csv_problem("").startswith(
        "customers.csv: empty; the first line must name the columns: customer_id,"
    )


@given(st.text(alphabet=st.sampled_from(list(',;"\r\n\x00\ufeff\u2028 a@b.cUTC-')), max_size=200))
def test_any_csv_text_is_parsed_or_explained_never_a_traceback(text):
    with contextlib.suppress(InputError):
        parse_customers_csv(HEADER + text)
    with contextlib.suppress(InputError):
        parse_customers_csv(text)
