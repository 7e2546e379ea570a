"""Local dashboard accounts: a name, a role and an argon2id password hash (`noticeflow users add`).

Roles nest: a ``viewer`` reads; an ``operator`` also acts on customers' behalf and on cases
(object, opt in / revoke, resolve, exclude, resend); an ``approver`` also approves, postpones and
cancels notices. Four eyes still applies: nobody approves a notice they wrote.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from enum import StrEnum

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from noticeflow.domain.errors import InputError
from noticeflow.domain.text import SLUG_PATTERN

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
MIN_PASSWORD = 12


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
    import re

    if not re.fullmatch(SLUG_PATTERN, name or "") or len(name) > 64:
        raise InputError(
            f"user name {name[:40]!r} is not valid: use 1-64 of a-z, 0-9, '.', '_' or '-'"
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


async def get_user(pool: asyncpg.Pool, name: str) -> User | None:
    row = await pool.fetchrow(
        "SELECT name, role FROM web_users WHERE name = $1 AND NOT disabled", name
    )
    return User(row["name"], Role(row["role"]), "password") if row else None


async def list_users(pool: asyncpg.Pool) -> list[dict[str, object]]:
    rows = await pool.fetch("SELECT name, role, created_at, disabled FROM web_users ORDER BY name")
    return [dict(row) for row in rows]


_DUMMY = _hasher.hash("not a password of anyone's")
