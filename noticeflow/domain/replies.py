"""Replies to notice mails, the pure part: reply addresses, quoted text and signatures, commands.

A notice mail carries a per-customer reply address in ``Reply-To``: ``<local>+<token>@<domain>``
(e.g. ``reply+k3v...@replies.vendor.example``), the token a keyed, unguessable id of (notice,
customer) that only a lookup in PostgreSQL resolves (noticeflow/replies/tokens.py). Here: how such an
address is written and read back, how a reply's own words are told from what it quotes
(:func:`strip_reply`), and what counts as an exact "opt in" / "object" answer — the whole of
its own words (:func:`exact_command`). No I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from noticeflow.domain.rules import Authorisation, consent_required

# 15 bytes of an HMAC in lower-case base32: 24 characters, 120 bits (no padding at 15 bytes).
TOKEN_CHARS = 24
TOKEN = re.compile(rf"^[a-z2-7]{{{TOKEN_CHARS}}}$")
_LOCAL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"^(?=.{{1,200}}$){_LABEL}(?:\.{_LABEL})*$")


class Classification(StrEnum):
    """What ops make of a reply (one click on the dashboard)."""

    objection = "objection"  # an objection received at the mail's receipt time
    opt_in = "opt_in"  # an opt-in received at the mail's receipt time
    question = "question"  # no action: marked handled


# The intake action each classification becomes (a question becomes none).
ACTIONS = {Classification.objection: "object", Classification.opt_in: "opt_in"}


def opt_in_refusal(
    opt_in_notice: bool | None, authorisation: str | None, customer_id: str
) -> str | None:
    """Why an opt-in cannot apply to this customer on this notice (None: it can), in the words the
    intake's judgement uses (rule 8): only a customer whose consent is asked (an opt-in notice, or
    specific authorisation) opts in, and a ``dora`` customer may approve; a customer with general
    authorisation on an ordinary notice objects instead. Unknown terms (None): no refusal here,
    the judgement decides."""
    if opt_in_notice is None or authorisation is None:
        return None
    if consent_required(opt_in_notice, authorisation) or authorisation == Authorisation.dora:
        return None
    return (
        f"this notice is not an opt-in notice and customer {customer_id!r} has general"
        " authorisation (silence is deemed acceptance); it objects instead"
    )


def applicable(
    opt_in_notice: bool | None, authorisation: str | None, customer_id: str, *, erased: bool
) -> tuple[Classification, ...]:
    """The classifications that can apply to a reply of this customer on this notice: a question
    always; for a customer erased since, only that (its reply can be marked handled, nothing can
    be recorded for it); an objection otherwise; an opt-in where :func:`opt_in_refusal` allows."""
    if erased:
        return (Classification.question,)
    found = [Classification.objection]
    if opt_in_refusal(opt_in_notice, authorisation, customer_id) is None:
        found.append(Classification.opt_in)
    return (*found, Classification.question)


@dataclass(frozen=True)
class ReplyAddress:
    """The configured reply address (``NOTICEFLOW_REPLY_ADDRESS``): its local part and domain."""

    local: str
    domain: str

    @classmethod
    def parse(cls, text: str) -> ReplyAddress:
        """``reply@replies.example.com`` (or a bare domain: ``reply@`` it). ValueError says what
        is wrong."""
        value = text.strip()
        local, at, domain = value.rpartition("@")
        if not at:
            local, domain = "reply", value
        problems = []
        if not _LOCAL.match(local):
            problems.append(
                f"local part {local[:40]!r}: use letters, digits, '.', '_' or '-' (no '+': the"
                " token is added after one), at most 40 characters"
            )
        if not _DOMAIN.match(domain):
            problems.append(f"domain {domain[:60]!r} is not a domain name")
        if problems:
            raise ValueError(
                "expected an address such as reply@replies.example.com: " + "; ".join(problems)
            )
        return cls(local.lower(), domain.lower())

    def for_token(self, token: str) -> str:
        return f"{self.local}+{token}@{self.domain}"

    def token_of(self, address: str) -> str | None:
        """The token of an address at this reply address (case-insensitive), or None: another
        address, or one whose token part cannot be a token (then nothing need be looked up)."""
        value = address.strip().strip("<>").lower()
        local, at, domain = value.rpartition("@")
        if not at or domain != self.domain:
            return None
        base, plus, token = local.partition("+")
        if not plus or base != self.local or not TOKEN.match(token):
            return None
        return token

    def is_ours(self, address: str) -> bool:
        """Whether an address is at the reply domain with the reply local part (token or not)."""
        value = address.strip().strip("<>").lower()
        local, _, domain = value.rpartition("@")
        return domain == self.domain and local.partition("+")[0] == self.local


# --- a reply's own words ---------------------------------------------------------------------

# "On Mon, 30 Nov 2026 at 12:00, Privacy <privacy@vendor.example> wrote:" (Gmail, Apple Mail,
# Thunderbird), also wrapped over two lines; German mail clients' "Am ... schrieb ...:".
_ON_WROTE = re.compile(
    r"^\s*(On\s.+\swrote|Am\s.+\sschrieb\s.*|Le\s.+\sa\s[ée]crit)\s*:\s*$", re.IGNORECASE
)
_ON_START = re.compile(r"^\s*(On|Am|Le)\s", re.IGNORECASE)
_WROTE_END = re.compile(r"(wrote|schrieb[^:]*|a\s[ée]crit)\s*:\s*$", re.IGNORECASE)
# Outlook's separators, and the header block it puts above the quoted mail.
_ORIGINAL = re.compile(
    r"^\s*-{2,}\s*(Original Message|Urspr(ü|ue)ngliche Nachricht|Forwarded message)\s*-{2,}\s*$",
    re.IGNORECASE,
)
_UNDERSCORES = re.compile(r"^\s*_{10,}\s*$")
_HEADER_FROM = re.compile(r"^\s*\*?(From|Von|De)\s*:\*?\s", re.IGNORECASE)
_HEADER_NEXT = re.compile(
    r"^\s*\*?(Sent|Date|To|Subject|Cc|Gesendet|Datum|An|Betreff|Envoyé|À|Objet)\s*:", re.IGNORECASE
)
_SIGNATURE = re.compile(r"^(-- ?|--)$")  # RFC 3676 "-- " (and "--", its common trimmed form)
_MOBILE = re.compile(
    r"^\s*(Sent from my \S.*|Get Outlook for \S.*|Von meinem \S.* gesendet)\s*$", re.IGNORECASE
)


def strip_reply(text: str) -> str:
    """A reply's own words: everything from the first quote header ("On ... wrote:", Outlook's
    "-----Original Message-----" or "From: / Sent:" block) or signature separator ("-- ") on is
    dropped, as are quoted lines ("> ...") and a "Sent from my ..." line; blank lines at either
    end go and runs of blank lines become one."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    for i, line in enumerate(lines):
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if _ends_own_words(line, following, lines[i + 1 : i + 5]):
            break
        if line.lstrip().startswith(">"):
            continue
        if _MOBILE.match(line):
            continue
        kept.append(line.rstrip())
    out: list[str] = []
    for line in kept:
        if not line.strip() and (not out or not out[-1].strip()):
            continue
        out.append(line)
    while out and not out[-1].strip():
        out.pop()
    return "\n".join(out)


def _ends_own_words(line: str, following: str, after: list[str]) -> bool:
    if _SIGNATURE.match(line) or _ORIGINAL.match(line) or _ON_WROTE.match(line):
        return True
    # "On <date>, <name> <address>" wrapped: "wrote:" on the next line.
    if _ON_START.match(line) and _WROTE_END.search(following) and len(line) + len(following) < 300:
        return True
    if _UNDERSCORES.match(line) and any(_HEADER_FROM.match(a) for a in after[:2]):
        return True
    # Outlook's header block: "From: ..." with "Sent:"/"Date:"/"To:"/"Subject:" right after.
    return bool(_HEADER_FROM.match(line) and any(_HEADER_NEXT.match(a) for a in after[:2]))


def first_line(text: str) -> str:
    """The first non-blank line of a reply's own words ("" when there is none)."""
    for line in strip_reply(text).split("\n"):
        if line.strip():
            return line.strip()
    return ""


_COMMANDS = {"opt in": Classification.opt_in, "object": Classification.objection}


def exact_command(text: str) -> Classification | None:
    """An exact "opt in" or "object" reply, or None: anything else is for ops to read.

    The reply's whole own words (:func:`strip_reply`: quoted text and signature removed), blanks
    squeezed to one space and case folded, must be the command, a trailing period allowed
    ("Opt  In", "object."). A reply that says anything more ("object" and on the next line "sorry,
    wrong reply — we accept"; "opt in" then "but only for goals") is not a command: its other words
    may change its meaning, so it waits for ops."""
    words = " ".join(strip_reply(text).split()).casefold()
    if words.endswith("."):
        words = words[:-1].rstrip()
    return _COMMANDS.get(words)
