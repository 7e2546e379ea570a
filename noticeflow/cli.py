"""The `noticeflow` command line (Typer). Every command takes --json; bad input exits non-zero
with one readable line."""

# Startup: a command imports what it needs when it runs (Temporal's client, asyncpg, the web, the
# settings' pydantic models), so `noticeflow --help` and a typo cost Python and Typer only
# (bench/cli_startup.py; docs/benchmarks.md). Only the names the commands' signatures use are
# imported here.

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import sys
import traceback
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from noticeflow.domain.errors import InputError
from noticeflow.domain.rules import Outcome, Phase

if TYPE_CHECKING:
    import asyncio

    import asyncpg
    from temporalio.client import Client

    from noticeflow.config import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
customers_app = typer.Typer(no_args_is_help=True, help="Customers, contacts and contract terms.")
notice_app = typer.Typer(no_args_is_help=True, help="Sub-processor notices.")
projections_app = typer.Typer(no_args_is_help=True, help="Read models.")
users_app = typer.Typer(no_args_is_help=True, help="Local dashboard accounts.")
evidence_app = typer.Typer(no_args_is_help=True, help="Evidence packs for auditors.")
keys_app = typer.Typer(
    no_args_is_help=True, help="Customer keys (wrapped by the key-encryption key)."
)
app.add_typer(db_app, name="db")
app.add_typer(customers_app, name="customers")
app.add_typer(notice_app, name="notice")
app.add_typer(projections_app, name="projections")
app.add_typer(users_app, name="users")
app.add_typer(evidence_app, name="evidence")
app.add_typer(keys_app, name="keys")

T = TypeVar("T")
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", envvar="NOTICEFLOW_DATA_DIR", help="Data dir of `noticeflow up`."),
]
ByOpt = Annotated[str, typer.Option("--by", help="Who does this (a user name).")]


def _utc(value: bool) -> bool:
    _SHOW_UTC["on"] = value
    return value


UtcOpt = Annotated[
    bool,
    typer.Option(
        "--utc", help="Show instants in UTC (default: your local timezone).", callback=_utc
    ),
]


class Failure(Exception):
    """A command failed for a reason the user should read; exit code 1."""


def scrub(text: str) -> str:
    from noticeflow.config import scrub

    return scrub(text)


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {scrub(message)}", err=True)  # never a password or a key
    raise typer.Exit(code)


def _is_temporal_error(error: Exception) -> bool:
    """A Temporal RPC error (only possible once a command has imported Temporal's client)."""
    service = sys.modules.get("temporalio.service")
    return service is not None and isinstance(error, service.RPCError)


def _is_database_error(error: Exception) -> bool:
    """An asyncpg refusal (only possible once a command has imported asyncpg)."""
    asyncpg = sys.modules.get("asyncpg")
    return asyncpg is not None and isinstance(error, asyncpg.PostgresError | asyncpg.InterfaceError)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a command; every expected failure becomes one line on stderr and a non-zero exit."""
    import asyncio

    try:
        return asyncio.run(coroutine)
    except InputError as error:
        fail(str(error), 2)
    except Failure as error:
        fail(str(error), 1)
    except Exception as error:  # never a traceback: one line, and the details on request
        if _is_temporal_error(error):
            fail(f"Temporal: {error.message}", 1)  # type: ignore[attr-defined]
        if isinstance(error, OSError) or _is_database_error(error):
            fail(f"cannot reach a required service: {error}", 1)
        if os.environ.get("NOTICEFLOW_DEBUG"):
            traceback.print_exc()
        text = " ".join(str(error).split())
        fail(f"unexpected {type(error).__name__}: {text} (NOTICEFLOW_DEBUG=1 shows details)", 70)
    raise AssertionError("unreachable")


def emit(data: Any, as_json: bool, human: str | Callable[[], str]) -> None:
    if as_json:
        typer.echo(json.dumps(data, default=_json_default, indent=2))
    else:
        typer.echo(human() if callable(human) else human)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return str(value)


def settings_for(data_dir: Path | None) -> Settings:
    from noticeflow.config import load_settings

    try:
        return load_settings(data_dir)
    except InputError as error:  # name the variable people set, not the field it fills
        raise InputError(
            re.sub(
                r"(?m)(^configuration(?: \(\d+ problems\))?:\s*|^  )([a-z][a-z_]*)(?=:| item)",
                lambda m: m.group(1) + "NOTICEFLOW_" + m.group(2).upper(),
                str(error),
            )
        ) from None


def keyed(settings: Settings) -> Settings:
    """``settings``, once the process's four keys are checked and installed: every command that
    touches the database or Temporal starts here, and refuses without real keys (one block naming
    each setting, exit 2: the same words as the worker, the web and `up`)."""
    from noticeflow.config import install_keys

    install_keys(settings)
    return settings


@asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    from noticeflow import db

    keyed(settings)
    pool = await db.create_pool(settings.require_database_url(), max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


@asynccontextmanager
async def services(settings: Settings) -> AsyncIterator[tuple[Client, asyncpg.Pool]]:
    from noticeflow.temporal import connect

    keyed(settings)  # every key problem at once, before connecting to anything
    try:
        client = await connect(settings)
    except RuntimeError as error:
        raise Failure(f"cannot reach Temporal at {settings.temporal_address}: {error}") from None
    async with database(settings) as pool:
        yield client, pool


def parse_instant(value: str, option: str) -> datetime:
    from pydantic import TypeAdapter, ValidationError

    try:
        instant = TypeAdapter(datetime).validate_python(value)
    except ValidationError:
        raise InputError(f"{option}: not an RFC 3339 date-time: {value!r}") from None
    if instant.tzinfo is None:
        raise InputError(f"{option}: needs a timezone offset, e.g. {value}Z")
    return instant


# --- stack, worker, database --------------------------------------------------------------------


@app.command()
def up(
    demo: Annotated[
        bool, typer.Option("--demo", help="Load demo customers and run the seed notice.")
    ] = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Run everything locally: Temporal dev server + UI, PostgreSQL, SMTP sink, worker."""
    from noticeflow.stack import run_stack

    run(run_stack(settings_for(data_dir), demo=demo))


@app.command()
def worker(data_dir: DataDirOpt = None) -> None:
    """Run the Temporal worker (production)."""
    from noticeflow.logging import configure_logging
    from worker.main import run_worker

    configure_logging()
    run(run_worker(settings_for(data_dir)))


@app.command()
def web(
    host: Annotated[
        str | None, typer.Option("--host", help="Address to listen on (NOTICEFLOW_WEB_HOST).")
    ] = None,
    port: Annotated[
        str | None,
        typer.Option("--port", metavar="PORT", help="Port (NOTICEFLOW_WEB_PORT, default 8080)."),
    ] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Serve the dashboard, the JSON API and the customer action pages (/a/<token>)."""
    import asyncio

    from noticeflow.logging import configure_logging
    from noticeflow.web.app import serve

    settings = _web_settings(host, port, data_dir)
    address = _host_port(settings.web_host, settings.web_port)
    configure_logging()

    async def go() -> None:
        import signal

        # Both checked before serving, and both problems told at once.
        problems = [p for p in (await _cannot_listen(settings),) if p]
        pool, problem = await _open_web_database(settings)
        problems += [problem] if problem else []
        if problems:
            if pool is not None:
                await pool.close()
            raise InputError("; ".join(problems))
        assert pool is not None
        try:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            loop.set_exception_handler(_quiet_about_uvicorn_exit)
            started: asyncio.Future[str] = loop.create_future()
            task = asyncio.create_task(serve(settings, stop, pool=pool, started=started))
            try:
                url = await started
            except Exception as error:
                raise InputError(f"could not listen on {address} ({error})") from None
            typer.echo(f"noticeflow web on {url} (Ctrl-C stops it)", err=True)
            await task
        finally:
            await pool.close()

    try:
        run(go())
    except SystemExit as exit_:
        # uvicorn exits the process when it cannot bind (another process took the port since
        # the check above); it has logged why.
        if exit_.code in (0, None):
            raise
        fail(f"could not listen on {address} (see the line above)")


@app.command("codec-server")
def codec_server(
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (off loopback a token is required).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port.")] = 8234,
    data_dir: DataDirOpt = None,
) -> None:
    """Serve Temporal's remote codec (POST /decode, /encode) so the Temporal Web UI
    (--ui-codec-endpoint) and CLI (--codec-endpoint) show decrypted payloads to those allowed."""
    import asyncio

    from noticeflow import codec_server as served
    from noticeflow.logging import configure_logging

    settings = settings_for(data_dir)
    token = served.settings_token(settings)
    _codec, problems = served.check(settings, host, token)
    if problems:
        fail("the codec server cannot start: " + "; ".join(problems))
    configure_logging()

    async def go() -> None:
        import signal

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        loop.set_exception_handler(_quiet_about_uvicorn_exit)
        started: asyncio.Future[str] = loop.create_future()
        task = asyncio.create_task(
            served.serve(settings, host, port, stop, token=token, started=started)
        )
        try:
            url = await started
        except InputError:
            raise
        except Exception as error:
            raise InputError(f"could not listen on {_host_port(host, port)} ({error})") from None
        typer.echo(f"noticeflow codec server on {url} (Ctrl-C stops it)", err=True)
        await task

    try:
        run(go())
    except SystemExit as exit_:
        if exit_.code in (0, None):
            raise
        fail(f"could not listen on {_host_port(host, port)} (see the line above)")


def _quiet_about_uvicorn_exit(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """uvicorn's task ends in SystemExit when it cannot bind: said in one line, not a trace."""
    if not isinstance(context.get("exception"), SystemExit):
        loop.default_exception_handler(context)


def _web_settings(host: str | None, port: str | None, data_dir: Path | None) -> Settings:
    """The web's settings, or one line naming every problem with them."""
    from noticeflow import keyring
    from noticeflow.config import install_keys

    problems: list[str] = []
    overrides: dict[str, Any] = {}
    if host is not None:
        if host.strip():
            overrides["web_host"] = host.strip()
        else:
            problems.append("--host: give an address to listen on, e.g. 127.0.0.1")
    if port is not None:
        text = port.strip()
        if text.isascii() and text.isdigit() and int(text) <= 65535:
            overrides["web_port"] = int(text)
        else:
            problems.append(f"--port: {port[:20]!r} is not a port number (0-65535)")
    try:
        settings = settings_for(data_dir).model_copy(update=overrides)
    except InputError as error:
        problems.append(_one_line(str(error)))
        fail("; ".join(problems))
        raise AssertionError("unreachable") from None
    if not settings.database_url:
        problems.append(
            "no database: set NOTICEFLOW_DATABASE_URL, or run `noticeflow up` with the same data"
            f" dir ({settings.data_dir})"
        )
    keys = keyring.problems(settings)  # all four: the web signs links and reads sealed data
    if problems or keys:
        fail(refusal(problems, keys))
    install_keys(settings)
    return settings


def refusal(problems: list[str], key_problems: list[str]) -> str:
    """What is wrong, all at once: other problems on one line as before; with key problems, one
    block naming each setting (the keyring's own words, as every entry point says them)."""
    if not key_problems:
        return "; ".join(problems)
    items = [*problems, *key_problems]
    head = "refusing to start without real keys"
    if problems:
        head = f"refusing to start ({len(items)} problems)"
    return head + ":\n  - " + "\n  - ".join(items)


def _one_line(message: str) -> str:
    """A block of problems ("what (2 problems):" and one indented line each) as one line."""
    head, *rest = message.splitlines() or [""]
    if not rest:
        return head
    return head.rstrip(":") + ": " + "; ".join(line.strip() for line in rest if line.strip())


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _cannot_listen(settings: Settings) -> str | None:
    """Why the web could not listen where it is told to, or None. Binds the way uvicorn does
    (asyncio's create_server), then lets go: uvicorn itself would exit the process instead."""
    import asyncio
    import socket

    loop = asyncio.get_running_loop()
    try:
        server = await loop.create_server(asyncio.Protocol, settings.web_host, settings.web_port)
    except OSError as error:
        if isinstance(error, socket.gaierror) or not error.errno:
            reason = error.strerror or str(error)
        else:
            reason = os.strerror(error.errno)
        where = _host_port(settings.web_host, settings.web_port)
        return f"could not listen on {where} ({reason[:1].lower()}{reason[1:]})"
    server.close()
    await server.wait_closed()
    return None


async def _open_web_database(settings: Settings) -> tuple[asyncpg.Pool | None, str | None]:
    """The web's pool, or why there is none (unreachable, refused, an invalid URL, an old
    schema) in one line, with no password in it."""
    import asyncio
    from urllib.parse import urlsplit

    import asyncpg

    from noticeflow import db

    url = settings.require_database_url()
    try:
        secret = urlsplit(url).password
    except ValueError:
        secret = None
    try:
        pool = await asyncio.wait_for(db.create_pool(url, max_size=10), timeout=20)
    except TimeoutError:
        return None, "cannot open the database: no answer within 20 s (NOTICEFLOW_DATABASE_URL)"
    except InputError as error:  # a malformed URL: db.bad_url already names it, password hidden
        return None, str(error)
    except Exception as error:  # refusals are OSError / PostgresError
        text = " ".join(str(error).split()) or type(error).__name__
        if secret:
            text = text.replace(secret, "***")
        return None, f"cannot open the database (NOTICEFLOW_DATABASE_URL): {text[:300]}"
    try:
        applied = {row[0] for row in await pool.fetch("SELECT version FROM schema_migrations")}
    except asyncpg.UndefinedTableError:
        applied = set()
    missing = [name for version, name, _ in db._migrations() if version not in applied]
    if missing:
        await pool.close()
        return None, (
            f"the database schema is not up to date (missing {', '.join(missing)}):"
            " run `noticeflow db upgrade`"
        )
    return pool, None


ROLE_HELP = "viewer (reads), operator (acts on cases and customers), approver (also approves)"


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="User name (a-z, 0-9, '.', '_', '-').")],
    role: Annotated[str, typer.Option("--role", help=ROLE_HELP)],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="Reset the role and password of an existing user (ends its open sessions).",
        ),
    ] = False,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a dashboard account; the password is asked for (or read with --password-stdin)."""
    from noticeflow import users

    problems = []
    chosen: users.Role | None = None
    try:
        chosen = users.Role(role)
    except ValueError:
        problems.append(f"--role: {role[:40]!r} is not one of viewer, operator, approver")
    try:
        users.check_name(name)
    except InputError as error:
        problems.append(str(error))
    if problems or chosen is None:  # before asking for a password that would be of no use
        fail("; ".join(problems))
        return
    keyed(settings_for(data_dir))  # no keys, no password asked for
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        users.check_password(password)
    except InputError as error:
        fail(str(error))
    role_chosen = chosen

    async def go() -> tuple[bool, int]:
        async with database(settings_for(data_dir)) as pool:
            created = await users.add_user(pool, name, role_chosen, password, replace=replace)
            # A reset (perhaps the old password is known to someone): its sessions end.
            ended = 0 if created else await users.revoke_sessions(pool, name)
            return created, ended

    created, ended = run(go())
    emit(
        {"name": name, "role": role_chosen.value, "created": created, "sessions_ended": ended},
        as_json,
        f"user {name} {'added' if created else 'reset'} as {role_chosen.value}"
        + (f" ({_sessions(ended)} ended)" if ended else ""),
    )


def _sessions(count: int) -> str:
    return f"{count} open session{'' if count == 1 else 's'}"


@users_app.command("list")
def users_list(data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Dashboard accounts, their roles and open sessions (never their password hashes)."""
    from noticeflow import users

    async def go() -> list[dict[str, Any]]:
        async with database(settings_for(data_dir)) as pool:
            return await users.list_users(pool)

    rows = run(go())
    emit(
        rows, as_json, lambda: _table(rows, ["name", "role", "created_at", "disabled", "sessions"])
    )


@users_app.command("disable")
def users_disable(
    name: Annotated[str, typer.Argument(help="User name of a local account.")],
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Disable a local account: it can no longer sign in, and its open sessions end now.
    `users add NAME --replace` enables it again with a new password."""
    from noticeflow import users

    async def go() -> int:
        async with database(settings_for(data_dir)) as pool:
            return await users.disable_user(pool, name)

    ended = run(go())
    emit(
        {"name": name, "disabled": True, "sessions_ended": ended},
        as_json,
        f"user {name} disabled ({_sessions(ended)} ended)",
    )


@users_app.command("remove")
def users_remove(
    name: Annotated[str, typer.Argument(help="User name (a local account or an OIDC user).")],
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove a local account and end every open session of that name (an OpenID Connect
    user's too; also remove them at the identity provider). Their past actions keep their name."""
    from noticeflow import users

    async def go() -> tuple[bool, int]:
        async with database(settings_for(data_dir)) as pool:
            return await users.remove_user(pool, name)

    removed, ended = run(go())
    what = "removed" if removed else "has no local account"
    emit(
        {"name": name, "removed": removed, "sessions_ended": ended},
        as_json,
        f"user {name} {what} ({_sessions(ended)} ended)",
    )


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Apply schema migrations (idempotent): as NOTICEFLOW_OWNER_DATABASE_URL when set, granting
    the runtime role (NOTICEFLOW_DATABASE_URL's) only what it needs."""
    from noticeflow import db

    settings = keyed(settings_for(data_dir))
    applied = run(db.upgrade_as_owner(settings.require_database_url(), settings.owner_database_url))
    emit(
        {"applied": applied},
        as_json,
        f"applied: {', '.join(applied)}" if applied else "schema is up to date",
    )


# --- customers ----------------------------------------------------------------------------------


@customers_app.command("import")
def customers_import(
    file: Annotated[Path, typer.Argument(help="CSV with the contract's columns.")],
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Upsert customers, contacts and contract terms from CSV (all rows or none)."""
    from noticeflow import repository
    from noticeflow.domain.customers import read_customers_file

    async def go() -> int:
        async with database(settings_for(data_dir)) as pool:
            # Ids erased for good are refused with the file's other problems, all at once.
            customers = read_customers_file(file, await repository.erased_customers(pool))
            return await repository.upsert_customers(pool, customers)

    count = run(go())
    emit({"imported": count}, as_json, f"imported {count} customers")


@customers_app.command("list")
def customers_list(data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """List customers (contacts are counted, not shown)."""
    from noticeflow import repository

    async def go() -> list[dict[str, Any]]:
        async with database(settings_for(data_dir)) as pool:
            return await repository.list_customers(pool)

    rows = run(go())
    emit(
        rows,
        as_json,
        lambda: _table(
            rows,
            [
                "customer_id",
                "name",
                "region",
                "services",
                "timezone",
                "window_days",
                "window_unit",
                "contacts",
            ],
        ),
    )


@customers_app.command("erase")
def customers_erase(
    customer: Annotated[str, typer.Argument(help="Customer id.")],
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Erase a customer for good: its key and personal data go, the evidence trail (ids) stays.
    Running it again changes nothing ("already erased")."""
    from noticeflow import repository

    async def go() -> dict[str, Any]:
        async with database(settings_for(data_dir)) as pool:
            return await repository.erase_customer(pool, customer)

    result = run(go())
    if result["already"]:
        human = f"customer {customer} already erased (at {_json_default(result['erased_at'])})"
    else:
        changed = ", ".join(
            f"{table} {count}"
            for table, count in result.items()
            if table not in ("customer_id", "already", "erased_at") and count
        )
        human = f"erased customer {customer} for good (records changed: {changed or 'none'})"
    emit(result, as_json, human)


# --- keys ---------------------------------------------------------------------------------------


@keys_app.command("rewrap")
def keys_rewrap(data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Wrap every customer key under the current key-encryption key: keys stored in clear (from
    before wrapping) and keys wrapped by a previous one (after a rotation)."""
    from noticeflow import crypto

    async def go() -> tuple[dict[str, int], dict[str, int]]:
        async with database(settings_for(data_dir)) as pool:
            return await crypto.rewrap_keys(pool), await crypto.unavailable_keks(pool)

    counts, missing = run(go())
    emit(
        counts,
        as_json,
        f"customer keys: {counts['wrapped']} wrapped (were in clear), {counts['rewrapped']}"
        f" re-wrapped under the current key-encryption key, {counts['current']} already current,"
        f" {counts['unavailable']} under a key-encryption key this process does not have",
    )
    if counts["unavailable"]:
        named = ", ".join(f"{kek_id} ({count})" for kek_id, count in missing.items())
        fail(
            f"{counts['unavailable']} customer keys are wrapped by a key-encryption key this"
            f" process does not have ({named or 'key id unknown'}): set it in"
            f" {crypto.KEK_SETTINGS} and run this again",
            1,
        )


# --- notices ------------------------------------------------------------------------------------


@notice_app.command("create")
def notice_create(
    file: Annotated[Path, typer.Argument(help="Notice TOML file.")],
    by: Annotated[str | None, typer.Option("--by", help="Author (default: your login).")] = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate a notice, record it and start its workflow in draft."""
    from noticeflow.control import default_user, start_notice
    from noticeflow.domain.notice import load_notice_file

    async def go() -> str:
        spec = load_notice_file(file)
        settings = settings_for(data_dir)
        async with services(settings) as (client, pool):
            await start_notice(client, pool, spec, by or default_user(), settings.task_queue)
        return spec.notice_id

    notice_id = run(go())
    emit({"notice_id": notice_id}, as_json, notice_id)


@notice_app.command("list")
def notice_list(
    phase: Annotated[Phase | None, typer.Option("--phase")] = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
    utc: UtcOpt = False,
) -> None:
    """List notices, optionally in one phase."""
    from noticeflow import repository

    async def go() -> list[dict[str, Any]]:
        async with database(settings_for(data_dir)) as pool:
            return await repository.list_notices(pool, phase.value if phase else None)

    rows = run(go())
    emit(
        rows,
        as_json,
        lambda: _table(
            rows,
            ["notice_id", "phase", "subprocessor", "effective_at", "customers", "open_objections"],
        ),
    )


@notice_app.command("show")
def notice_show(
    notice_id: Annotated[str, typer.Argument()],
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
    utc: UtcOpt = False,
) -> None:
    """Phase, deadlines, counts and the per-customer table (instants in your local timezone)."""
    from noticeflow import repository

    async def go() -> dict[str, Any]:
        async with database(settings_for(data_dir)) as pool:
            return await repository.notice_summary(pool, notice_id)

    summary = run(go())
    emit(summary, as_json, lambda: _show_text(summary))


@notice_app.command("preview")
def notice_preview(
    notice_id: Annotated[str, typer.Argument()],
    customer: Annotated[str, typer.Option("--customer")],
    html: Annotated[
        bool, typer.Option("--html", help="Print the HTML part instead of the text.")
    ] = False,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Render the notice mail for one customer, exactly as it would be sent; sends nothing."""
    from noticeflow.links import LinkSigner
    from noticeflow.mail import MailRenderer
    from noticeflow.preview import preview_notice

    settings = settings_for(data_dir)

    async def go() -> dict[str, Any]:
        async with database(settings) as pool:
            return await preview_notice(
                pool,
                notice_id,
                customer,
                MailRenderer(settings.template_dir),
                LinkSigner(settings.verification_keys, settings.public_url),
            )

    mail = run(go())
    emit(
        mail,
        as_json,
        lambda: (
            f"To: {', '.join(mail['to'])}\nSubject: {mail['subject']}\n"
            f"Deadline: {_cell(mail['deadline'])}"
            f"{' (projected)' if mail['deadline_is_projected'] else ''}\n\n"
            + (mail["html"] if html else mail["text"])
        ),
    )


KeyOpt = Annotated[
    str,
    typer.Option(
        "--key",
        help="Idempotency key: the same key again is a repeat of this action (default: none,"
        " every command is a new receipt).",
    ),
]


async def _temporal(settings: Settings) -> tuple[Client | None, str | None]:
    import asyncio

    from temporalio.service import RPCError

    from noticeflow.temporal import connect

    try:
        return await asyncio.wait_for(connect(settings), timeout=10), None
    except (RuntimeError, OSError, TimeoutError, RPCError) as error:
        return None, f"{settings.temporal_address}: {error}"


def _act(
    data_dir: Path | None,
    notice_id: str,
    name: str,
    payload: dict[str, Any] | Callable[[], dict[str, Any]],
    *,
    key: str = "",
    as_json: bool = False,
) -> None:
    """Record one action in the intake, wake the notice, and report what became of this receipt."""
    from noticeflow.control import hand_over, receive

    async def go() -> tuple[Any, str | None]:
        body = payload() if callable(payload) else dict(payload)
        if key:
            body["idempotency_key"] = key
        settings = settings_for(data_dir)
        async with database(settings) as pool:
            # Received first: waiting for Temporal must not move the moment of receipt.
            receipt = await receive(pool, notice_id, name, body, "cli")
            client, problem = await _temporal(settings) if receipt.pending else (None, None)
            return await hand_over(
                client, pool, receipt, settings.task_queue, connect_error=problem
            )

    receipt, pending_because = run(go())
    result = {**receipt.as_json(), "pending_because": pending_because}
    if receipt.status == "rejected":
        if as_json:
            emit(result, True, "")
        fail(f"{name} rejected: {receipt.reason} (receipt {receipt.receipt_id})", 1)
    emit(result, as_json, lambda: _acted_text(result))


def _acted_text(result: dict[str, Any]) -> str:
    name, receipt = result["action"], result["receipt_id"]
    when = _cell(result["received_at"])
    if result["repeat"]:
        return f"{name}: a repeat of receipt {receipt} (same key), {result['status']}"
    if result["status"] == "pending":
        return (
            f"{name}: received at {when} (receipt {receipt}); pending: "
            f"{result['pending_because']}. It is kept and will be judged by its receipt time."
        )
    if result["status"] == "duplicate":
        return f"{name}: nothing new: {result['reason']} (receipt {receipt})"
    extra = f": {result['reason']}" if result["reason"] else ""
    return f"{name}: accepted{extra} (receipt {receipt}, received {when})"


@notice_app.command("approve")
def notice_approve(
    notice_id: Annotated[str, typer.Argument()],
    by: ByOpt,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Approve a draft (four eyes: not by its author); sending starts."""
    _act(data_dir, notice_id, "approve", {"by": by}, as_json=as_json)


@notice_app.command("object")
def notice_object(
    notice_id: Annotated[str, typer.Argument()],
    customer: Annotated[str, typer.Option("--customer")],
    reason: Annotated[str, typer.Option("--reason")],
    by: Annotated[str, typer.Option("--by")] = "ops",
    key: KeyOpt = "",
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Record a customer's objection (received by ops, e.g. by mail or phone)."""
    payload = {"customer_id": customer, "reason": reason, "by": by, "channel": "cli"}
    _act(data_dir, notice_id, "object", payload, key=key, as_json=as_json)


@notice_app.command("resolve")
def notice_resolve(
    notice_id: Annotated[str, typer.Argument()],
    customer: Annotated[str, typer.Option("--customer")],
    outcome: Annotated[Outcome, typer.Option("--outcome")],
    by: ByOpt,
    note: Annotated[str, typer.Option("--note")] = "",
    key: KeyOpt = "",
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Resolve a customer's open objection: withdrawn, excluded or terminated."""
    payload = {"customer_id": customer, "outcome": outcome.value, "by": by, "note": note}
    _act(data_dir, notice_id, "resolve_objection", payload, key=key, as_json=as_json)


@notice_app.command("opt-in")
def notice_opt_in(
    notice_id: Annotated[str, typer.Argument()],
    customer: Annotated[str, typer.Option("--customer")],
    by: Annotated[str, typer.Option("--by")] = "ops",
    key: KeyOpt = "",
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Record a customer's opt-in (opt-in notices)."""
    payload = {"customer_id": customer, "by": by, "channel": "cli"}
    _act(data_dir, notice_id, "opt_in", payload, key=key, as_json=as_json)


@notice_app.command("revoke-opt-in")
def notice_revoke_opt_in(
    notice_id: Annotated[str, typer.Argument()],
    customer: Annotated[str, typer.Option("--customer")],
    by: Annotated[str, typer.Option("--by")] = "ops",
    key: KeyOpt = "",
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a customer's opt-in, before or after activation (also after completion)."""
    payload = {"customer_id": customer, "by": by, "channel": "cli"}
    _act(data_dir, notice_id, "revoke_opt_in", payload, key=key, as_json=as_json)


@notice_app.command("postpone")
def notice_postpone(
    notice_id: Annotated[str, typer.Argument()],
    effective_at: Annotated[str, typer.Option("--effective-at", help="New RFC 3339 date-time.")],
    by: ByOpt,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Move the effective date later (never earlier); recipients get an update."""

    def payload() -> dict[str, Any]:
        when = parse_instant(effective_at, "--effective-at")
        return {"effective_at": when.isoformat(), "by": by}

    _act(data_dir, notice_id, "postpone", payload, as_json=as_json)


@notice_app.command("cancel")
def notice_cancel(
    notice_id: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option("--reason")],
    by: ByOpt,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Cancel a notice before it takes effect; recipients are told."""
    _act(data_dir, notice_id, "cancel", {"reason": reason, "by": by}, as_json=as_json)


@notice_app.command("resend")
def notice_resend(
    notice_id: Annotated[str, typer.Argument()],
    customer: Annotated[str, typer.Option("--customer")],
    by: Annotated[str, typer.Option("--by")] = "ops",
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Resend the notice to a customer's current contacts (e.g. after a bounce)."""
    _act(data_dir, notice_id, "resend", {"customer_id": customer, "by": by}, as_json=as_json)


@notice_app.command("exclude")
def notice_exclude(
    notice_id: Annotated[str, typer.Argument()],
    customer: Annotated[str, typer.Option("--customer")],
    reason: Annotated[str, typer.Option("--reason")],
    by: ByOpt,
    key: KeyOpt = "",
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Settle a customer without activation (e.g. undelivered for good), recorded with why and who."""
    payload = {"customer_id": customer, "reason": reason, "by": by}
    _act(data_dir, notice_id, "exclude", payload, key=key, as_json=as_json)


@notice_app.command("receipt")
def notice_receipt(
    receipt_id: Annotated[str, typer.Argument()],
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
    utc: UtcOpt = False,
) -> None:
    """What became of one receipt of the intake (pending, accepted, duplicate or rejected)."""
    from noticeflow import intake

    async def go() -> Any:
        async with database(settings_for(data_dir)) as pool:
            found = await intake.get(pool, receipt_id)
        if found is None:
            raise InputError(f"no receipt {receipt_id!r}")
        return found

    receipt = run(go())
    result = {**receipt.as_json(), "pending_because": None}
    emit(
        result,
        as_json,
        lambda: (
            f"{receipt.action} on {receipt.notice_id}: {receipt.status}"
            + (f": {receipt.reason}" if receipt.reason else "")
            + f" (received {_cell(receipt.received_at)})"
        ),
    )


@projections_app.command("rebuild")
def projections_rebuild(data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Rebuild every read model from zero, from the event store alone."""
    from noticeflow.projections import rebuild

    async def go() -> int:
        async with database(settings_for(data_dir)) as pool:
            return await rebuild(pool)

    count = run(go())
    emit({"events_replayed": count}, as_json, f"rebuilt the read models from {count} events")


@evidence_app.command("export")
def evidence_export(
    notice_id: Annotated[str, typer.Argument()],
    out: Annotated[Path, typer.Option("--out", help="Directory to write the pack into.")],
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a self-contained, verifiable evidence pack for one notice."""
    from noticeflow.evidence import export_pack

    async def go() -> dict[str, Any]:
        async with database(settings_for(data_dir)) as pool:
            return await export_pack(pool, notice_id, out)

    manifest = run(go())
    emit(
        manifest,
        as_json,
        f"wrote {len(manifest['files'])} files and {MANIFEST_NAME} to {out}"
        f" ({manifest['events']} events, chain head {str(manifest['chain_head'])[:16]}…)",
    )


MANIFEST_NAME = "manifest.json"


@evidence_app.command("verify")
def evidence_verify(
    directory: Annotated[Path | None, typer.Argument(help="An exported pack.")] = None,
    notice: Annotated[
        str | None, typer.Option("--notice", help="Check the database instead.")
    ] = None,
    allow_unsigned: Annotated[
        bool,
        typer.Option(
            "--allow-unsigned",
            help="Accept a pack or stream head from before signing, with a warning.",
        ),
    ] = False,
    key_id: Annotated[
        str | None,
        typer.Option(
            "--key-id",
            help="The signer's published key id (`evidence key-id`): only that key is trusted.",
        ),
    ] = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a pack offline, or a notice's events in the database; non-zero if anything is off."""
    from noticeflow import keyring
    from noticeflow.evidence import Verification, verify_database, verify_pack

    if (directory is None) == (notice is None):
        fail("give either a pack DIR or --notice ID")
    if directory is not None and not keyring.has("signing"):
        # This installation's signing keys, when it has them (an auditor elsewhere: --key-id).
        with contextlib.suppress(InputError):
            keyring.install(keyring.from_settings(settings_for(data_dir), ["signing"]))

    async def go() -> Verification:
        if directory is not None:
            return verify_pack(directory, allow_unsigned=allow_unsigned, key_id=key_id)
        async with database(settings_for(data_dir)) as pool:
            return await verify_database(pool, str(notice), allow_unsigned=allow_unsigned)

    result = run(go())
    if not as_json:
        for warning in result.warnings:
            typer.echo(f"warning: {warning}", err=True)
    if not result.ok:
        if as_json:
            emit(result.as_json(), True, "")
        fail(f"verification failed: {result.problem}", 1)
    emit(
        result.as_json(), as_json, f"verified: {result.events} events, hash chain and files intact"
    )


@evidence_app.command("sign-heads")
def evidence_sign_heads(data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Once, after upgrading to signed heads: check every stream whose head has no signature and
    sign those whose chain and head check out. It vouches for them as they are now (a change made
    before this is not caught): run it right after the upgrade, never to silence a failure."""
    from noticeflow import eventstore

    async def go() -> tuple[int, list[Any]]:
        async with database(settings_for(data_dir)) as pool:
            return await eventstore.sign_unsigned_heads(pool)

    signed, refused = run(go())
    for problem in refused:
        typer.echo(f"NOT signed: {problem.stream_id}: {problem}", err=True)
    emit(
        {"signed": signed, "refused": [str(p.stream_id) for p in refused]},
        as_json,
        f"signed {signed} stream heads; {len(refused)} refused (they fail verification)",
    )
    if refused:
        raise typer.Exit(1)


@evidence_app.command("key-id")
def evidence_key_id(data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Print the signing key's id and public key: publish them, so an auditor can check that a
    pack (and its stream head) was signed by this installation (`evidence verify --key-id`)."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from noticeflow import eventstore, keyring

    try:
        keyring.install(keyring.from_settings(settings_for(data_dir), ["signing"]))
    except InputError as error:
        fail(_one_line(str(error)))
    keys = eventstore.signing_keys(eventstore.HEAD_KEY_USE)
    current_id, current = keys[0]
    pem = (
        current.public_key()
        .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )
    emit(
        {"key_id": current_id, "public_key_pem": pem, "previous_key_ids": [k for k, _ in keys[1:]]},
        as_json,
        f"signing key id {current_id}\n{pem.rstrip()}",
    )


# --- text output --------------------------------------------------------------------------------


# Instants shown to people: in the reader's own timezone, to the second (`--utc` switches to UTC).
_SHOW_UTC = {"on": False}


def _instant(value: datetime) -> str:
    value = value.replace(microsecond=0)
    if _SHOW_UTC["on"] or value.tzinfo is None:
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    local = value.astimezone()
    return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname() or local.strftime('%z')}"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return _instant(value)
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _show_text(summary: dict[str, Any]) -> str:
    head = [
        f"notice {summary['notice_id']}: {summary['title']}",
        f"  sub-processor     {summary['subprocessor']}{' (opt-in)' if summary['opt_in'] else ''}",
        f"  phase             {summary['phase']}",
        f"  author/approver   {summary['author']} / {summary['approved_by'] or '-'}",
        f"  effective at      {_cell(summary['effective_at'])}",
        f"  window closes at  {_cell(summary['window_closes_at'])}",
        f"  counts            {_cell(summary['counts'])}",
        "",
    ]
    rows = [
        {
            **row,
            "objection": (
                f"{row['objection']['status']}{'' if row['objection']['timely'] else ' (late)'}"
            )
            if row["objection"]
            else None,
        }
        for row in summary["customers"]
    ]
    return "\n".join(head) + _table(
        rows,
        ["customer_id", "delivery", "deadline", "objection", "opted_in", "activated", "verdict"],
    )


def main() -> None:
    os.umask(0o077)  # whatever a command writes (packs, `up`'s data dir) is its owner's alone
    try:
        app()
    except KeyboardInterrupt:
        code: object = 130
    except SystemExit as done:
        code = done.code
    except InputError as error:  # bad input found outside run(): still one line, never a trace
        typer.echo(f"error: {scrub(str(error))}", err=True)
        code = 2
    except Failure as error:
        typer.echo(f"error: {scrub(str(error))}", err=True)
        code = 1
    except Exception as error:
        if os.environ.get("NOTICEFLOW_DEBUG"):
            traceback.print_exc()
        text = " ".join(str(error).split())
        typer.echo(
            f"error: unexpected {type(error).__name__}: {scrub(text)}"
            " (NOTICEFLOW_DEBUG=1 shows details)",
            err=True,
        )
        code = 70
    else:
        code = 0
    _exit(code)


def _exit(code: object) -> NoReturn:
    """Leave without interpreter finalization once Temporal's Rust core is loaded.

    Every Temporal call finishes on one of the core's threads, which re-enters Python to hand the
    result over; the default runtime is a module global, so those threads live until the process
    ends and race ``Py_FinalizeEx``: a SIGABRT ("PyGILState_Release ... Python runtime state:
    finalizing", ~1 short run in 6 here), a segfault, or a hang when a call is still in flight
    (temporalio/sdk-python#300). What a normal exit does still runs: atexit handlers, log handlers,
    flushed streams.
    """
    if "temporalio.bridge.temporal_sdk_bridge" not in sys.modules:
        sys.exit(code)  # type: ignore[arg-type]
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    import logging

    atexit._run_exitfuncs()  # e.g. embedded PostgreSQL's cleanup under `up`
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code or 0)


if __name__ == "__main__":
    main()
