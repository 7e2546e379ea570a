"""Customers' contact addresses that a relay would not deliver as the person meant: an invisible
character pasted into the part before the @ (a zero-width space, a bidi override, a soft hyphen,
a byte order mark) is refused at import, naming its code point, as is a part before the @ of more
than 64 bytes (RFC 5321 4.5.3.1.1 counts octets: 64 é are 128). Joiners stay: Persian words and
emoji need them."""

from __future__ import annotations

import pytest

from noticeflow.domain.customers import parse_customers_csv
from noticeflow.domain.errors import InputError
from noticeflow.domain.subscriptions import normalise_address

HEADER = "customer_id,name,region,services,contact_emails,timezone\n"


@pytest.mark.parametrize("code", ["200B", "202E", "00AD", "FEFF", "2060", "E000"])
def test_an_invisible_character_before_the_at_is_refused_with_its_code_point(code):
    with pytest.raises(InputError) as refused:
        parse_customers_csv(HEADER + f"a,A,US,x,jo{chr(int(code, 16))}se@acme.example,UTC\n")
    assert f"the part before the @ holds U+{code}, an invisible" in str(refused.value)


def test_the_part_before_the_at_is_at_most_64_bytes():
    (customer,) = parse_customers_csv(HEADER + f"a,A,US,x,{'é' * 32}@acme.example,UTC\n")
    assert customer.contact_emails == [f"{'é' * 32}@acme.example"]
    with pytest.raises(InputError) as refused:
        parse_customers_csv(HEADER + f"a,A,US,x,{'é' * 33}@acme.example,UTC\n")
    assert "the part before the @ is longer than 64 bytes" in str(refused.value)


def test_joiners_and_letters_beyond_ascii_are_kept_and_subscribers_are_unchanged():
    persian = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645@acme.example"  # ZWNJ
    (customer,) = parse_customers_csv(HEADER + f"a,A,US,x,{persian};jörg@acme.example,UTC\n")
    assert customer.contact_emails == [persian, "jörg@acme.example"]
    # Subscribers' addresses stay ASCII before the @, 64 characters at most.
    assert normalise_address("a" * 64 + "@acme.example")[0] is not None
    assert "longer than 64 characters" in normalise_address("a" * 65 + "@acme.example")[1][0]
    assert normalise_address("jo\u200bse@acme.example")[0] is None
