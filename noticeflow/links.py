"""Signed, expiring per-customer action links (rule 11).

A link is ``{public_url}/a/{token}``; the token names the notice, the customer, the action and when
it expires, signed with ``NOTICEFLOW_SECRET_KEY`` (itsdangerous: HMAC-SHA1 over a compact JSON
payload, a salt per purpose). Tokens are deterministic, so a retried mail carries the same link.
Opening a link only shows a page; acting takes a POST (the web app), so mail scanners that fetch
links act on nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from itsdangerous import BadSignature, URLSafeSerializer

SALT = "noticeflow.action-link.v1"
# Late objections are still taken (flagged late, rule 7), so a link outlives the deadline a while.
GRACE = timedelta(days=30)


class LinkAction(StrEnum):
    object = "object"
    opt_in = "opt_in"


class InvalidLink(Exception):
    """A forged, tampered, malformed or expired token; the message says which, for the log."""


@dataclass(frozen=True)
class ActionLink:
    notice_id: str
    customer_id: str
    action: LinkAction
    expires_at: datetime


class LinkSigner:
    def __init__(self, secret_key: str | list[str], public_url: str) -> None:
        """``secret_key``: the signing key, or a list of keys — the first signs, every one verifies
        (key rotation: a link mailed before the rotation keeps working)."""
        keys = [secret_key] if isinstance(secret_key, str) else list(secret_key)
        if not keys or not all(keys):
            raise ValueError("a link-signing key must not be empty")
        # itsdangerous signs with the last key of its list and verifies with all of them.
        self._serializer = URLSafeSerializer(list(reversed(keys)), salt=SALT)
        self.public_url = public_url.rstrip("/")

    def token(self, link: ActionLink) -> str:
        payload = [
            link.notice_id,
            link.customer_id,
            link.action.value,
            int(link.expires_at.timestamp()),
        ]
        return str(self._serializer.dumps(payload))

    def url(self, link: ActionLink) -> str:
        return f"{self.public_url}/a/{self.token(link)}"

    def verify(self, token: str, now: datetime) -> ActionLink:
        try:
            notice_id, customer_id, action, expires = self._serializer.loads(token)
            link = ActionLink(
                str(notice_id),
                str(customer_id),
                LinkAction(action),
                datetime.fromtimestamp(int(expires), UTC),
            )
        except BadSignature:
            raise InvalidLink("the link's signature does not match (forged or altered)") from None
        except (TypeError, ValueError):
            raise InvalidLink("the link's content is malformed") from None
        if now >= link.expires_at:
            raise InvalidLink(f"the link expired at {link.expires_at.isoformat()}")
        return link

    def links_for(
        self, notice_id: str, customer_id: str, deadline: datetime, effective_at: datetime
    ) -> dict[str, str]:
        """The action URLs a customer's mail carries, valid until a while after the later of its
        deadline and the effective date."""
        expires = max(deadline, effective_at) + GRACE
        return {
            f"{action.value}_url": self.url(ActionLink(notice_id, customer_id, action, expires))
            for action in LinkAction
        }
