"""Local dashboard accounts: a name, a role and an argon2id password hash (`noticeflow users add`),
and the dashboard's server-side sessions (``web_sessions``).

Roles nest: a ``viewer`` reads; an ``operator`` also acts on customers' behalf and on cases
(object, opt in / revoke, resolve, exclude, resend); an ``approver`` also approves, postpones and
cancels notices. Four eyes still applies: nobody approves a notice they wrote.

A session is a row: the signed cookie carries only its random id. Signing out, disabling or
removing an account revokes the rows, so a copied cookie is worth nothing afterwards; a local
account's role and state are read again with every request.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from noticeflow.domain.errors import InputError
from noticeflow.domain.text import SLUG_PATTERN

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
MIN_PASSWORD = 12
SESSION_LIFETIME = timedelta(hours=12)  # absolute: from sign-in, however active the session
# Names the product itself writes as `by` (the bearer token, a customer's own link, the CLI's
# default, the system and Temporal, the demo): no person may sign in as one of them.
RESERVED_NAMES = frozenset({"api-token", "customer", "ops", "system", "temporal", "demo"})


class Role(StrEnum):
    viewer = "viewer"
    operator = "operator"
    approver = "approver"

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


# What each ops action needs (the dashboard and the JSON API check the same table).
ACTION_ROLES: dict[str, Role] = {
    "object": Role.operator,
    "request_changes": Role.operator,
    "opt_in": Role.operator,
    "revoke_opt_in": Role.operator,
    "resolve_objection": Role.operator,
    "exclude": Role.operator,
    "resend": Role.operator,
    "approve": Role.approver,
    "postpone": Role.approver,
    "cancel": Role.approver,
}


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    via: str  # "password", "oidc" or "token"


def check_name(name: str) -> str:
    """A user name a person may have: a slug, not one of the names the product writes itself."""
    if not re.fullmatch(SLUG_PATTERN, name or ""):
        raise InputError(
            f"user name {name[:40]!r} is not valid: use 1-63 of a-z, 0-9, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    if name in RESERVED_NAMES:
        raise InputError(
            f"user name {name!r} is reserved (the product itself acts as "
            f"{', '.join(sorted(RESERVED_NAMES))}); choose another"
        )
    return name


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InputError(f"the password must have at least {MIN_PASSWORD} characters")
    if password.strip() != password:
        raise InputError("the password must not start or end with white space")


async def add_user(
    pool: asyncpg.Pool, name: str, role: Role, password: str, *, replace: bool = False
) -> bool:
    """Create an account (or, with ``replace``, reset its role and password). True if created."""
    check_name(name)
    check_password(password)
    if await pool.fetchval(
        "SELECT EXISTS (SELECT 1 FROM web_sessions WHERE user_name = $1 AND via = 'oidc')", name
    ):
        raise InputError(
            f"{name!r} is the name of an OpenID Connect user who has signed in here; a local"
            " account of that name would be taken for them: choose another name"
        )
    digest = _hasher.hash(password)
    if replace:
        created = await pool.fetchval(
            "INSERT INTO web_users (name, role, password_hash) VALUES ($1, $2, $3)"
            " ON CONFLICT (name) DO UPDATE SET role = EXCLUDED.role,"
            " password_hash = EXCLUDED.password_hash, disabled = false, updated_at = now()"
            " RETURNING (xmax = 0)",
            name,
            role.value,
            digest,
        )
        return bool(created)
    status = await pool.execute(
        "INSERT INTO web_users (name, role, password_hash) VALUES ($1, $2, $3)"
        " ON CONFLICT DO NOTHING",
        name,
        role.value,
        digest,
    )
    if not status.endswith(" 1"):
        raise InputError(f"user {name!r} exists already; use --replace to reset it")
    return True


async def authenticate(pool: asyncpg.Pool, name: str, password: str) -> User | None:
    """The user if the password matches (the hash is upgraded when parameters changed)."""
    row = await pool.fetchrow(
        "SELECT name, role, password_hash FROM web_users WHERE name = $1 AND NOT disabled", name
    )
    if row is None:
        # Same work as a real check, so a missing name cannot be told by the time it takes.
        with contextlib.suppress(VerificationError, InvalidHashError):
            _hasher.verify(_DUMMY, password)
        return None
    try:
        _hasher.verify(row["password_hash"], password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if _hasher.check_needs_rehash(row["password_hash"]):
        await pool.execute(
            "UPDATE web_users SET password_hash = $2, updated_at = now() WHERE name = $1",
            name,
            _hasher.hash(password),
        )
    return User(row["name"], Role(row["role"]), "password")


async def list_users(pool: asyncpg.Pool) -> list[dict[str, object]]:
    rows = await pool.fetch(
        "SELECT u.name, u.role, u.created_at, u.disabled,"
        " (SELECT count(*) FROM web_sessions s WHERE s.user_name = u.name AND s.via = 'password'"
        "  AND s.revoked_at IS NULL AND s.expires_at > now()) AS sessions"
        " FROM web_users u ORDER BY u.name"
    )
    return [dict(row) for row in rows]


async def disable_user(pool: asyncpg.Pool, name: str) -> int:
    """Disable a local account (it can no longer sign in) and end its sessions; how many."""
    async with pool.acquire() as connection, connection.transaction():
        found = await connection.fetchval(
            "UPDATE web_users SET disabled = true, updated_at = now() WHERE name = $1"
            " RETURNING name",
            name,
        )
        if found is None:
            raise InputError(f"no local account {name[:64]!r} (see `noticeflow users list`)")
        return await _revoke_all(connection, name)


async def remove_user(pool: asyncpg.Pool, name: str) -> tuple[bool, int]:
    """Remove a local account and end every session of that name (an OpenID Connect user's too:
    offboarding at the identity provider does not end a session already open here). Returns
    (whether an account was removed, sessions ended); an unknown name is an error."""
    async with pool.acquire() as connection, connection.transaction():
        removed = await connection.fetchval(
            "DELETE FROM web_users WHERE name = $1 RETURNING name", name
        )
        ended = await _revoke_all(connection, name)
        known = removed is not None or await connection.fetchval(
            "SELECT EXISTS (SELECT 1 FROM web_sessions WHERE user_name = $1)", name
        )
        if not known:
            raise InputError(f"no user {name[:64]!r} (see `noticeflow users list`)")
        return removed is not None, ended


async def revoke_sessions(pool: asyncpg.Pool, name: str) -> int:
    """End every open session of ``name``; how many there were."""
    async with pool.acquire() as connection:
        return await _revoke_all(connection, name)


async def _revoke_all(connection: asyncpg.Connection, name: str) -> int:
    status = await connection.execute(
        "UPDATE web_sessions SET revoked_at = now() WHERE user_name = $1 AND revoked_at IS NULL"
        " AND expires_at > now()",
        name,
    )
    return int(status.rsplit(" ", 1)[1])


# --- sessions ------------------------------------------------------------------------------------


async def create_session(pool: asyncpg.Pool, user: User) -> str:
    """A new session for ``user``; its id goes in the signed cookie, nothing else does."""
    sid = secrets.token_urlsafe(32)
    await pool.execute(
        "INSERT INTO web_sessions (sid, user_name, role, via, expires_at)"
        " VALUES ($1, $2, $3, $4, now() + $5::interval)",
        sid,
        user.name,
        user.role.value,
        user.via,
        SESSION_LIFETIME,
    )
    # Sign-ins are rare: a good moment to forget sessions long over.
    await pool.execute("DELETE FROM web_sessions WHERE expires_at < now() - interval '30 days'")
    return sid


# One query per request. A local account's role and state are read again (a role change, a
# disabled or removed account take effect at once); an OpenID Connect user keeps the role the
# identity provider gave at sign-in, and loses the session if a local account of the same name
# appears (names never stand for two people). last_seen_at is written at most once a minute.
_LOAD_SESSION = """
WITH seen AS (
    UPDATE web_sessions SET last_seen_at = now()
    WHERE sid = $1 AND revoked_at IS NULL AND expires_at > now()
      AND last_seen_at < now() - interval '1 minute'
)
SELECT s.user_name, s.role, s.via, u.name AS account, u.role AS account_role, u.disabled
FROM web_sessions s LEFT JOIN web_users u ON u.name = s.user_name
WHERE s.sid = $1 AND s.revoked_at IS NULL AND s.expires_at > now()
"""


def is_sid(value: object) -> bool:
    """What :func:`create_session` makes (anything else is not looked up)."""
    return isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_-]{43}", value) is not None


async def load_session(pool: asyncpg.Pool, sid: object) -> User | None:
    """The session's user, or None if it is unknown, revoked, expired, or its account is gone."""
    if not is_sid(sid):
        return None
    row = await pool.fetchrow(_LOAD_SESSION, sid)
    if row is None:
        return None
    if row["via"] == "password":
        if row["account"] is None or row["disabled"]:
            return None
        return User(row["user_name"], Role(row["account_role"]), "password")
    if row["account"] is not None:  # a local account of that name: not this person
        return None
    return User(row["user_name"], Role(row["role"]), row["via"])


async def revoke_session(pool: asyncpg.Pool, sid: object) -> None:
    if is_sid(sid):
        await pool.execute(
            "UPDATE web_sessions SET revoked_at = now() WHERE sid = $1 AND revoked_at IS NULL",
            sid,
        )


async def is_local_account(pool: asyncpg.Pool, name: str) -> bool:
    return bool(
        await pool.fetchval("SELECT EXISTS (SELECT 1 FROM web_users WHERE name = $1)", name)
    )


_DUMMY = _hasher.hash("not a password of anyone's")
