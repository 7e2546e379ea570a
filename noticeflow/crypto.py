"""Crypto-shredding of personal data: one AES-GCM key per customer, in its own table.

Contact addresses, names and free-text reasons are stored sealed with the customer's key (in the
records and in the events). Erasing a customer deletes its key: every sealed value, including those
inside hash-chained events, becomes unreadable while the chain (which covers the ciphertext) still
verifies. Sealing is deterministic (the nonce is derived from key, context and plaintext), so a
retried activity produces byte-identical events and stays idempotent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterable

import asyncpg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "enc1:"
ERASED = "[erased]"


def seal(key: bytes, customer_id: str, plaintext: str) -> str:
    nonce = hmac.new(
        key, b"nonce\x1f" + customer_id.encode() + b"\x1f" + plaintext.encode(), hashlib.sha256
    ).digest()[:12]
    sealed = AESGCM(key).encrypt(nonce, plaintext.encode(), customer_id.encode())
    return PREFIX + base64.b64encode(nonce + sealed).decode()


def unseal(key: bytes | None, customer_id: str, value: str) -> str:
    """The plaintext, or ``[erased]`` once the customer's key is gone."""
    if not isinstance(value, str) or not value.startswith(PREFIX):
        return value
    if key is None:
        return ERASED
    raw = base64.b64decode(value[len(PREFIX) :])
    try:
        return AESGCM(key).decrypt(raw[:12], raw[12:], customer_id.encode()).decode()
    except InvalidTag:  # sealed under a key deleted since: erased, then imported again
        return ERASED


def blind_index(key: bytes, value: str) -> str:
    """A stable reference to a value (e.g. a contact address) that reveals nothing without the key."""
    return hmac.new(key, b"index\x1f" + value.lower().encode(), hashlib.sha256).hexdigest()[:32]


async def ensure_keys(
    connection: asyncpg.Connection | asyncpg.Pool, customer_ids: Iterable[str]
) -> dict[str, bytes]:
    ids = sorted(set(customer_ids))
    await connection.executemany(
        "INSERT INTO customer_keys (customer_id, key) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        [(customer_id, os.urandom(32)) for customer_id in ids],
    )
    return await load_keys(connection, ids)


async def load_keys(
    connection: asyncpg.Connection | asyncpg.Pool, customer_ids: Iterable[str]
) -> dict[str, bytes]:
    rows = await connection.fetch(
        "SELECT customer_id, key FROM customer_keys WHERE customer_id = ANY($1::text[])",
        list(set(customer_ids)),
    )
    return {row["customer_id"]: bytes(row["key"]) for row in rows}
