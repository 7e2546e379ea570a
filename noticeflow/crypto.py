"""Crypto-shredding of personal data: one root key per customer, in its own table.

Contact addresses, names and free text are stored sealed with the customer's key (in the records and
in the events). Erasing a customer deletes its key: every sealed value, including those inside
hash-chained events, becomes unreadable (``[erased]``) while the chain (which covers the
ciphertext) still verifies.

Each customer's root key gives separate subkeys (HKDF-SHA256) for separate jobs:

* ``enc``   — AES-256-GCM sealing (:meth:`CustomerKey.seal`); the associated data binds the
  customer, and the place the value belongs to (``"deliveries.email"``,
  ``"objection_received.reason"``), so a sealed value cannot be moved to another column or event;
* ``nonce`` — the deterministic nonce (an HMAC of place and plaintext): a retried activity writes
  byte-identical events and stays idempotent;
* ``index`` — blind indexes of addresses (:meth:`CustomerKey.index`);
* ``ids``   — identifiers derived from personal data, such as Message-IDs and objection content
  keys (:meth:`CustomerKey.ident`): without the key, a short guess list recovers nothing.

Values sealed before these subkeys (prefix ``enc1:``, the root key itself, associated data the
customer id only) still open.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterable

import asyncpg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

LEGACY_PREFIX = "enc1:"
PREFIX = "enc2:"
PREFIXES = (PREFIX, LEGACY_PREFIX)
ERASED = "[erased]"


def _subkey(root: bytes, job: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"noticeflow/customer-key/v2",
        info=job.encode(),
    ).derive(root)  # fmt: skip


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIXES)


class CustomerKey:
    """One customer's keys. Never logged, never sent to Temporal."""

    __slots__ = ("_enc", "_ids", "_index", "_nonce", "_root", "customer_id")

    def __init__(self, customer_id: str, root: bytes) -> None:
        self.customer_id = customer_id
        self._root = root
        self._enc = _subkey(root, "enc")
        self._nonce = _subkey(root, "nonce")
        self._index = _subkey(root, "index")
        self._ids = _subkey(root, "ids")

    def __repr__(self) -> str:
        return f"CustomerKey({self.customer_id!r})"

    def _aad(self, field: str) -> bytes:
        return b"noticeflow/v2\x1f" + self.customer_id.encode() + b"\x1f" + field.encode()

    def seal(self, field: str, plaintext: str) -> str:
        """``plaintext`` sealed for one place (``field``): the same input gives the same output."""
        aad = self._aad(field)
        nonce = hmac.new(self._nonce, aad + b"\x1e" + plaintext.encode(), hashlib.sha256).digest()
        sealed = AESGCM(self._enc).encrypt(nonce[:12], plaintext.encode(), aad)
        return PREFIX + base64.b64encode(nonce[:12] + sealed).decode()

    def unseal(self, field: str, value: str) -> str:
        """The plaintext; ``[erased]`` for a value sealed under a key deleted since; a value that
        is not sealed comes back as it is."""
        if not isinstance(value, str):
            return value
        if value.startswith(PREFIX):
            raw = base64.b64decode(value[len(PREFIX) :])
            try:
                return AESGCM(self._enc).decrypt(raw[:12], raw[12:], self._aad(field)).decode()
            except InvalidTag:
                return ERASED
        if value.startswith(LEGACY_PREFIX):
            raw = base64.b64decode(value[len(LEGACY_PREFIX) :])
            try:
                return (
                    AESGCM(self._root)
                    .decrypt(raw[:12], raw[12:], self.customer_id.encode())
                    .decode()
                )
            except InvalidTag:
                return ERASED
        return value

    def index(self, value: str) -> str:
        """A stable reference to a value (e.g. a contact address): nothing without the key."""
        return hmac.new(self._index, value.lower().encode(), hashlib.sha256).hexdigest()[:32]

    def ident(self, *parts: str) -> str:
        """A keyed identifier (64 hex) derived from ``parts``: Message-IDs, content keys."""
        joined = "\x1f".join(parts).encode()
        return hmac.new(self._ids, joined, hashlib.sha256).hexdigest()


def open_sealed(key: CustomerKey | None, field: str, value: str) -> str:
    """Like :meth:`CustomerKey.unseal`; ``[erased]`` for a sealed value when there is no key."""
    if not is_sealed(value):
        return value
    if key is None:
        return ERASED
    return key.unseal(field, value)


# --- transitional: the call sites' old signatures (place unbound, "*"); being replaced -------


def _as_key(key: CustomerKey | bytes, customer_id: str) -> CustomerKey:
    return key if isinstance(key, CustomerKey) else CustomerKey(customer_id, key)


def seal(key: CustomerKey | bytes, customer_id: str, plaintext: str) -> str:
    return _as_key(key, customer_id).seal("*", plaintext)


def unseal(key: CustomerKey | bytes | None, customer_id: str, value: str) -> str:
    if not is_sealed(value):
        return value
    if key is None:
        return ERASED
    return _as_key(key, customer_id).unseal("*", value)


def blind_index(key: CustomerKey | bytes, value: str) -> str:
    return _as_key(key, "").index(value)


# --- the key table ---------------------------------------------------------------------------


async def ensure_keys(
    connection: asyncpg.Connection | asyncpg.Pool, customer_ids: Iterable[str]
) -> dict[str, CustomerKey]:
    ids = sorted(set(customer_ids))
    await connection.executemany(
        "INSERT INTO customer_keys (customer_id, key) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        [(customer_id, os.urandom(32)) for customer_id in ids],
    )
    return await load_keys(connection, ids)


async def load_keys(
    connection: asyncpg.Connection | asyncpg.Pool, customer_ids: Iterable[str]
) -> dict[str, CustomerKey]:
    rows = await connection.fetch(
        "SELECT customer_id, key FROM customer_keys WHERE customer_id = ANY($1::text[])",
        list(set(customer_ids)),
    )
    return {row["customer_id"]: CustomerKey(row["customer_id"], bytes(row["key"])) for row in rows}
