"""The shared string types of noticeflow.domain.text: one line, free text, identifiers."""

from __future__ import annotations

from typing import Annotated

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from noticeflow.domain.errors import describe_validation_error
from noticeflow.domain.text import (
    FreeText,
    Identifier,
    SingleLine,
    control_character,
    free_text,
    single_line,
)


class Form(BaseModel):
    line: SingleLine = "x"
    short: Annotated[str, single_line(10)] = "x"
    text: FreeText = "x"
    optional: Annotated[str, free_text(50, allow_empty=True)] = ""
    ident: Identifier = "x"


def problem(**fields: object) -> str:
    with pytest.raises(ValidationError) as error:
        Form.model_validate(fields)
    return describe_validation_error(error.value, "form")


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("Hello\r\nBcc: evil@example.com", "U+000D"),
        ("two\nlines", "U+000A"),
        ("tab\there", "U+0009"),
        ("para\u2029graph", "U+2029"),
        ("line\u2028sep", "U+2028"),
        ("next\x85line", "U+0085"),
    ],
)
def test_single_line_refuses_line_breaks(value, code):
    assert problem(line=value) == (
        f"form: line: contains a line break or control character ({code}); must be one line"
    )


@pytest.mark.parametrize(("value", "code"), [("nul\x00", "U+0000"), ("del\x7f", "U+007F")])
def test_single_line_refuses_other_controls(value, code):
    assert problem(line=value) == f"form: line: contains a control character ({code})"


def test_single_line_strips_and_needs_text():
    assert Form(line="  Acme Corp \n").line == "Acme Corp"
    assert problem(line="  ") == "form: line: must not be empty"
    assert problem(short="x" * 11) == "form: short: is too long: 11 characters, at most 10"
    assert Form(line="x" * 200).line == "x" * 200
    assert "at most 200" in problem(line="x" * 201)


def test_non_strings_are_refused():
    assert "line: Input should be a valid string" in problem(line=12)


def test_free_text_keeps_lines_and_tabs():
    text = "First line\r\nSecond\tline\n\nThird"
    assert Form(text=text).text == text


def test_free_text_keeps_a_long_reason_whole():
    reason = ("We object because our DPA forbids US transfers. " * 250)[:10_000].strip() + " END"
    assert len(reason) > 9_900
    assert Form(text=reason).text == reason
    assert Form(text="y" * 100_000).text == "y" * 100_000
    assert "at most 100000" in problem(text="y" * 100_001)


@pytest.mark.parametrize(
    ("value", "code"), [("a\x00b", "U+0000"), ("a\x1bb", "U+001B"), ("a\x9bb", "U+009B")]
)
def test_free_text_refuses_control_characters(value, code):
    assert problem(text=value) == f"form: text: contains a control character ({code})"


def test_free_text_can_be_optional():
    assert Form(optional="  ").optional == ""
    assert problem(text="  ") == "form: text: must not be empty"


def test_identifier_names_the_problem():
    assert Form(ident="acme-us_2.x").ident == "acme-us_2.x"
    assert problem(ident="ac\x00me") == "form: ident: contains a control character (U+0000)"
    assert "'Acme Corp' is not an id" in problem(ident="Acme Corp")
    assert "at most 63 characters" in problem(ident="a" * 64)
    assert problem(ident="") == "form: ident: must not be empty"


def test_all_problems_are_listed_together():
    message = problem(line="a\nb", text="\x00", ident="X Y")
    assert message.startswith("form (3 problems):\n")
    assert [line.split(":")[0].strip() for line in message.splitlines()[1:]] == [
        "line",
        "text",
        "ident",
    ]


@given(st.text(max_size=60))
def test_single_line_never_lets_a_header_breaker_through(value):
    try:
        accepted = Form(line=value).line
    except ValidationError:
        return
    assert control_character(accepted) is None
    assert accepted == accepted.strip() and accepted


def test_text_from_bytes_that_are_not_utf8_is_refused_naming_the_byte():
    """A shell hands Python undecodable argument bytes as lone surrogates; stored, they would
    break every later read of the payload, so every text field refuses them up front."""
    from noticeflow import intake

    _, problem = intake.validate(
        "request_changes", {"customer_id": "a", "reason": "x\udcff\udcfey"}
    )
    assert problem == (
        "invalid request_changes payload: reason: is not valid UTF-8 text (byte 0xff); use UTF-8"
    )
    _, problem = intake.validate(
        "object", {"customer_id": "a\udcfe", "reason": "x", "by": "\ud800"}
    )
    assert problem is not None
    assert "customer_id: is not valid UTF-8 text (byte 0xfe)" in problem
    assert "by: is not valid UTF-8 text (U+D800)" in problem
