"""Mail as wire bytes: what a mail reader parses back is exactly what was rendered."""

from __future__ import annotations

import hashlib
import os
import re
from datetime import UTC, datetime
from email import message_from_bytes, policy
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from noticeflow.crypto import CustomerKey
from noticeflow.mail import SmtpReply, build_message, message_id, parse_reply, scrub

WHEN = datetime(2026, 11, 29, 10, 30, tzinfo=UTC)


def parsed(**overrides: Any):
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
    assert message["Subject"] == fields["subject"].strip()  # written without surrounding blanks
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
# Always run, whatever the seed: blanks a reader drops after "Subject:", and a long folded one
@example(text="", html="", subject=" ")
@example(text="", html="", subject="\t a \t")
@example(text="", html="", subject=" " * 80 + "x")
@example(text="", html="", subject=" \u00e9 ")
def test_any_text_and_subject_survive(text, html, subject):
    _, _, message = parsed(text=text, html=html, subject=subject)
    plain, rich = message.iter_parts()
    assert plain.get_payload(decode=True).decode() == text
    assert rich.get_payload(decode=True).decode() == html
    # A subject is written without surrounding blanks (a reader would drop leading ones anyway)
    assert str(message["Subject"]) == subject.strip()


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


# --- SMTP replies: code, enhanced status, text ------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "code", "status", "text"),
    [
        (
            "550 5.1.1 <jane@acme.example>: Recipient address rejected",
            550, "5.1.1", "<jane@acme.example>: Recipient address rejected",
        ),
        ("250 2.0.0 Ok: queued as 1a2b", 250, "2.0.0", "Ok: queued as 1a2b"),
        # multi-line: the code on every line, the status repeated: once each, lines joined
        (
            "550-5.1.1 The email account that you tried to reach does not exist.\r\n"
            "550-5.1.1 Jane Doe <jane@acme.example>\r\n"
            "550 5.1.1 https://support.example/answer",
            550, "5.1.1",
            "The email account that you tried to reach does not exist. Jane Doe"
            " <jane@acme.example> https://support.example/answer",
        ),
        ("451 greylisted, try later", 451, None, "greylisted, try later"),  # no enhanced status
        ("421", 421, None, ""),
        # a status of another class than the code's is not its enhanced status: text
        ("550 2.0.0 odd server", 550, None, "2.0.0 odd server"),
        ("550 5.1.1000 not a status", 550, None, "5.1.1000 not a status"),
        # garbage: no code of 200-599, all text
        ("", None, None, ""),
        ("hello there", None, None, "hello there"),
        ("99 problems", None, None, "99 problems"),
        ("600 6.0.0 from the future", None, None, "600 6.0.0 from the future"),
        ("  \r\n\t ", None, None, ""),
    ],
)  # fmt: skip
def test_a_reply_is_parsed_into_code_enhanced_status_and_text(raw, code, status, text):
    assert parse_reply(raw) == SmtpReply(code, status, text)


def test_a_reply_as_aiosmtplib_hands_it_over_lines_without_codes():
    lines = "5.7.1 Message rejected\n5.7.1 for Jane Doe\n5.7.1 policy"
    assert parse_reply(lines, 554) == SmtpReply(
        554, "5.7.1", "Message rejected for Jane Doe policy"
    )
    # with the code given, a line that starts with digits is text, not a code
    assert parse_reply("550 mailboxes full", 452) == SmtpReply(452, None, "550 mailboxes full")
    assert parse_reply("Malformed SMTP response line: x", -1) == SmtpReply(
        None, None, "-1 Malformed SMTP response line: x"
    )


def test_only_code_and_status_are_summarised_the_text_is_readable_for_those_allowed():
    reply = parse_reply("550 5.1.1 <jane@acme.example>: Recipient address rejected")
    assert reply.summary == "550 5.1.1"
    assert "jane" not in reply.summary
    assert reply.readable() == "550 5.1.1 <jane@acme.example>: Recipient address rejected"
    assert reply.scrubbed("jane@acme.example").text == "<<address>>: Recipient address rejected"
    assert SmtpReply(451, None, "x").summary == "451"
    assert SmtpReply(None, None, "not sent: ...").summary == "no reply code"
    assert SmtpReply(None, None, "not sent: ...").readable() == "not sent: ..."


@given(st.text(max_size=300), st.one_of(st.none(), st.integers(-1, 999)))
def test_any_reply_parses_without_error(raw, code):
    reply = parse_reply(raw, code)
    assert reply.code is None or 200 <= reply.code <= 599
    assert reply.status is None or reply.code is not None
    assert "\n" not in reply.text and "\r" not in reply.text


# --- Message-IDs: keyed with the customer's key -----------------------------------------------


def test_a_message_id_is_keyed_with_the_customers_key_and_deterministic():
    one = CustomerKey("acme", os.urandom(32))
    other = CustomerKey("acme", os.urandom(32))
    args = ("n-1", "Dpo@Acme.example", "notice", "privacy@vendor.example")
    first = message_id(one, *args)
    assert re.fullmatch(r"<[0-9a-f]{32}@vendor\.example>", first)
    assert message_id(one, *args) == first  # a retry carries the same id
    assert message_id(one, "n-1", "dpo@acme.example", "notice", "privacy@vendor.example") == first
    assert message_id(other, *args) != first  # another key: another id for the same address
    assert message_id(one, "n-1", "Dpo@Acme.example", "reminder", "privacy@vendor.example") != first
    # nothing of the unkeyed SHA-256 a guess list could recompute
    unkeyed = hashlib.sha256(b"n-1\x1facme\x1fDpo@Acme.example\x1fnotice").hexdigest()[:32]
    assert unkeyed not in first
