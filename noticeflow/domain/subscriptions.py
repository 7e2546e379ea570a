"""E-mail subscriptions, the pure part: what an address typed into the public form must be.

An address is accepted in the form mail servers agree on (RFC 5321/5322 without the corners no
one uses): ``local@domain``, the local part a dot-atom of ASCII letters, digits and
``!#$%&'*+-/=?^_`{|}~`` (no quoted strings, no comments), the domain a host name of at least two
labels (an internationalised one is taken in its IDNA2008 form, after UTS 46 mapping: ``ß``
stays ``ß``, a character IDNA2008 does not allow is refused), at most 254 characters in all and
64 before the ``@``. Each problem is said in words that do not repeat the address (the page shows
what was typed; logs never see it)."""

from __future__ import annotations

import re
import unicodedata

import idna

MAX_ADDRESS = 254
MAX_LOCAL = 64
_ATEXT = re.compile(r"^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+(\.[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+)*$")
# RFC 6531's atext: the same, and any character beyond ASCII (an address for a relay with SMTPUTF8)
_UTF8_ATEXT = re.compile(
    r"^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\U0010ffff]+"
    r"(\.[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\U0010ffff]+)*$"
)
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_TLD = re.compile(r"^(xn--[a-z0-9-]+|[a-z]{2,63})$")


def normalise_address(text: object, utf8_local: bool = False) -> tuple[str | None, list[str]]:
    """The address as stored (domain lower-cased and in IDNA form, local part as typed), or
    every problem with it. ``utf8_local``: the part before the @ may hold characters beyond
    ASCII too (RFC 6531; the mailer sends such an address where the relay offers SMTPUTF8)."""
    if not isinstance(text, str):
        return None, ["enter an e-mail address"]
    value = text.strip()
    if not value:
        return None, ["enter an e-mail address"]
    if len(value) > 4 * MAX_ADDRESS:
        return None, [f"that is far longer than an e-mail address can be ({MAX_ADDRESS} at most)"]
    problems: list[str] = []
    if any(ord(ch) < 32 or ord(ch) == 127 or ch.isspace() for ch in value):
        problems.append("an e-mail address has no spaces, line breaks or control characters")
    if value.count("@") != 1:
        problems.append("an e-mail address has exactly one @ (name@example.com)")
        return None, problems
    local, domain = value.split("@")
    if not local:
        problems.append("nothing before the @")
    elif len(local.encode() if utf8_local else local) > MAX_LOCAL:  # octets (RFC 5321): é is 2
        problems.append(
            f"the part before the @ is longer than {MAX_LOCAL}"
            f" {'bytes (a letter beyond A-Z takes two to four)' if utf8_local else 'characters'}"
        )
    elif utf8_local and (hidden := _invisible(local)) is not None:
        problems.append(
            f"the part before the @ holds U+{ord(hidden):04X}, an invisible, private-use or"
            " unassigned character (often pasted with the address): the relay would take it as"
            " part of the mailbox's name"
        )
    elif not (_UTF8_ATEXT if utf8_local else _ATEXT).match(local):
        problems.append(
            f"the part before the @ may hold letters{'' if utf8_local else ' A-Z'}, digits, dots"
            " (not two in a row, not first or last) and !#$%&'*+-/=?^_`{|}~ only"
        )
    ascii_domain = _domain(domain, problems)
    if problems or ascii_domain is None:
        return None, problems
    address = f"{local}@{ascii_domain}"
    if len(address.encode()) > MAX_ADDRESS:
        return None, [f"an e-mail address has at most {MAX_ADDRESS} characters"]
    return address, []


# Joiners (U+200C, U+200D) are part of words in some scripts (Persian, Indic) and of emoji.
_JOINERS = "\u200c\u200d"


def _invisible(text: str) -> str | None:
    """The first formatting (Cf: a zero-width space, a bidi override, a soft hyphen, a byte order
    mark), private-use or unassigned character of ``text``, joiners aside."""
    for char in text:
        if char not in _JOINERS and unicodedata.category(char) in ("Cf", "Co", "Cn"):
            return char
    return None


def _domain(domain: str, problems: list[str]) -> str | None:
    if not domain:
        problems.append("nothing after the @ (a domain such as example.com)")
        return None
    # A trailing dot (the root) in any of the spellings UTS 46 maps to "." (an ideographic or
    # fullwidth full stop, typed with a CJK keyboard) is dropped, as the ASCII one always was.
    ascii_domain, problem = idna_domain(domain.rstrip(".\u3002\uff0e\uff61"))
    if ascii_domain is None:
        problems.append(f"the domain after the @ {problem}")
        return None
    labels = ascii_domain.split(".")
    if len(labels) < 2:
        problems.append("the domain after the @ needs a dot (example.com)")
    elif not all(_LABEL.match(label) for label in labels):
        problems.append(
            "the domain after the @ may hold letters, digits and hyphens between its dots only"
        )
    elif not _TLD.match(labels[-1]):
        problems.append("the domain after the @ does not end in a top-level domain (.com, .de…)")
    return None if problems else ascii_domain


_CODEPOINT = re.compile(r"\bCodepoint (U\+[0-9A-F]{4,6})")


def idna_domain(name: str) -> tuple[str | None, str]:
    """A host name in its ASCII form, lower-case: an internationalised one (or one with an
    ``xn--`` label) by IDNA2008 with UTS 46 mapping (non-transitional: ``straße`` is not
    ``strasse``), not Python's IDNA2003 ``"idna"`` codec. ``(None, why)`` if IDNA2008 refuses it;
    the words never repeat the name (a character is named by its code point)."""
    lowered = name.lower()
    if lowered.isascii() and not any(label.startswith("xn--") for label in lowered.split(".")):
        return lowered, ""
    try:
        return idna.encode(name, uts46=True).decode("ascii"), ""
    except idna.IDNAError as error:
        code = _CODEPOINT.search(str(error))
        why = f" (it holds {code.group(1)}, which domain names may not)" if code else ""
        return None, f"is not a valid internationalised domain name (IDNA2008){why}"
    except UnicodeError:
        return None, "is not a valid internationalised domain name (IDNA2008)"
