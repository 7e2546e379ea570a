"""The pure part of replies (noticeflow/domain/replies.py): a reply's own words told from what it
quotes, exact commands, reply addresses."""

from __future__ import annotations

import pytest

from noticeflow.domain.replies import (
    Classification,
    ReplyAddress,
    exact_command,
    first_line,
    strip_reply,
)

NOTICE = "We intend to engage OpenAI, LLC as a sub-processor.\nYour deadline: 21 December 2026."


def test_gmail_on_wrote_and_quoted_lines_are_dropped():
    text = (
        "We object: no AI processing of our users' data.\n\n"
        "On Mon, 30 Nov 2026 at 12:00, Privacy <privacy@vendor.example> wrote:\n"
        "> We intend to engage OpenAI, LLC as a sub-processor.\n"
        "> Your deadline: 21 December 2026.\n"
    )
    assert strip_reply(text) == "We object: no AI processing of our users' data."


def test_on_wrote_wrapped_over_two_lines():
    text = (
        "Please opt us in.\r\n\r\n"
        "On Mon, 30 Nov 2026 at 12:00, Privacy Team of Vendor Example Incorporated\r\n"
        "<privacy@vendor.example> wrote:\r\n"
        "> " + NOTICE.replace("\n", "\n> ")
    )
    assert strip_reply(text) == "Please opt us in."


def test_signature_separator_ends_the_own_words():
    text = "object\n\n-- \nJane Roe\nData Protection Officer\nInitech\n"
    assert strip_reply(text) == "object"
    assert strip_reply("opt in\n--\nJane") == "opt in"


def test_outlook_original_message_block():
    text = (
        "We have a question about the transfer mechanism.\n"
        "\n"
        "-----Original Message-----\n"
        "From: Privacy <privacy@vendor.example>\n"
        "Sent: Monday, November 30, 2026 12:00 PM\n"
        "To: dpo@initech.example\n"
        "Subject: Sub-Processor Notification - OpenAI\n"
        "\n" + NOTICE
    )
    assert strip_reply(text) == "We have a question about the transfer mechanism."


def test_outlook_from_sent_header_block_without_separator():
    text = (
        "Objection.\n"
        "________________________________\n"
        "From: Privacy <privacy@vendor.example>\n"
        "Sent: Monday, November 30, 2026 12:00\n"
        "To: Jane Roe\n\n" + NOTICE
    )
    assert strip_reply(text) == "Objection."
    bare = "Objection.\n\nFrom: Privacy <privacy@vendor.example>\nSent: Monday\n\n" + NOTICE
    assert strip_reply(bare) == "Objection."


def test_german_client_and_mobile_footer():
    text = (
        "Wir widersprechen.\n\nVon meinem iPhone gesendet\n\n"
        "Am 30.11.2026 um 12:00 schrieb Privacy <privacy@vendor.example>:\n> " + NOTICE
    )
    assert strip_reply(text) == "Wir widersprechen."
    assert strip_reply("object\n\nSent from my iPhone") == "object"


def test_inline_answers_between_quotes_are_kept():
    text = "> Do you object?\nYes, we object.\n> Reason?\nNo AI on our data.\n"
    assert strip_reply(text) == "Yes, we object.\nNo AI on our data."


def test_own_words_that_merely_mention_from_or_on_are_kept():
    text = "On reflection we object.\nFrom: our legal team's point of view, it is too soon."
    assert strip_reply(text) == text


def test_blank_lines_squeezed_and_trimmed():
    assert strip_reply("\n\n  \nfirst\n\n\n\nsecond\n\n") == "first\n\nsecond"
    assert strip_reply("") == ""
    assert strip_reply("> only a quote\n> nothing else") == ""


@pytest.mark.parametrize(
    "text,expected",
    [
        ("opt in", Classification.opt_in),
        ("  Opt  IN  ", Classification.opt_in),
        ("opt\nin", Classification.opt_in),  # blanks squeezed, line breaks too
        ("Opt in.", Classification.opt_in),  # a trailing period is allowed
        ("object", Classification.objection),
        ("OBJECT.", Classification.objection),
        ("Object\r\n-- \nJane Roe", Classification.objection),  # the signature is stripped
        ("\n\nOBJECT\n\nOn Mon, 30 Nov 2026, Privacy wrote:\n> opt in", Classification.objection),
        ("> object\nopt in", Classification.opt_in),
        ("object\n\nSent from my iPhone", Classification.objection),
        # The whole reply must be the command: anything more is for ops to read.
        ("Object\n\nsorry, wrong reply \u2014 we accept", None),
        ("opt in\nbut only for goals", None),
        ("Opt In\n\nThanks, Jane", None),
        ("object\nunless you use EU regions", None),
        ("opt in please", None),
        ("We object.", None),
        ("object..", None),
        ("OPTIN", None),
        ("O p t  i n", None),
        ("opt-in", None),
        ("objection", None),
        ("", None),
        (".", None),
        ("> opt in", None),
    ],
)
def test_exact_command(text, expected):
    assert exact_command(text) is expected


def test_first_line_is_the_first_own_line():
    assert first_line("\n> quoted\n\n  Hello there  \nmore") == "Hello there"


def test_reply_address_parse_write_and_read_back():
    address = ReplyAddress.parse("Reply@Replies.Vendor.Example")
    assert address == ReplyAddress("reply", "replies.vendor.example")
    token = "abcdefghijklmnopqrstuvwx"
    written = address.for_token(token)
    assert written == f"reply+{token}@replies.vendor.example"
    assert address.token_of(written.upper()) == token  # mail servers may change the case
    assert address.token_of(f"<{written}>") == token
    assert address.token_of(f"reply+{token}@other.example") is None
    assert address.token_of(f"other+{token}@replies.vendor.example") is None
    assert address.token_of("reply+short@replies.vendor.example") is None
    assert address.token_of("reply@replies.vendor.example") is None
    assert address.is_ours("reply+anything@replies.vendor.example")
    assert not address.is_ours("dpo@initech.example")
    assert ReplyAddress.parse("replies.vendor.example") == address  # a bare domain: reply@


@pytest.mark.parametrize(
    "bad", ["reply+x@replies.example", "reply@", "@example.com", "re ply@example.com", "a@b..c"]
)
def test_reply_address_refuses_what_cannot_carry_a_token(bad):
    with pytest.raises(ValueError, match="expected an address such as"):
        ReplyAddress.parse(bad)
