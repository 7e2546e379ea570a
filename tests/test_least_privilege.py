"""Least privilege: the runtime role cannot change a stored event; a database owner who rewrites a
stream and recomputes its hashes is caught by the head's signature (a key the database never sees).
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from urllib.parse import urlsplit

import asyncpg
import orjson
import pytest

from noticeflow import db, keyring, projections, repository
from noticeflow import eventstore as es
from noticeflow.domain.errors import InputError
from tests import helpers

WHEN = datetime(2026, 11, 29, tzinfo=UTC)

REWRITES = [
    "UPDATE events SET event_type = 'forged'",
    "DELETE FROM events",
    "TRUNCATE events",
    "ALTER TABLE events DISABLE TRIGGER events_append_only",
    "ALTER TABLE events DISABLE TRIGGER ALL",
    "DROP TRIGGER events_append_only ON events",
    "CREATE OR REPLACE FUNCTION events_are_append_only() RETURNS trigger LANGUAGE plpgsql"
    " AS $$ BEGIN RETURN NEW; END $$",
    'ALTER TABLE events ALTER COLUMN data TYPE jsonb USING \'{"k": "forged"}\'::jsonb',
    "ALTER TABLE events RENAME TO events_old",
    "DROP TABLE events",
    "CREATE TABLE events_shadow (id int)",
    "CREATE SCHEMA shadow",
    "ALTER TABLE events OWNER TO CURRENT_USER",
    "DELETE FROM event_streams",
    # (A GRANT of what it lacks is only a warning: the UPDATE after it is still refused.)
    "GRANT UPDATE ON events TO CURRENT_USER; UPDATE events SET event_type = 'forged'",
    "SET ROLE nf_test_owner",
]


@asynccontextmanager
async def connected(url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(url)
    try:
        yield connection
    finally:
        await connection.close()


async def append(
    pool: asyncpg.Pool, stream: str, count: int, first: int = 0
) -> list[es.StoredEvent]:
    async with pool.acquire() as connection:
        return await es.append_events(
            connection,
            stream,
            [
                es.NewEvent(es.event_id(stream, str(i)), "happened", {"n": i}, WHEN)
                for i in range(first, first + count)
            ],
        )


async def rewrite(owner_url: str, stream: str, version: int, data: dict[str, object]) -> None:
    """What a database owner can do: rewrite one event, recompute every later hash and the head."""
    async with connected(owner_url) as connection, connection.transaction():
        await connection.execute("ALTER TABLE events DISABLE TRIGGER events_append_only")
        rows = await connection.fetch(
            "SELECT stream_version, event_id, event_type, schema_version, data, occurred_at"
            " FROM events WHERE stream_id = $1 ORDER BY stream_version",
            stream,
        )
        prev = es.GENESIS
        for row in rows:
            text = es.canonical(data) if row["stream_version"] == version else row["data"].encode()
            digest = es.event_hash(
                prev,
                stream_id=stream,
                version=row["stream_version"],
                event_id=uuid.UUID(str(row["event_id"])),
                event_type=row["event_type"],
                schema_version=row["schema_version"],
                data_text=es.canonical(orjson.loads(text)),
                occurred_at=row["occurred_at"],
            )
            await connection.execute(
                "UPDATE events SET data = $3::json, prev_hash = $4, hash = $5"
                " WHERE stream_id = $1 AND stream_version = $2",
                stream,
                row["stream_version"],
                text.decode(),
                prev,
                digest,
            )
            prev = digest
        await connection.execute(
            "UPDATE event_streams SET head_hash = $2 WHERE stream_id = $1", stream, prev
        )
        await connection.execute("ALTER TABLE events ENABLE TRIGGER events_append_only")


@pytest.fixture
def keys() -> Iterator[None]:
    """Tests here install other signing keys; the session's come back afterwards."""
    before = keyring.installed()
    yield
    keyring.install(before)


def with_signing(*signing: str) -> None:
    keyring.install(keyring.Keyring({**keyring.installed().keys, "signing": signing}))


# --- the runtime role -----------------------------------------------------------------------


@pytest.mark.parametrize("statement", REWRITES)
async def test_the_runtime_role_is_refused_every_rewrite_of_the_event_store(
    pool, database_url, statement
):
    await append(pool, "s1", 3)
    async with connected(database_url) as connection:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await connection.execute(statement)
    assert await pool.fetchval("SELECT count(*) FROM events") == 3
    assert await es.verify_stream(pool, "s1") is None


async def test_the_runtime_role_owns_nothing_and_has_only_what_it_needs(pool, database_url):
    me = await pool.fetchval("SELECT current_user")
    owned = await pool.fetchval(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND pg_get_userbyid(c.relowner) = current_user"
    )
    assert owned == 0
    privileges = {
        name: await pool.fetchval(
            "SELECT array_agg(p ORDER BY p) FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE',"
            " 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) p"
            " WHERE has_table_privilege(current_user, $1, p)",
            name,
        )
        for name in ("events", "event_streams", "schema_migrations", "rm_notices", "customers")
    }
    assert privileges == {
        "events": ["INSERT", "SELECT"],
        "event_streams": ["INSERT", "SELECT", "UPDATE"],
        "schema_migrations": ["SELECT"],
        "rm_notices": ["DELETE", "INSERT", "SELECT", "TRUNCATE", "UPDATE"],
        "customers": ["DELETE", "INSERT", "SELECT", "UPDATE"],
    }
    assert not await pool.fetchval("SELECT has_schema_privilege(current_user, 'public', 'CREATE')")
    assert await pool.fetchval("SELECT has_sequence_privilege('events_position_seq', 'USAGE')")
    assert not await pool.fetchval("SELECT has_sequence_privilege('events_position_seq', 'UPDATE')")
    assert not await pool.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = $1", me)


async def test_the_runtime_role_can_rebuild_the_read_models(pool):
    await append(pool, "notice-x", 1)
    assert await projections.rebuild(pool) >= 0


async def test_the_runtime_role_records_an_erasure_but_cannot_undo_one(pool, database_url):
    """`customer_erasures` says a customer was erased for good: the runtime role erases (INSERT)
    and reads it, and can never take an entry back (DELETE, UPDATE, TRUNCATE)."""
    await repository.upsert_customers(pool, helpers.customers())
    erased = await repository.erase_customer(pool, "initech")  # as the runtime role
    assert erased["already"] is False
    assert await repository.erased_customers(pool) == {
        "initech": "was erased for good and cannot be imported again"
    }
    for statement in (
        "DELETE FROM customer_erasures",
        "DELETE FROM customer_erasures WHERE customer_id = 'initech'",
        "UPDATE customer_erasures SET customer_id = 'someone-else'",
        "TRUNCATE customer_erasures",
    ):
        async with connected(database_url) as connection:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await connection.execute(statement)
    await pool.execute("INSERT INTO customer_erasures (customer_id) VALUES ('globex')")
    assert await pool.fetchval(
        "SELECT array_agg(customer_id ORDER BY customer_id) FROM customer_erasures"
    ) == ["globex", "initech"]
    assert await pool.fetchval(
        "SELECT array_agg(p ORDER BY p) FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE',"
        " 'TRUNCATE', 'REFERENCES', 'TRIGGER']) p"
        " WHERE has_table_privilege(current_user, 'customer_erasures', p)"
    ) == ["INSERT", "SELECT"]
    assert (await repository.erase_customer(pool, "initech"))["already"] is True


async def test_the_runtime_role_does_not_migrate_and_says_who_should(
    postgres_server, test_roles, database_url
):
    assert await db.upgrade(database_url) == []  # up to date: nothing to do, no DDL tried
    name = f"t_{uuid.uuid4().hex[:12]}"
    async with connected(postgres_server) as admin:
        await admin.execute(f"CREATE DATABASE {name}")
    fresh = db.with_role(postgres_server, test_roles, database=name)
    with pytest.raises(InputError, match="NOTICEFLOW_OWNER_DATABASE_URL"):
        await db.upgrade(fresh)


async def test_a_runtime_role_that_could_undo_its_limits_is_refused(
    postgres_server, owner_database_url
):
    for role, why in (("postgres", "superuser"), ("nf_test_owner", "running the migrations")):
        with pytest.raises(InputError, match=why):
            await db.upgrade(owner_database_url, runtime_role=role)


async def test_a_process_knows_when_it_runs_as_the_owner(
    pool, owner_database_url, postgres_server, database_url
):
    assert await db.runs_as_owner(pool) is False  # the runtime role: no warning at start
    name = urlsplit(database_url).path.lstrip("/")
    member = "nf_test_owner_member"  # a role with the owner's privileges is the owner too
    async with connected(postgres_server) as admin:
        if not await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", member):
            await admin.execute(f"CREATE ROLE {member} LOGIN IN ROLE nf_test_owner")
    for url in (
        owner_database_url,
        db.with_role(postgres_server, "postgres", database=name),  # a superuser
        db.with_role(postgres_server, member, database=name),
    ):
        async with connected(url) as connection:
            assert await db.runs_as_owner(connection) is True, db.url_user(url)
    assert db.OWNER_WARNING.startswith("connected as the owner of the event store: ")
    assert "deploy/postgres-roles.sql" in db.OWNER_WARNING
    assert "NOTICEFLOW_OWNER_DATABASE_URL" in db.OWNER_WARNING


async def test_an_old_data_dir_owned_by_the_superuser_is_adopted(postgres_server):
    """`noticeflow up` before the roles: everything belonged to the superuser."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    async with connected(postgres_server) as admin:
        await admin.execute(f"CREATE DATABASE {name}")
    superuser = db.with_role(postgres_server, "postgres", database=name)
    await db.upgrade(superuser)
    owner_password, runtime_password = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    for _ in range(2):  # idempotent: a second start changes nothing
        owner_url, runtime_url = await db.provision_roles(
            superuser, owner_password, runtime_password
        )
        await db.upgrade(owner_url, runtime_role=db.RUNTIME_ROLE)
    async with connected(superuser) as admin:
        strangers = await admin.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND pg_get_userbyid(c.relowner) <> $1"
            " UNION ALL SELECT p.proname FROM pg_proc p JOIN pg_namespace n"
            " ON n.oid = p.pronamespace WHERE n.nspname = 'public'"
            " AND pg_get_userbyid(p.proowner) <> $1",
            db.OWNER_ROLE,
        )
    assert strangers == []
    assert db.url_user(runtime_url) == db.RUNTIME_ROLE
    runtime = await db.create_pool(runtime_url, max_size=1)
    try:
        await append(runtime, "s1", 2)
        async with runtime.acquire() as connection:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await connection.execute("DELETE FROM events")
    finally:
        await runtime.close()
    async with connected(owner_url) as owner:  # the owner can still migrate later
        await owner.execute("CREATE TABLE later_migration (id int)")


# --- signed heads ---------------------------------------------------------------------------


async def test_every_append_signs_the_head(pool):
    stored = await append(pool, "s1", 3)
    head = await es.stream_head(pool, "s1")
    assert head is not None and head.signature is not None
    assert head.head_hash == stored[-1].hash and head.version == 3
    assert head.key_id in es.signing_public_keys()


async def test_an_owner_who_rewrites_a_stream_and_recomputes_its_hashes_is_caught(
    pool, owner_database_url
):
    await append(pool, "notice-a", 4)
    await append(pool, "notice-b", 2)
    await rewrite(owner_database_url, "notice-a", 2, {"n": 99})
    assert (await pool.fetchval("SELECT data FROM events WHERE stream_version = 2 AND"
                                " stream_id = 'notice-a'")) == '{"n":99}'  # fmt: skip
    events = [e.as_json() for e in await es.read_stream(pool, "notice-a", upcast=False)]
    assert es.verify_chain(events) is None  # the chain alone no longer shows it
    problem = await es.verify_stream(pool, "notice-a")
    assert problem is not None and problem.stream_id == "notice-a"
    assert "head signature does not match" in str(problem)
    assert await es.verify_stream(pool, "notice-b") is None


async def test_an_owner_who_also_strips_the_signature_leaves_an_unsigned_head(
    pool, owner_database_url
):
    await append(pool, "s1", 2)
    async with connected(owner_database_url) as owner:
        await owner.execute("UPDATE event_streams SET head_signature = NULL, head_key_id = NULL")
    head = await es.stream_head(pool, "s1")
    assert head is not None and head.signature is None  # evidence.py refuses it by default
    await append(pool, "s1", 1, first=2)  # the product's next append does not vouch for it
    head = await es.stream_head(pool, "s1")
    assert head is not None and head.version == 3 and head.signature is None


@pytest.mark.parametrize("strip", [False, True])
async def test_a_rewrite_is_not_laundered_by_the_next_append(pool, owner_database_url, strip):
    """The owner rewrites a stream and recomputes its hashes (and may strip the signature); the
    product then appends to it as usual. The new head must not be signed: the rewrite stays
    caught, whatever is appended after it."""
    await append(pool, "notice-a", 3)
    await rewrite(owner_database_url, "notice-a", 2, {"n": 99})
    if strip:
        async with connected(owner_database_url) as owner:
            await owner.execute(
                "UPDATE event_streams SET head_signature = NULL, head_key_id = NULL"
            )
    await append(pool, "notice-a", 2, first=3)
    head = await es.stream_head(pool, "notice-a")
    # Unsigned, so `evidence verify` refuses it (unless told --allow-unsigned, with a warning).
    assert head is not None and head.version == 5 and head.signature is None


async def test_a_head_signed_under_a_previous_key_verifies_after_rotation(pool, keys):
    old, new = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    with_signing(old)
    await append(pool, "s1", 2)
    with_signing(new, old)  # rotated: the old key is a previous signing key
    assert await es.verify_stream(pool, "s1") is None
    await append(pool, "s2", 1)
    head = await es.stream_head(pool, "s2")
    assert head is not None and head.key_id == next(iter(es.signing_public_keys()))
    with_signing(new)  # the old key dropped: its heads no longer verify
    problem = await es.verify_stream(pool, "s1")
    assert problem is not None and "unknown key" in str(problem)


async def as_if_appended_before_signing(owner_database_url: str) -> None:
    """Every event so far recorded before heads began to be signed (migration 015), heads
    unsigned: a database upgraded from before signing."""
    async with connected(owner_database_url) as owner:
        await owner.execute("UPDATE event_streams SET head_signature = NULL, head_key_id = NULL")
        await owner.execute(
            "UPDATE schema_migrations SET applied_at = now() + interval '1 minute'"
            " WHERE version = $1",
            es.SIGNING_MIGRATION,
        )


async def test_old_unsigned_heads_are_signed_once_their_chains_check_out(
    pool, owner_database_url, keys
):
    await append(pool, "good", 2)
    await append(pool, "bad", 2)
    await as_if_appended_before_signing(owner_database_url)
    async with connected(owner_database_url) as owner:
        await owner.execute("ALTER TABLE events DISABLE TRIGGER events_append_only")
        await owner.execute(
            "UPDATE events SET data = '{\"n\": 7}' WHERE stream_id = 'bad' AND stream_version = 1"
        )
    signed, refused = await es.sign_unsigned_heads(pool)
    assert signed == 1 and [p.stream_id for p in refused] == ["bad"]
    good = await es.stream_head(pool, "good")
    assert good is not None and good.signature is not None
    assert await es.verify_stream(pool, "good") is None


async def test_the_first_append_to_an_old_stream_signs_it(pool, owner_database_url, keys):
    await append(pool, "old", 2)
    await as_if_appended_before_signing(owner_database_url)
    await append(pool, "old", 1, first=2)
    head = await es.stream_head(pool, "old")
    assert head is not None and head.version == 3 and head.signature is not None
    assert await es.verify_stream(pool, "old") is None


async def test_a_stripped_or_rewritten_stream_of_today_is_never_signed_after(
    pool, owner_database_url, keys
):
    """What the hostile tester did: the owner rewrites a stream appended since signing began (or
    strips its signature), the product appends as usual, then someone runs `evidence sign-heads`:
    the stream stays unsigned and the command refuses it."""
    await append(pool, "rewritten", 3)
    await append(pool, "stripped", 2)
    await rewrite(owner_database_url, "rewritten", 2, {"n": 99})
    async with connected(owner_database_url) as owner:
        await owner.execute(
            "UPDATE event_streams SET head_signature = NULL, head_key_id = NULL"
            " WHERE stream_id = 'stripped'"
        )
    await append(pool, "rewritten", 1, first=3)
    await append(pool, "stripped", 1, first=2)
    signed, refused = await es.sign_unsigned_heads(pool)
    assert signed == 0
    assert sorted(p.stream_id for p in refused) == ["rewritten", "stripped"]
    assert all("never signed by this command" in str(p) for p in refused)
    for stream in ("rewritten", "stripped"):
        head = await es.stream_head(pool, stream)
        assert head is not None and head.signature is None


async def test_up_makes_both_roles_and_hands_out_the_runtime_url(postgres_server, tmp_path):
    """What `noticeflow up` does on its embedded server (an old data dir: superuser-owned)."""
    from noticeflow import stack

    name = f"t_{uuid.uuid4().hex[:12]}"
    async with connected(postgres_server) as admin:
        await admin.execute(f"CREATE DATABASE {name}")
    superuser = db.with_role(postgres_server, "postgres", database=name)
    await db.upgrade(superuser)
    old = await db.create_pool(superuser, max_size=1)
    try:
        await append(old, "legacy", 2)  # appended as before heads were signed
        await old.execute("UPDATE event_streams SET head_signature = NULL, head_key_id = NULL")
    finally:
        await old.close()
    first = await stack.prepare_database(superuser, tmp_path, embedded=True)
    again = await stack.prepare_database(superuser, tmp_path, embedded=True)
    assert first == again and db.url_user(first) == db.RUNTIME_ROLE
    roles = tmp_path / stack.ROLES_FILE
    assert roles.stat().st_mode & 0o777 == 0o600
    assert db.url_user(json.loads(roles.read_text())["owner_database_url"]) == (db.OWNER_ROLE)
    runtime = await db.create_pool(first, max_size=1)
    try:
        # Never signed behind anyone's back (`noticeflow evidence sign-heads` is a person's act).
        head = await es.stream_head(runtime, "legacy")
        assert head is not None and head.signature is None
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await runtime.execute("TRUNCATE events")
    finally:
        await runtime.close()
