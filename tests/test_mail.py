"""Mail as wire bytes: what a mail reader parses back is exactly what was rendered."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from noticeflow.mail import build_message, scrub

WHEN = datetime(2026, 11, 29, 10, 30, tzinfo=UTC)


def parsed(**overrides: str):
    fields = {
        "mail_from": "privacy@vendor.example",
        "to": "dpo@acme.example",
        "subject": "Notice of a new sub-processor",
        "text": "Dear Acme,\n\n-- not a boundary\nFrom the start of a line\n",
        "html": "<p>Dear Acme,</p>\n<p>Übermorgen — 18 October</p>\n",
        "msg_id": "<abc123@vendor.example>",
        **overrides,
    }
    mail = build_message(date=WHEN, **fields)
    return fields, mail, message_from_bytes(mail.data, policy=policy.default)


def assert_round_trip(fields, mail, message) -> None:
    assert (mail.sender, mail.recipient) == (fields["mail_from"], fields["to"])
    assert message["From"] == fields["mail_from"] and message["To"] == fields["to"]
    assert message["Subject"] == fields["subject"]
    assert message["Message-ID"] == fields["msg_id"]
    assert message["Date"].datetime == WHEN
    assert message["Auto-Submitted"] == "auto-generated"
    assert message.get_content_type() == "multipart/alternative"
    plain, html = message.iter_parts()
    assert plain.get_content_type() == "text/plain" and plain.get_content() == fields["text"]
    assert html.get_content_type() == "text/html" and html.get_content() == fields["html"]
    assert not message.defects and all(not part.defects for part in message.iter_parts())


def test_a_message_parses_back_to_what_was_rendered():
    assert_round_trip(*parsed())


@pytest.mark.parametrize(
    "subject",
    [
        "Neuer Unterauftragsverarbeiter: OpenAI Ireland — bitte lesen",
        "A very long subject line " * 8,
        "日本語の件名",
    ],
)
def test_subjects_that_need_encoding_or_folding(subject):
    fields, mail, message = parsed(subject=subject)
    assert all(len(line) <= 998 and line.isascii() for line in mail.data.split(b"\r\n")[:12])
    assert_round_trip(fields, mail, message)


def test_an_address_the_fast_path_cannot_write_takes_the_email_package_path():
    fields, mail, message = parsed(to="jörg@acme.example")
    assert mail.recipient == "jörg@acme.example"
    assert "jörg@acme.example" in str(message["To"])
    plain, html = message.iter_parts()
    assert (plain.get_content(), html.get_content()) == (fields["text"], fields["html"])


printable = st.characters(blacklist_categories=["Cc", "Cs", "Zl", "Zp"])


@given(text=st.text(), html=st.text(), subject=st.text(alphabet=printable, max_size=200))
def test_any_text_and_subject_survive(text, html, subject):
    _, _, message = parsed(text=text, html=html, subject=subject)
    plain, rich = message.iter_parts()
    assert plain.get_payload(decode=True).decode() == text
    assert rich.get_payload(decode=True).decode() == html
    assert str(message["Subject"]) == subject


@pytest.mark.parametrize("header", ["to", "mail_from", "msg_id"])
@pytest.mark.parametrize("linebreak", ["\r\n", "\n", "\r"])
def test_a_line_break_in_an_address_is_refused_never_written(header, linebreak):
    value = {"to": "dpo@acme.example", "mail_from": "privacy@vendor.example", "msg_id": "<a@b>"}
    with pytest.raises(ValueError, match="contains a line break"):
        parsed(**{header: value[header] + linebreak + "Bcc: spy@evil.example"})


@pytest.mark.parametrize(
    "subject", ["Notice\r\nBcc: spy@evil.example", "Notice \n  of a change", "Grüße\r\nBcc: x@y.z"]
)
def test_a_line_break_in_the_subject_becomes_a_space(subject):
    _, mail, message = parsed(subject=subject)
    expected = " ".join(subject.split())
    assert message["Subject"] == expected and "Bcc" not in message
    assert not message.defects and b"\r\nBcc:" not in mail.data


def test_replies_are_scrubbed_of_addresses_but_keep_our_message_id():
    reply = "450 4.2.0 <Dpo@Acme.example>: Recipient address rejected, see <abc123@vendor.example>"
    scrubbed = scrub(reply, "dpo@acme.example", "<abc123@vendor.example>")
    assert (
        scrubbed == "450 4.2.0 <<address>>: Recipient address rejected, see <abc123@vendor.example>"
    )
    assert scrub("550 no such user: bob@example.com\r\n  (try again)") == (
        "550 no such user: <address> (try again)"
    )
    assert scrub("x" * 1000, limit=50) == "x" * 49 + "…"
