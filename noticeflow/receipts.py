"""Signed receipts: a customer action's receipt as a JWS a customer can keep and anyone can check.

A receipt (noticeflow/intake.py, one row of ``intake``) is downloaded from its receipt page as a
JWS in compact serialization (RFC 7515) signed with Ed25519 (``alg: EdDSA``, RFC 8037). The
protected header names the key (``kid``, :meth:`Keyring.key_id` of the raw public key); the
payload is one JSON object of ids and instants only — what the customer did and how it was
judged (:func:`claims`), never a contact address or a name.

The key is the installation's signing key (``NOTICEFLOW_SIGNING_KEY``) derived for its own use,
:data:`KEY_USE` (not the stream heads' ``heads``): a receipt key and a head key never sign each
other's messages. Its public parts, current and previous, are a JWK Set (RFC 7517) published at
``/.well-known/noticeflow-receipts.json`` (:func:`jwks`); `noticeflow receipts verify` checks a
receipt against the installed keys or a saved JWK Set (:func:`verify`).

The JOSE work is joserfc's (a dependency of Authlib, which the web already uses for OpenID
Connect). joserfc warns that RFC 9864 deprecates the polymorphic ``EdDSA`` name in favour of
``Ed25519``; ``EdDSA`` is what verifiers understand today, so that one warning is silenced here.
"""

from __future__ import annotations

import base64
import binascii
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from joserfc import jws
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import OKPKey

from noticeflow import eventstore
from noticeflow.intake import REJECTED, Receipt

KEY_USE = "receipts"  # keyring.current("signing", KEY_USE) is the Ed25519 seed
ALG = "EdDSA"
TYPE = "noticeflow/receipt/v1"
JWKS_PATH = "/.well-known/noticeflow-receipts.json"
MEDIA_TYPE = "application/jose"  # RFC 7515 section 9.2.1: a JWS in compact serialization
STATUSES = ("accepted", "duplicate", "rejected", "pending")
# The payload's fields, each with whether it may be null (the reason is there only when rejected).
FIELDS = {
    "type": False,
    "receipt_id": False,
    "notice_id": False,
    "customer_id": True,
    "action": False,
    "channel": False,
    "received_at": False,
    "status": False,
    "notice_text_sha256": False,
    "issued_at": False,
}
OPTIONAL = ("reason", "timely", "deadline")
MAX_CHARS = 64_000  # a receipt is under 1 kB; anything this long is not one


class ReceiptProblem(Exception):
    """Why a receipt does not verify: ``kind`` is ``malformed``, ``unknown_key`` or
    ``altered``; the message is one line for a person."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Verified:
    key_id: str
    claims: dict[str, Any]


def instant(value: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``, to the microsecond (the receipt time as recorded)."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def claims(
    receipt: Receipt,
    notice_text_sha256: str,
    issued_at: datetime,
    timely: bool | None = None,
    deadline: datetime | None = None,
) -> dict[str, Any]:
    """The payload: ids, instants, the action and its judgement; the reason only when rejected
    (the intake words reasons itself, never repeating what was sent). For a case it opened (an
    objection, a request for changes): ``timely`` as judged by the receipt time (rule 7), and
    the customer's ``deadline`` then (absent: none yet)."""
    body: dict[str, Any] = {
        "type": TYPE,
        "receipt_id": receipt.receipt_id,
        "notice_id": receipt.notice_id,
        "customer_id": receipt.customer_id,
        "action": receipt.action,
        "channel": receipt.channel,
        "received_at": instant(receipt.received_at),
        "status": receipt.status,
        "notice_text_sha256": notice_text_sha256,
        "issued_at": instant(issued_at),
    }
    if receipt.status == REJECTED:
        body["reason"] = receipt.reason
    if timely is not None:
        body["timely"] = timely
        if deadline is not None:
            body["deadline"] = instant(deadline)
    return body


@contextmanager
def _eddsa() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="EdDSA is deprecated", category=SecurityWarning)
        yield


def signing_keys() -> list[tuple[str, Any]]:
    """(key id, Ed25519 private key) for receipts, the current first; empty without a key."""
    return eventstore.signing_keys(KEY_USE)


def public_keys() -> dict[str, bytes]:
    """Key id -> raw Ed25519 public key, current and previous."""
    return eventstore.signing_public_keys(KEY_USE)


def sign(body: Mapping[str, Any]) -> str:
    """The compact JWS of ``body`` under the current receipt key (a RuntimeError without one:
    every entry point that serves receipts installs the signing key)."""
    keys = signing_keys()
    if not keys:
        raise RuntimeError("no signing key installed: receipts cannot be signed")
    key_id, private = keys[0]
    payload = orjson.dumps(dict(body), option=orjson.OPT_SORT_KEYS)
    with _eddsa():
        return jws.serialize_compact(
            {"alg": ALG, "kid": key_id}, payload, OKPKey.import_key(private), algorithms=[ALG]
        )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not text or not text.isascii() or any(c in text for c in "+/= \t\r\n"):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwk(key_id: str, public: bytes) -> dict[str, str]:
    return {"kty": "OKP", "crv": "Ed25519", "x": _b64(public), "kid": key_id, "use": "sig",
            "alg": ALG}  # fmt: skip


def jwks(keys: Mapping[str, bytes] | None = None) -> dict[str, Any]:
    """The JWK Set of the receipt keys (the installed ones unless given), current first."""
    keys = public_keys() if keys is None else keys
    return {"keys": [jwk(key_id, public) for key_id, public in keys.items()]}


def keys_from_jwks(data: Any) -> dict[str, bytes]:
    """Key id -> raw public key from a JWK Set's JSON; a ValueError naming every problem."""
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError('not a JWK Set: expected a JSON object with a "keys" list')
    found: dict[str, bytes] = {}
    problems = []
    for n, key in enumerate(data["keys"], 1):
        if not isinstance(key, dict):
            problems.append(f"key {n} is not a JSON object")
            continue
        if (key.get("kty"), key.get("crv")) != ("OKP", "Ed25519"):
            continue  # another kind of key: not a receipt key, ignored
        kid, x = key.get("kid"), key.get("x")
        if not isinstance(kid, str) or not kid:
            problems.append(f"key {n} has no kid")
            continue
        try:
            public = _unb64(x) if isinstance(x, str) else b""
        except (ValueError, binascii.Error):
            public = b""
        if len(public) != 32:
            problems.append(f"key {n} ({kid[:40]}): x is not a base64url Ed25519 public key")
            continue
        found[kid] = public
    if problems:
        raise ValueError("not a usable JWK Set: " + "; ".join(problems))
    if not found:
        raise ValueError("the JWK Set holds no Ed25519 key")
    return found


def verify(token: str, keys: Mapping[str, bytes]) -> Verified:
    """The receipt's claims when ``token`` is a receipt signed by one of ``keys`` (key id -> raw
    Ed25519 public key); else a :class:`ReceiptProblem`. Checked in this order: the shape, the
    key id, the signature, then the payload's fields."""
    text = token.strip() if isinstance(token, str) else ""
    parts = text.split(".")
    if not text or len(text) > MAX_CHARS or len(parts) != 3:
        raise ReceiptProblem(
            "malformed", "not a receipt: a signed receipt is three base64url parts joined by '.'"
        )
    try:
        header = orjson.loads(_unb64(parts[0]))
    except (ValueError, binascii.Error, orjson.JSONDecodeError):
        raise ReceiptProblem(
            "malformed", "not a receipt: its header is not base64url JSON"
        ) from None
    try:
        if len(_unb64(parts[2])) != 64:
            raise ValueError("not an Ed25519 signature")
    except (ValueError, binascii.Error):
        raise ReceiptProblem(
            "malformed", "not a receipt: its signature is not 64 bytes in base64url"
        ) from None
    if not isinstance(header, dict) or header.get("alg") != ALG:
        raise ReceiptProblem("malformed", f"not a receipt: its header does not say alg {ALG}")
    if "crit" in header or "b64" in header:
        raise ReceiptProblem("malformed", "not a receipt: its header has extensions (crit, b64)")
    key_id = header.get("kid")
    if not isinstance(key_id, str) or not key_id:
        raise ReceiptProblem("malformed", "not a receipt: its header names no key (kid)")
    public = keys.get(key_id)
    if public is None:
        raise ReceiptProblem(
            "unknown_key",
            f"unknown key id {key_id[:64]!r}: none of the {len(keys)} keys checked against"
            " signed this receipt (wrong JWK Set, or another installation's receipt)",
        )
    try:
        with _eddsa():
            body = jws.deserialize_compact(
                text, OKPKey.import_key(Ed25519PublicKey.from_public_bytes(public)),
                algorithms=[ALG],
            ).payload  # fmt: skip
    except JoseError as error:
        if error.error == "bad_signature":
            raise ReceiptProblem(
                "altered", "altered: the signature does not verify (changed after it was signed)"
            ) from None
        raise ReceiptProblem("malformed", f"not a receipt: {error.error}") from None
    except (ValueError, TypeError, binascii.Error):
        raise ReceiptProblem("malformed", "not a receipt: it does not decode") from None
    return Verified(key_id, _claims_of(body))


def _claims_of(body: bytes) -> dict[str, Any]:
    try:
        found = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ReceiptProblem("malformed", "not a receipt: its payload is not JSON") from None
    if not isinstance(found, dict) or found.get("type") != TYPE:
        raise ReceiptProblem("malformed", f"not a receipt: its payload is not a {TYPE}")
    problems = [
        name
        for name, nullable in FIELDS.items()
        if not (isinstance(found.get(name), str) or (nullable and found.get(name) is None))
    ]
    if "timely" in found and not isinstance(found["timely"], bool):
        problems.append("timely")
    if "deadline" in found and not isinstance(found["deadline"], str):
        problems.append("deadline")
    if problems or found["status"] not in STATUSES:
        raise ReceiptProblem(
            "malformed",
            "not a receipt: missing or odd fields: " + ", ".join(problems or ["status"]),
        )
    return found
