"""Signal payloads of NoticeWorkflow: plain JSON, so the Temporal CLI can send them.

Every payload is validated inside the workflow; a payload that fails is recorded as rejected, never
dropped and never allowed to fail a workflow task.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from noticeflow.domain.notice import effective_bounds
from noticeflow.domain.rules import Outcome
from noticeflow.domain.text import FreeText, Identifier, SingleLine, free_text


def _visible(value: str) -> str:
    """A name people compare (four eyes): no invisible format characters such as U+200B."""
    hidden = [ch for ch in value if unicodedata.category(ch) == "Cf"]
    if hidden:
        raise ValueError(f"contains an invisible character (U+{ord(hidden[0]):04X})")
    return value


def same_person(one: str, other: str) -> bool:
    """Whether two names are the same person's for four eyes: compatibility-normalised (NFKC, so
    fullwidth letters are their plain selves) and case-folded."""
    return (
        unicodedata.normalize("NFKC", one).casefold().strip()
        == unicodedata.normalize("NFKC", other).casefold().strip()
    )


# One line, no control or invisible characters: it may reach a mail or a display.
Who = Annotated[SingleLine, AfterValidator(_visible)]
CustomerId = Identifier
# Reasons and notes are kept whole (sealed), however long: an objection is never lost to a limit.
Reason = FreeText
Note = Annotated[str, free_text(allow_empty=True)]
Channel = Literal["cli", "temporal", "link", "web", "api", "demo"]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # The sender's own key: the same key again is the same action (ignored as a repeat). Without
    # one, every submission is a new receipt, judged on its own (see noticeflow/intake.py).
    idempotency_key: str = Field(default="", max_length=200)


class Approve(_Payload):
    by: Who


class Objection(_Payload):
    customer_id: CustomerId
    reason: Reason
    by: Who = "customer"
    channel: Channel = "temporal"


class RequestChanges(Objection):
    """A customer with a DORA contract asks for modifications (EU 2025/532 Art. 6): a case, like
    an objection, that holds activation until ops resolve it."""


class ResolveObjection(_Payload):
    customer_id: CustomerId
    outcome: Outcome
    by: Who
    note: Note = ""


class OptIn(_Payload):
    customer_id: CustomerId
    by: Who = "customer"
    channel: Channel = "temporal"


class RevokeOptIn(OptIn):
    pass


class Postpone(_Payload):
    # The same bounds as a notice's own date: a postponement the notice could not carry would
    # fail every later step (a recorded rejection instead).
    effective_at: Annotated[AwareDatetime, AfterValidator(effective_bounds)]
    by: Who


class Cancel(_Payload):
    reason: Reason
    by: Who


class Resend(_Payload):
    customer_id: CustomerId
    by: Who = "ops"


class Exclude(_Payload):
    """Ops settle a customer without activation (e.g. undelivered for good), with who and why."""

    customer_id: CustomerId
    reason: Reason
    by: Who


class Wake(_Payload):
    """A signal that only says "there is something in the intake": the receipt carries the rest."""

    receipt_id: str = Field(default="", max_length=64)


SIGNAL_PAYLOADS: dict[str, type[_Payload]] = {
    "approve": Approve,
    "object": Objection,
    "request_changes": RequestChanges,
    "resolve_objection": ResolveObjection,
    "opt_in": OptIn,
    "revoke_opt_in": RevokeOptIn,
    "postpone": Postpone,
    "cancel": Cancel,
    "resend": Resend,
    "exclude": Exclude,
}
# Actions that change the notice as a whole: judged by the workflow itself, in receipt order.
NOTICE_ACTIONS = frozenset({"approve", "postpone", "cancel"})
WAKE_SIGNAL = "intake"
