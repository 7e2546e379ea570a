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

A field names the place a datum was sealed for: ``"table.column"`` for records, ``"<event
type>.<field>"`` for events (:class:`Field`). A value copied verbatim by SQL (the audience snapshot
copies ``customers.name`` into ``recipients.name`` and ``customer_contacts.email`` into
``recipient_contacts.email``) keeps the place it was sealed for: it is the same datum.

The root keys are stored wrapped (AES-GCM) by a key-encryption key (KEK) from the environment,
never in clear (:class:`KeyWrapper`, :class:`LocalKeyWrapper`; ``NOTICEFLOW_KEY_ENCRYPTION_KEY``
wraps, it and ``NOTICEFLOW_PREVIOUS_KEY_ENCRYPTION_KEYS`` unwrap). Rows written before wrapping
(``key`` in clear) are wrapped the first time they are loaded, or by ``noticeflow keys rewrap``
(which also moves every key to the current KEK after a rotation).

An erased customer (``customer_erasures``) never gets a key again: its old ciphertext reads
``[erased]`` for good.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias

import asyncpg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from noticeflow import keyring
from noticeflow.domain.errors import InputError

LEGACY_PREFIX = "enc1:"
PREFIX = "enc2:"
PREFIXES = (PREFIX, LEGACY_PREFIX)
ERASED = "[erased]"


class Field:
    """The places personal data is sealed for (the associated data of :meth:`CustomerKey.seal`)."""

    # records: "table.column" (a snapshot copy keeps its source's place: the same datum)
    CUSTOMER_NAME = "customers.name"  # also recipients.name (copied by the audience snapshot)
    CONTACT_EMAIL = "customer_contacts.email"  # also recipient_contacts.email (copied)
    DELIVERY_EMAIL = "deliveries.email"
    DELIVERY_SMTP_TEXT = "deliveries.smtp_text"  # a reply's text (events: "<type>.smtp_text")
    INTAKE_PAYLOAD = "intake.payload"
    INTAKE_MAIL_DUE = "intake.mail_due"
    OBJECTION_BY = "objections.objected_by"
    OBJECTION_REASON = "objections.reason"
    RESOLVED_BY = "objections.resolved_by"
    RESOLUTION_NOTE = "objections.resolution_note"
    EXCLUDED_BY = "recipients.excluded_by"
    EXCLUDED_REASON = "recipients.excluded_reason"

    @staticmethod
    def event(event_type: str, name: str) -> str:
        """An event's field: ``"objection_received.reason"``."""
        return f"{event_type}.{name}"


_SALT = b"noticeflow/customer-key/v2"


def _subkey(root: bytes, job: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=job.encode()).derive(root)


def _subkeys(root: bytes, *jobs: str) -> list[bytes]:
    """:func:`_subkey` for each job, the HKDF extract step done once (RFC 5869: for 32 bytes the
    expand step is one HMAC of ``info || 0x01`` under the extracted key); byte for byte the same
    keys, at a fraction of the cost (a sending worker builds one CustomerKey per customer)."""
    prk = hmac.new(_SALT, root, hashlib.sha256).digest()
    return [hmac.new(prk, job.encode() + b"\x01", hashlib.sha256).digest() for job in jobs]


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIXES)


class CustomerKey:
    """One customer's keys. Never logged, never sent to Temporal."""

    __slots__ = ("_enc", "_ids", "_index", "_nonce", "_root", "customer_id")

    def __init__(self, customer_id: str, root: bytes) -> None:
        self.customer_id = customer_id
        self._root = root
        self._enc, self._nonce, self._index, self._ids = _subkeys(
            root, "enc", "nonce", "index", "ids"
        )

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

    def legacy_index(self, value: str) -> str:
        """The blind index as written before the subkeys (an HMAC under the root key): only to
        recognise rows written then (ledger contact refs, objection content keys); nothing new
        is written with it."""
        keyed = b"index\x1f" + value.lower().encode()
        return hmac.new(self._root, keyed, hashlib.sha256).hexdigest()[:32]


def open_sealed(key: CustomerKey | None, field: str, value: str) -> str:
    """Like :meth:`CustomerKey.unseal`; ``[erased]`` for a sealed value when there is no key."""
    if not is_sealed(value):
        return value
    if key is None:
        return ERASED
    return key.unseal(field, value)


# --- key wrapping: the root keys are stored wrapped by a key-encryption key -------------------


class KeyUnavailable(InputError):
    """A stored customer key cannot be unwrapped with the keys this process has (one line)."""


class KeyWrapper(Protocol):
    """A KMS-shaped interface: wraps and unwraps customer root keys; never stores them."""

    @property
    def current_kek_id(self) -> str:
        """The id of the key-encryption key :meth:`wrap` uses now."""
        ...

    def wrap(self, customer_id: str, key: bytes) -> tuple[str, bytes]:
        """``(kek_id, blob)``: ``key`` wrapped for this customer under the current KEK."""
        ...

    def unwrap(self, customer_id: str, kek_id: str, blob: bytes) -> bytes:
        """The key; :class:`KeyUnavailable` when ``kek_id`` is unknown or the blob does not open."""
        ...


KEK_SETTINGS = "NOTICEFLOW_KEY_ENCRYPTION_KEY (current) or NOTICEFLOW_PREVIOUS_KEY_ENCRYPTION_KEYS"


def _wrap_aad(customer_id: str) -> bytes:
    return b"noticeflow/customer-key/wrap\x1f" + customer_id.encode()


@dataclass(frozen=True)
class LocalKeyWrapper:
    """AES-256-GCM under a KEK from the environment (``keyring`` purpose ``kek``, use ``wrap``):
    the current KEK wraps, every configured one unwraps. The associated data is the customer id,
    so a wrapped key moved to another customer's row does not open."""

    keks: tuple[bytes, ...]
    _by_id: dict[str, bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.keks:
            raise KeyUnavailable(f"no key-encryption key: set {KEK_SETTINGS}")
        object.__setattr__(self, "_by_id", {keyring.Keyring.key_id(k): k for k in self.keks})

    @classmethod
    def from_keyring(cls, ring: keyring.Keyring) -> LocalKeyWrapper:
        return cls(tuple(ring.material("kek", "wrap")))

    @property
    def current_kek_id(self) -> str:
        return keyring.Keyring.key_id(self.keks[0])

    @property
    def kek_ids(self) -> frozenset[str]:
        """The ids of every key-encryption key this wrapper can unwrap with."""
        return frozenset(self._by_id)

    def wrap(self, customer_id: str, key: bytes) -> tuple[str, bytes]:
        nonce = os.urandom(12)
        blob = nonce + AESGCM(self.keks[0]).encrypt(nonce, key, _wrap_aad(customer_id))
        return self.current_kek_id, blob

    def unwrap(self, customer_id: str, kek_id: str, blob: bytes) -> bytes:
        kek = self._by_id.get(kek_id)
        if kek is None:
            raise KeyUnavailable(
                f"the key of customer {customer_id!r} is wrapped by key-encryption key {kek_id},"
                f" which this process does not have: set the key it was wrapped with in"
                f" {KEK_SETTINGS}"
            )
        try:
            return AESGCM(kek).decrypt(blob[:12], blob[12:], _wrap_aad(customer_id))
        except (InvalidTag, ValueError):
            raise KeyUnavailable(
                f"the stored key of customer {customer_id!r} does not unwrap with"
                f" key-encryption key {kek_id}: the row was altered or belongs to another customer"
            ) from None


_default: tuple[keyring.Keyring, LocalKeyWrapper] | None = None


def default_wrapper() -> LocalKeyWrapper:
    """The local wrapper for the process's installed keys (built once per keyring)."""
    global _default
    if not keyring.has("kek"):
        raise KeyUnavailable(
            "no key-encryption key: set NOTICEFLOW_KEY_ENCRYPTION_KEY to a random secret"
            f" ({keyring.HOW_TO_MAKE})"
        )
    ring = keyring.installed()
    if _default is None or _default[0] is not ring:
        _default = (ring, LocalKeyWrapper.from_keyring(ring))
    return _default[1]


# --- the key table ---------------------------------------------------------------------------

Db: TypeAlias = asyncpg.Connection | asyncpg.Pool
# Erasure and key creation exclude each other (erase: exclusive; import: shared), so an import
# running while a customer is erased can never give it a new key.
ERASURE_LOCK = 7_346_013


async def erased_ids(connection: Db, customer_ids: Iterable[str]) -> set[str]:
    """Which of these customers were erased (for good)."""
    rows = await connection.fetch(
        "SELECT customer_id FROM customer_erasures WHERE customer_id = ANY($1::text[])",
        list(set(customer_ids)),
    )
    return {row["customer_id"] for row in rows}


async def ensure_keys(
    connection: Db, customer_ids: Iterable[str], wrapper: KeyWrapper | None = None
) -> dict[str, CustomerKey]:
    """Each customer's key, made (and stored wrapped) for those without one; never for an erased
    customer (absent from the result)."""
    if isinstance(connection, asyncpg.Pool) or not connection.is_in_transaction():
        async with _transaction(connection) as conn:
            return await ensure_keys(conn, customer_ids, wrapper)
    wrapper = wrapper or default_wrapper()
    ids = sorted(set(customer_ids))
    await connection.execute("SELECT pg_advisory_xact_lock_shared($1)", ERASURE_LOCK)
    keys = await load_keys(connection, ids, wrapper)
    missing = [customer_id for customer_id in ids if customer_id not in keys]
    if missing:
        wrapped = [wrapper.wrap(customer_id, os.urandom(32)) for customer_id in missing]
        await connection.execute(
            "INSERT INTO customer_keys (customer_id, wrapped, kek_id)"
            " SELECT u.customer_id, u.wrapped, u.kek_id"
            " FROM unnest($1::text[], $2::bytea[], $3::text[]) AS u(customer_id, wrapped, kek_id)"
            " WHERE NOT EXISTS (SELECT 1 FROM customer_erasures e"
            "   WHERE e.customer_id = u.customer_id)"
            " ON CONFLICT DO NOTHING",
            missing,
            [blob for _, blob in wrapped],
            [kek_id for kek_id, _ in wrapped],
        )
        keys |= await load_keys(connection, missing, wrapper)
    return keys


@contextlib.asynccontextmanager
async def _transaction(db: Db) -> AsyncIterator[asyncpg.Connection]:
    """A connection in a transaction, from a pool or a bare connection."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as connection, connection.transaction():
            yield connection
    else:
        async with db.transaction():
            yield db


async def load_keys(
    connection: Db, customer_ids: Iterable[str], wrapper: KeyWrapper | None = None
) -> dict[str, CustomerKey]:
    """The keys of those customers that have one (an erased customer has none). A key still
    stored in clear (written before wrapping) is wrapped now."""
    rows = await connection.fetch(
        "SELECT customer_id, key, wrapped, kek_id FROM customer_keys"
        " WHERE customer_id = ANY($1::text[])",
        list(set(customer_ids)),
    )
    if not rows:
        return {}
    wrapper = wrapper or default_wrapper()
    keys: dict[str, CustomerKey] = {}
    clear: list[tuple[str, bytes]] = []
    for row in rows:
        customer_id = row["customer_id"]
        if row["wrapped"] is not None:
            root = wrapper.unwrap(customer_id, row["kek_id"], bytes(row["wrapped"]))
        else:
            root = bytes(row["key"])
            clear.append((customer_id, root))
        keys[customer_id] = CustomerKey(customer_id, root)
    if clear:
        await _wrap_stored(connection, clear, wrapper)
    return keys


async def _wrap_stored(connection: Db, clear: list[tuple[str, bytes]], wrapper: KeyWrapper) -> int:
    """Replace keys stored in clear by their wrapped form (only where the clear key is still the
    one read: a concurrent change is left alone). Returns the rows changed."""
    wrapped = [wrapper.wrap(customer_id, root) for customer_id, root in clear]
    changed = await connection.fetchval(
        "WITH done AS (UPDATE customer_keys k SET wrapped = u.wrapped, kek_id = u.kek_id,"
        " key = NULL FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::text[])"
        "   AS u(customer_id, clear, wrapped, kek_id)"
        " WHERE k.customer_id = u.customer_id AND k.key = u.clear RETURNING 1)"
        " SELECT count(*) FROM done",
        [customer_id for customer_id, _ in clear],
        [root for _, root in clear],
        [blob for _, blob in wrapped],
        [kek_id for kek_id, _ in wrapped],
    )
    return int(changed)


async def rewrap_keys(
    pool: asyncpg.Pool, wrapper: KeyWrapper | None = None, batch: int = 1000
) -> dict[str, int]:
    """``noticeflow keys rewrap``: every key wrapped under the current KEK. Counts: ``wrapped``
    (stored in clear before), ``rewrapped`` (under an older KEK before), ``current`` (already
    fine), ``unavailable`` (under a KEK this process does not have: left as they are)."""
    wrapper = wrapper or default_wrapper()
    counts = {"wrapped": 0, "rewrapped": 0, "current": 0, "unavailable": 0}
    after = ""
    while True:
        rows = await pool.fetch(
            "SELECT customer_id, key, wrapped, kek_id FROM customer_keys WHERE customer_id > $1"
            " ORDER BY customer_id LIMIT $2",
            after,
            batch,
        )
        if not rows:
            return counts
        after = rows[-1]["customer_id"]
        clear: list[tuple[str, bytes]] = []
        moves: list[tuple[str, str, bytes, bytes]] = []  # customer, old kek id, new blob, old blob
        for row in rows:
            customer_id = row["customer_id"]
            if row["wrapped"] is None:
                clear.append((customer_id, bytes(row["key"])))
            elif row["kek_id"] == wrapper.current_kek_id:
                counts["current"] += 1
            else:
                try:
                    root = wrapper.unwrap(customer_id, row["kek_id"], bytes(row["wrapped"]))
                except KeyUnavailable:
                    counts["unavailable"] += 1
                    continue
                _, blob = wrapper.wrap(customer_id, root)
                moves.append((customer_id, row["kek_id"], blob, bytes(row["wrapped"])))
        if clear:
            counts["wrapped"] += await _wrap_stored(pool, clear, wrapper)
        if moves:
            counts["rewrapped"] += int(
                await pool.fetchval(
                    "WITH done AS (UPDATE customer_keys k SET wrapped = u.blob, kek_id = $5"
                    " FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bytea[])"
                    "   AS u(customer_id, old_kek, blob, old_blob)"
                    " WHERE k.customer_id = u.customer_id AND k.kek_id = u.old_kek"
                    "   AND k.wrapped = u.old_blob RETURNING 1) SELECT count(*) FROM done",
                    [m[0] for m in moves],
                    [m[1] for m in moves],
                    [m[2] for m in moves],
                    [m[3] for m in moves],
                    wrapper.current_kek_id,
                )
            )


async def unavailable_keks(db: Db, wrapper: LocalKeyWrapper | None = None) -> dict[str, int]:
    """Key-encryption key id -> how many stored customer keys it wraps, for every KEK that is none
    of this process's (current or previous): those customers' keys cannot be unwrapped here."""
    wrapper = wrapper or default_wrapper()
    rows = await db.fetch(
        "SELECT kek_id, count(*) AS keys FROM customer_keys WHERE kek_id IS NOT NULL"
        " GROUP BY kek_id ORDER BY kek_id"
    )
    return {row["kek_id"]: int(row["keys"]) for row in rows if row["kek_id"] not in wrapper.kek_ids}


async def require_keks(db: Db, wrapper: LocalKeyWrapper | None = None) -> None:
    """Refuse to start (:class:`KeyUnavailable`, one block) when any stored customer key is
    wrapped by a key-encryption key this process does not have: every action touching such a
    customer would fail again and again, so a worker must not start without it."""
    missing = await unavailable_keks(db, wrapper)
    if not missing:
        return
    total = sum(missing.values())
    named = ", ".join(
        f"{kek_id} ({count} customer key{'s' if count != 1 else ''})"
        for kek_id, count in missing.items()
    )
    raise KeyUnavailable(
        f"refusing to start: {total} customer key{'s are' if total != 1 else ' is'} wrapped by"
        f" key-encryption key{'s' if len(missing) != 1 else ''} this process does not have:"
        f" {named}. Set the key{'s' if len(missing) != 1 else ''} they were wrapped with in"
        f" {KEK_SETTINGS}, then run `noticeflow keys rewrap` to move them to the current one"
    )
