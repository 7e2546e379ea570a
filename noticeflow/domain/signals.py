"""Signal payloads of NoticeWorkflow: plain JSON, so the Temporal CLI can send them.

Every payload is validated inside the workflow; a payload that fails is recorded as rejected, never
dropped and never allowed to fail a workflow task.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from noticeflow.domain.rules import Outcome

Who = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
CustomerId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Channel = Literal["cli", "temporal", "link", "web", "api", "demo"]


def content_key(*parts: object) -> str:
    """A deterministic idempotency key from a payload's content, for senders that give none."""
    digest = hashlib.sha256("\x1f".join(str(part) for part in parts).encode()).hexdigest()
    return digest[:24]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Approve(_Payload):
    by: Who


class Objection(_Payload):
    customer_id: CustomerId
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4000)]
    by: Who = "customer"
    channel: Channel = "temporal"
    idempotency_key: str = Field(default="", max_length=200)

    def key(self) -> str:
        return self.idempotency_key or content_key(
            "object", self.customer_id, self.reason, self.by, self.channel
        )


class ResolveObjection(_Payload):
    customer_id: CustomerId
    outcome: Outcome
    by: Who
    note: str = Field(default="", max_length=4000)
    idempotency_key: str = Field(default="", max_length=200)

    def key(self) -> str:
        return self.idempotency_key or content_key(
            "resolve", self.customer_id, self.outcome, self.by, self.note
        )


class OptIn(_Payload):
    customer_id: CustomerId
    by: Who = "customer"
    channel: Channel = "temporal"
    idempotency_key: str = Field(default="", max_length=200)


class RevokeOptIn(OptIn):
    pass


class Postpone(_Payload):
    effective_at: AwareDatetime
    by: Who


class Cancel(_Payload):
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4000)]
    by: Who


class Resend(_Payload):
    customer_id: CustomerId
    by: Who = "ops"


SIGNAL_PAYLOADS: dict[str, type[_Payload]] = {
    "approve": Approve,
    "object": Objection,
    "resolve_objection": ResolveObjection,
    "opt_in": OptIn,
    "revoke_opt_in": RevokeOptIn,
    "postpone": Postpone,
    "cancel": Cancel,
    "resend": Resend,
}
