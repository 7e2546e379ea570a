"""Reply tokens: a keyed, unguessable id of (notice, customer), resolved by a lookup in PostgreSQL.

The token is the first 15 bytes of HMAC-SHA256 over the two ids, under a key derived from the link
key (``keyring`` purpose ``link``, use ``reply-address``), in lower-case base32: 24 characters.
It holds ids only and reveals nothing without the key. The mailer computes it with that one HMAC
per mail (:meth:`ReplyAddresses.address`) and writes nothing; the inbound endpoint writes the
tokens of every notice's frozen audience into ``reply_tokens`` (:func:`fill`), once per notice and
link key (a rotated key still resolves what it signed), and looks a token up there
(:func:`resolve`). A token not found makes it fill what is missing and look again, so a reply
that arrives before the endpoint's periodic fill is found all the same; a forged one costs one
indexed query.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

import asyncpg

from noticeflow import keyring
from noticeflow.domain.replies import ReplyAddress

USE = "reply-address"
FILL_BATCH = 10_000


def token_for(key: bytes, notice_id: str, customer_id: str) -> str:
    digest = hmac.new(key, f"{notice_id}\x1f{customer_id}".encode(), hashlib.sha256).digest()
    return base64.b32encode(digest[:15]).decode().lower()


@dataclass(frozen=True)
class ReplyAddresses:
    """The configured reply address and the current token key: what the mailer needs."""

    address: ReplyAddress
    key: bytes

    @classmethod
    def configured(
        cls, setting: str | None, ring: keyring.Keyring | None = None
    ) -> ReplyAddresses | None:
        """From ``NOTICEFLOW_REPLY_ADDRESS`` (None: replies are off)."""
        if not setting:
            return None
        ring = ring or keyring.installed()
        return cls(ReplyAddress.parse(setting), ring.current("link", USE))

    def for_recipient(self, notice_id: str, customer_id: str) -> str:
        """The Reply-To address of one customer's mails about one notice (one HMAC)."""
        return self.address.for_token(token_for(self.key, notice_id, customer_id))


@dataclass(frozen=True)
class Resolved:
    notice_id: str
    customer_id: str


async def resolve(
    pool: asyncpg.Pool, token: str, ring: keyring.Keyring | None = None
) -> Resolved | None:
    """The (notice, customer) a token names, or None (unknown or forged)."""
    row = await pool.fetchrow(
        "SELECT notice_id, customer_id FROM reply_tokens WHERE token = $1", token
    )
    if row is None:  # filled now, or by a concurrent filler this one waited for: look again
        await fill(pool, ring)
        row = await pool.fetchrow(
            "SELECT notice_id, customer_id FROM reply_tokens WHERE token = $1", token
        )
    return None if row is None else Resolved(row["notice_id"], row["customer_id"])


async def fill(pool: asyncpg.Pool, ring: keyring.Keyring | None = None) -> int:
    """Write the tokens of every notice whose audience is frozen and whose tokens under some
    current or previous link key are not written yet. Returns the tokens written."""
    ring = ring or keyring.installed()
    written = 0
    for key in ring.material("link", USE):
        key_id = keyring.Keyring.key_id(key)
        notices = await pool.fetch(
            "SELECT n.notice_id FROM notices n"
            " WHERE NOT EXISTS (SELECT 1 FROM reply_token_fills f"
            "   WHERE f.notice_id = n.notice_id AND f.key_id = $1)"
            " AND EXISTS (SELECT 1 FROM recipients r WHERE r.notice_id = n.notice_id)"
            " ORDER BY n.notice_id",
            key_id,
        )
        for notice in notices:
            written += await _fill_notice(pool, notice["notice_id"], key, key_id)
    return written


async def _fill_notice(pool: asyncpg.Pool, notice_id: str, key: bytes, key_id: str) -> int:
    async with pool.acquire() as connection, connection.transaction():
        # One filler per notice and key at a time; a second finds it done.
        await connection.execute(
            "SELECT pg_advisory_xact_lock(hashtext('reply-tokens/' || $1 || '/' || $2))",
            notice_id,
            key_id,
        )
        if await connection.fetchval(
            "SELECT 1 FROM reply_token_fills WHERE notice_id = $1 AND key_id = $2",
            notice_id,
            key_id,
        ):
            return 0
        total, after = 0, ""
        while True:
            ids = await connection.fetch(
                "SELECT customer_id FROM recipients WHERE notice_id = $1 AND customer_id > $2"
                " ORDER BY customer_id LIMIT $3",
                notice_id,
                after,
                FILL_BATCH,
            )
            if not ids:
                break
            customers = [row["customer_id"] for row in ids]
            after = customers[-1]
            await connection.execute(
                "INSERT INTO reply_tokens (token, notice_id, customer_id, key_id)"
                " SELECT t, $2, c, $3 FROM unnest($1::text[], $4::text[]) AS u(t, c)"
                " ON CONFLICT DO NOTHING",
                [token_for(key, notice_id, c) for c in customers],
                notice_id,
                key_id,
                customers,
            )
            total += len(customers)
        await connection.execute(
            "INSERT INTO reply_token_fills (notice_id, key_id, tokens) VALUES ($1, $2, $3)",
            notice_id,
            key_id,
            total,
        )
        return total
