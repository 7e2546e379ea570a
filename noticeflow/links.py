"""Signed, expiring per-customer action links (rule 11).

A link is ``{public_url}/a/{token}``; the token names the notice, the customer, the action and when
it expires, signed with ``NOTICEFLOW_SECRET_KEY`` (itsdangerous: HMAC-SHA1 over a compact JSON
payload, a salt per purpose). Tokens are deterministic, so a retried mail carries the same link.
Opening a link only shows a page; acting takes a POST (``noticeflow/web/actions.py``), so mail
scanners that fetch links act on nothing.

Key rotation: the signer takes a list of keys (``Settings.verification_keys``): the first signs,
every one verifies, so a link mailed before a rotation keeps working while its old key is listed in
``NOTICEFLOW_PREVIOUS_SECRET_KEYS``. There is no default key: entry points refuse to start without a
real one (noticeflow/keyring.py), and the signer itself refuses an empty or public key, so a link
forged with the development key this project once shipped verifies nowhere.

A token whose signature holds but whose expiry has passed is still *readable* (:meth:`LinkSigner.read`):
the action page decides what stays open after expiry (revoking an opt-in is open for as long as the
customer is opted in, rule 8). :meth:`LinkSigner.verify` refuses it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from itsdangerous import BadPayload, BadSignature, URLSafeSerializer
from itsdangerous.encoding import base64_decode, base64_encode

from noticeflow.keyring import PUBLIC_KEYS

SALT = "noticeflow.action-link.v1"
# Late objections are still taken (flagged late, rule 7), so a link outlives the deadline a while.
GRACE = timedelta(days=30)
# Our tokens are ~110 characters; anything far longer is not one of ours (and is not worth an HMAC).
TOKEN_MAX = 600
# A leading "." marks a compressed payload: tokens signed before links were always uncompressed
# (itsdangerous compressed a payload when that made it shorter) still open.
_TOKEN_SHAPE = re.compile(r"^\.?[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+$")


class LinkAction(StrEnum):
    object = "object"
    opt_in = "opt_in"


class InvalidLink(Exception):
    """A forged, tampered, malformed or expired token; the message says which, for the log.

    ``kind`` is one of ``malformed`` (not shaped like a token at all), ``forged`` (the signature
    does not match: altered, or signed with a key we do not hold) and ``expired``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class ActionLink:
    notice_id: str
    customer_id: str
    action: LinkAction
    expires_at: datetime

    def expired(self, now: datetime) -> bool:
        return now >= self.expires_at


def fingerprint(token: str) -> str:
    """A short, one-way name for a token, fit for a log line (the token itself never is)."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:12]


class LinkSigner:
    def __init__(self, secret_key: str | list[str], public_url: str) -> None:
        """``secret_key``: the signing key, or a list of keys — the first signs, every one verifies
        (key rotation: a link mailed before the rotation keeps working)."""
        keys = [secret_key] if isinstance(secret_key, str) else list(secret_key)
        if not keys or not all(isinstance(key, str) and key.strip() for key in keys):
            raise ValueError("a link-signing key must not be empty")
        if any(key.strip() in PUBLIC_KEYS for key in keys):
            raise ValueError("a link-signing key must not be a public development key")
        # itsdangerous signs with the last key of its list and verifies with all of them.
        self._serializer = URLSafeSerializer(list(reversed(keys)), salt=SALT)
        # Signed as itsdangerous signs (the URL-safe base64 of the payload, ".", that of an
        # HMAC-SHA1 under the key it derives from the signing key and the salt), but with the key
        # derived and the HMAC keyed once, not for every token, and the payload never compressed:
        # itsdangerous zlib-compresses it when that is shorter, which cost more than the HMAC and
        # gave some customers a token starting with "." (see read).
        self._mac = hmac.new(self._serializer.make_signer().derive_key(), digestmod=hashlib.sha1)
        self.public_url = public_url.rstrip("/")

    def token(self, link: ActionLink) -> str:
        payload = [
            link.notice_id,
            link.customer_id,
            link.action.value,
            int(link.expires_at.timestamp()),
        ]
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        value = base64_encode(text.encode("utf-8"))
        mac = self._mac.copy()
        mac.update(value)
        return (value + b"." + base64_encode(mac.digest())).decode("ascii")

    def url(self, link: ActionLink) -> str:
        return f"{self.public_url}/a/{self.token(link)}"

    def read(self, token: str) -> ActionLink:
        """What a token says, once its signature holds — expired or not."""
        if not isinstance(token, str) or len(token) > TOKEN_MAX or not _TOKEN_SHAPE.match(token):
            raise InvalidLink("malformed", "the link is not shaped like one of ours (cut short?)")
        try:  # unused low bits set in a last character: one link must have one spelling
            canonical = all(
                base64_encode(base64_decode(part)).decode() == part for part in token.split(".")
            )
        except Exception:
            canonical = False
        if not canonical:
            raise InvalidLink("malformed", "the link is not spelled as we wrote it")
        try:
            notice_id, customer_id, action, expires = self._serializer.loads(token)
            if not all(isinstance(v, str) for v in (notice_id, customer_id, action)):
                raise TypeError("ids must be strings")
            if isinstance(expires, bool) or not isinstance(expires, int):
                raise TypeError("the expiry must be a number")
            return ActionLink(
                notice_id,
                customer_id,
                LinkAction(action),
                datetime.fromtimestamp(expires, UTC),
            )
        except BadPayload:
            raise InvalidLink("malformed", "the link's content is malformed") from None
        except BadSignature:
            raise InvalidLink(
                "forged", "the link's signature does not match (forged or altered)"
            ) from None
        except (TypeError, ValueError, OverflowError, OSError):
            raise InvalidLink("malformed", "the link's content is malformed") from None

    def verify(self, token: str, now: datetime) -> ActionLink:
        """What a token says, if its signature holds and it has not expired."""
        link = self.read(token)
        if link.expired(now):
            raise InvalidLink("expired", f"the link expired at {link.expires_at.isoformat()}")
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
