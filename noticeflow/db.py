"""PostgreSQL access: the connection pool, versioned schema migrations and the two roles.

Least privilege (issue 10): the schema belongs to an **owner** role, which runs the migrations
(``NOTICEFLOW_OWNER_DATABASE_URL``); the worker, the web and the CLI connect as a **runtime** role
(``NOTICEFLOW_DATABASE_URL``) that owns nothing and may not create anything, and on the event
store may only INSERT and SELECT (plus move stream heads in ``event_streams``), and likewise on
``customer_erasures``, the record that a customer was erased for good. So the role the
product runs as cannot UPDATE, DELETE or TRUNCATE an event, disable or drop the append-only
trigger, replace its function or rewrite rows with ``ALTER TABLE ... USING``: each needs a
privilege it lacks or ownership it does not have. :func:`grant_runtime` sets the runtime role's
privileges after each migration run (idempotent); ``deploy/postgres-roles.sql`` is the same for a
managed PostgreSQL; :func:`provision_roles` is what ``noticeflow up`` does on its embedded server.
"""

from __future__ import annotations

from importlib import resources
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import asyncpg

from noticeflow.config import redact_url
from noticeflow.domain.errors import InputError

MIGRATIONS_PACKAGE = "noticeflow.migrations"
MIGRATION_LOCK = 7_346_001  # advisory lock id: one migrator at a time

OWNER_ROLE = "noticeflow_owner"  # the names `noticeflow up` gives its roles
RUNTIME_ROLE = "noticeflow_runtime"

# What the runtime role may do, table by table (every other table: full DML, no TRUNCATE).
APPEND_ONLY = {"events": "SELECT, INSERT"}
RESTRICTED = {
    **APPEND_ONLY,
    "event_streams": "SELECT, INSERT, UPDATE",  # heads move on append; never deleted
    "schema_migrations": "SELECT",
    # Who was erased for good (repository.erase_customer): recorded, read, never undone.
    "customer_erasures": "SELECT, INSERT",
}
DML = "SELECT, INSERT, UPDATE, DELETE"
READ_MODEL_PREFIX = "rm_"  # read models: rebuilt from events (projections.rebuild TRUNCATEs them)


DATABASE_URL = "NOTICEFLOW_DATABASE_URL"  # where each URL comes from, to name it when it is bad
OWNER_DATABASE_URL = "NOTICEFLOW_OWNER_DATABASE_URL"
# (not written user:password@host: every error line is scrubbed of what looks like a password)
URL_FORM = "postgresql://USER@HOST:PORT/DATABASE, with a password as USER:PASSWORD@"


def bad_url(url: str, setting: str, error: BaseException) -> InputError:
    """One readable line for a URL asyncpg cannot use (a port that is not a number, another
    scheme, an unknown sslmode...): which setting, why, and the URL with its password hidden."""
    reason = " ".join(str(error).split()) or type(error).__name__
    if reason.startswith("invalid literal for int()"):
        given = reason.rpartition(": ")[2].strip("'")
        reason = f"a port is not a number ({given})"
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    for secret in {password, unquote(password or "")} - {None, ""}:
        reason = reason.replace(str(secret), "***")
    return InputError(
        f"{setting} is not a usable PostgreSQL URL: {reason}; it is {redact_url(url)} (expected"
        f" {URL_FORM})"
    )


async def connect(database_url: str, setting: str = DATABASE_URL) -> asyncpg.Connection:
    """A connection, or an InputError naming ``setting`` when the URL itself is malformed."""
    try:
        return await asyncpg.connect(database_url)
    except (ValueError, OverflowError) as error:  # asyncpg's configuration errors are ValueErrors
        raise bad_url(database_url, setting, error) from None


class BoundedPool(asyncpg.Pool):
    """A pool whose every acquire (and so every ``pool.fetch``, ``pool.execute``...) waits at
    most ``acquire_timeout`` seconds for a connection, and whose release of it is bounded by the
    same (asyncpg applies an acquire's timeout to its release): with a database that hangs,
    nothing waits for ever for a connection another request holds."""

    def __init__(self, *args: Any, acquire_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.acquire_timeout = acquire_timeout

    def acquire(self, *, timeout: float | None = None) -> Any:
        return super().acquire(timeout=self.acquire_timeout if timeout is None else timeout)


async def create_pool(
    database_url: str,
    min_size: int = 1,
    max_size: int = 10,
    setting: str = DATABASE_URL,
    timeout: float | None = None,
) -> asyncpg.Pool:
    """A pool, or an InputError naming ``setting`` when the URL itself is malformed.

    ``timeout`` (seconds; the web's pool only, ``NOTICEFLOW_WEB_DB_TIMEOUT``) bounds everything:
    connecting, waiting for a free connection, and every statement (``command_timeout``); a
    database that does not answer then raises ``TimeoutError`` instead of holding the caller. The
    worker's pool has none: its long statements (an audience snapshot, a rebuild) must finish."""
    try:
        if timeout is None:
            pool = await asyncpg.create_pool(database_url, min_size=min_size, max_size=max_size)
        else:
            pool = await BoundedPool(
                database_url,
                min_size=min_size,
                max_size=max_size,
                max_queries=50000,
                max_inactive_connection_lifetime=300.0,
                loop=None,
                connection_class=asyncpg.Connection,
                record_class=asyncpg.Record,
                acquire_timeout=timeout,
                command_timeout=timeout,
                timeout=timeout,  # connecting
            )
    except (ValueError, OverflowError) as error:
        raise bad_url(database_url, setting, error) from None
    assert pool is not None
    return pool


OWNER_WARNING = (
    "connected as the owner of the event store: this role can rewrite stored events. Run the"
    " worker and the web as a separate runtime role that may only INSERT and SELECT on events"
    " (deploy/postgres-roles.sql), and migrations as the owner (NOTICEFLOW_OWNER_DATABASE_URL)"
)


async def runs_as_owner(db: asyncpg.Pool | asyncpg.Connection) -> bool:
    """Whether this connection's role could rewrite the event store: a superuser, or the owner
    of ``events`` (or a member with the owner's privileges). The runtime role is neither."""
    return bool(
        await db.fetchval(
            "SELECT r.rolsuper OR coalesce(pg_has_role(current_user, c.relowner, 'USAGE'), false)"
            " FROM pg_roles r LEFT JOIN pg_class c ON c.oid = to_regclass('events')"
            " WHERE r.rolname = current_user"
        )
    )


def _migrations() -> list[tuple[int, str, str]]:
    found = []
    for entry in resources.files(MIGRATIONS_PACKAGE).iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def with_role(url: str, user: str, password: str = "", database: str | None = None) -> str:
    """``url`` with another user and password (and database), host and options kept."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    path = f"/{quote(database, safe='')}" if database else parts.path
    return urlunsplit((parts.scheme, netloc, path, parts.query, parts.fragment))


def url_user(url: str) -> str | None:
    user = urlsplit(url).username
    return unquote(user) if user else None


async def upgrade(
    database_url: str, runtime_role: str | None = None, setting: str = DATABASE_URL
) -> list[str]:
    """Apply every migration not yet applied, each in its own transaction, then (with
    ``runtime_role``) grant that role exactly what it needs. Idempotent.

    Run it as the owner role. Run as a role without DDL (the runtime role) it does nothing when
    the schema is up to date, and says what to do when it is not.
    """
    applied_now: list[str] = []
    connection = await connect(database_url, setting)
    try:
        await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        done: set[int] = set()
        if await connection.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"):
            done = {
                row["version"]
                for row in await connection.fetch("SELECT version FROM schema_migrations")
            }
        pending = [m for m in _migrations() if m[0] not in done]
        try:
            if pending and not done:
                await connection.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version integer PRIMARY KEY, name text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
            for version, name, sql in pending:
                async with connection.transaction():
                    await connection.execute(sql)
                    await connection.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        version,
                        name,
                    )
                applied_now.append(name)
        except asyncpg.InsufficientPrivilegeError as error:
            user = await connection.fetchval("SELECT current_user")
            raise InputError(
                f"cannot migrate the schema as {user} ({error}; pending:"
                f" {', '.join(m[1] for m in pending)}): run `noticeflow db upgrade` with"
                " NOTICEFLOW_OWNER_DATABASE_URL set to the owner role"
            ) from None
        if runtime_role:
            await grant_runtime(connection, runtime_role)
    finally:
        if not connection.is_closed():
            await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
            await connection.close()
    return applied_now


async def upgrade_as_owner(database_url: str, owner_database_url: str | None) -> list[str]:
    """Migrate for a process that runs as ``database_url``: as the owner when one is configured
    (then granting the runtime role, whoever ``database_url`` logs in as), else as itself."""
    if not owner_database_url or owner_database_url == database_url:
        return await upgrade(database_url)
    runtime = await connect(database_url)
    try:
        runtime_role = str(await runtime.fetchval("SELECT current_user"))
    finally:
        await runtime.close()
    return await upgrade(owner_database_url, runtime_role=runtime_role, setting=OWNER_DATABASE_URL)


async def grant_runtime(connection: asyncpg.Connection, role: str) -> None:
    """Give ``role`` the runtime's privileges on every table and sequence of the schema, and
    nothing more (what it held before is revoked first). Refuses a role that could undo them."""
    me, schema = await connection.fetchrow("SELECT current_user, current_schema()")
    facts = await connection.fetchrow(
        "SELECT r.rolsuper, r.rolbypassrls, pg_has_role($1, current_user, 'USAGE') AS inherits"
        " FROM pg_roles r WHERE r.rolname = $1",
        role,
    )
    if facts is None:
        raise InputError(f"the runtime role {role} does not exist: create it first")
    problems = []
    if role == me:
        problems.append(f"it is the role running the migrations ({me}): use a separate owner")
    elif facts["rolsuper"]:
        problems.append("it is a superuser")
    elif facts["inherits"]:
        problems.append(f"it has the privileges of the owner role {me}")
    owned = await connection.fetch(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = $1 AND pg_get_userbyid(c.relowner) = $2"
        " UNION ALL SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = $1 AND pg_get_userbyid(p.proowner) = $2 ORDER BY 1",
        schema,
        role,
    )
    if owned and role != me:
        names = ", ".join(row[0] for row in owned[:5]) + (", …" if len(owned) > 5 else "")
        problems.append(f"it owns {names}: REASSIGN OWNED BY {role} TO {me} (as a superuser) first")
    if problems:
        raise InputError(f"refusing {role} as the runtime role: " + "; ".join(problems))
    grantee = _ident(role)
    tables = await connection.fetch(
        "SELECT c.relname, c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'S') ORDER BY c.relname",
        schema,
    )
    async with connection.transaction():
        await connection.execute(f"GRANT USAGE ON SCHEMA {_ident(schema)} TO {grantee}")
        for name, kind in tables:
            target = f"{_ident(schema)}.{_ident(name)}"
            if kind == "S":
                await connection.execute(f"REVOKE ALL ON SEQUENCE {target} FROM {grantee}")
                await connection.execute(f"GRANT USAGE, SELECT ON SEQUENCE {target} TO {grantee}")
                continue
            if kind in ("v", "m"):
                privileges = "SELECT"
            elif name in RESTRICTED:
                privileges = RESTRICTED[name]
            elif name.startswith(READ_MODEL_PREFIX):
                privileges = f"{DML}, TRUNCATE"
            else:
                privileges = DML
            await connection.execute(f"REVOKE ALL ON TABLE {target} FROM {grantee}")
            await connection.execute(f"GRANT {privileges} ON TABLE {target} TO {grantee}")
        # No DDL: neither in the schema nor new schemas in the database (PUBLIC's CREATE on
        # public is gone since PostgreSQL 15; revoked here for older servers — a no-op, with a
        # warning only, when this role cannot revoke it).
        await connection.execute(f"REVOKE CREATE ON SCHEMA {_ident(schema)} FROM PUBLIC")
        await connection.execute(f"REVOKE CREATE ON SCHEMA {_ident(schema)} FROM {grantee}")


async def set_password(connection: asyncpg.Connection, role: str, password: str) -> None:
    """Give ``role`` this password, stored as a SCRAM-SHA-256 verifier."""
    await connection.execute("SET password_encryption = 'scram-sha-256'")
    await connection.execute(f"ALTER ROLE {_ident(role)} PASSWORD {_literal(password)}")


async def provision_roles(
    superuser_url: str,
    owner_password: str,
    runtime_password: str,
    owner: str = OWNER_ROLE,
    runtime: str = RUNTIME_ROLE,
) -> tuple[str, str]:
    """On a server where we are superuser (``noticeflow up``'s embedded one): make the owner and
    runtime roles (or reset their passwords), give the owner the database and every object in
    its schema that someone else owns (a data dir from before the roles existed: everything
    belonged to the superuser), and return (owner URL, runtime URL). Idempotent.

    Migrate with ``upgrade(owner_url, runtime_role=runtime)`` afterwards.
    """
    connection = await asyncpg.connect(superuser_url)
    try:
        database, schema = await connection.fetchrow("SELECT current_database(), current_schema()")
        for role, password in ((owner, owner_password), (runtime, runtime_password)):
            exists = await connection.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
            verb = "ALTER" if exists else "CREATE"
            await connection.execute(
                f"{verb} ROLE {_ident(role)} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE"
                f" NOBYPASSRLS PASSWORD {_literal(password)}"
            )
        async with connection.transaction():
            await connection.execute(f"ALTER DATABASE {_ident(database)} OWNER TO {_ident(owner)}")
            await _adopt(connection, schema, owner)
    finally:
        await connection.close()
    return (
        with_role(superuser_url, owner, owner_password),
        with_role(superuser_url, runtime, runtime_password),
    )


async def _adopt(connection: asyncpg.Connection, schema: str, owner: str) -> None:
    """ALTER ... OWNER TO ``owner`` for every object of ``schema`` that another role owns.

    (REASSIGN OWNED cannot take objects from the bootstrap superuser.) Sequences that belong to a
    column move with their table.
    """
    owner_id = _ident(owner)
    schema_owner = await connection.fetchval(
        "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = $1", schema
    )
    if schema_owner not in (owner, "pg_database_owner"):
        await connection.execute(f"ALTER SCHEMA {_ident(schema)} OWNER TO {owner_id}")
    relations = await connection.fetch(
        "SELECT c.relname, c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')"
        "   AND pg_get_userbyid(c.relowner) <> $2"
        "   AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend d"
        "     WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid"
        "       AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')))",
        schema,
        owner,
    )
    kinds = {"r": "TABLE", "p": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW"}
    kinds |= {"f": "FOREIGN TABLE", "S": "SEQUENCE"}
    for name, kind in relations:
        target = f"{_ident(schema)}.{_ident(name)}"
        await connection.execute(f"ALTER {kinds[kind]} {target} OWNER TO {owner_id}")
    functions = await connection.fetch(
        "SELECT p.oid::regprocedure::text AS signature, p.prokind::text FROM pg_proc p"
        " JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = $1 AND pg_get_userbyid(p.proowner) <> $2",
        schema,
        owner,
    )
    for signature, kind in functions:
        what = "PROCEDURE" if kind == "p" else "AGGREGATE" if kind == "a" else "FUNCTION"
        await connection.execute(f"ALTER {what} {signature} OWNER TO {owner_id}")
    types = await connection.fetch(
        "SELECT t.oid::regtype::text, t.typtype::text FROM pg_type t"
        " JOIN pg_namespace n ON n.oid = t.typnamespace"
        " WHERE n.nspname = $1 AND t.typtype IN ('e', 'd', 'r')"
        "   AND pg_get_userbyid(t.typowner) <> $2",
        schema,
        owner,
    )
    for name, kind in types:
        what = "DOMAIN" if kind == "d" else "TYPE"
        await connection.execute(f"ALTER {what} {name} OWNER TO {owner_id}")
