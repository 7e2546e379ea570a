"""The long-running commands: `up`, `worker`, `web` and `codec-server` (on the root command:
noticeflow/cli/__init__.py registers them)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from noticeflow.cli.common import (
    DataDirOpt,
    fail,
    host_port,
    one_line,
    refusal,
    run,
    settings_for,
)
from noticeflow.domain.errors import InputError

if TYPE_CHECKING:
    import asyncio

    import asyncpg

    from noticeflow.config import Settings


def up(
    demo: Annotated[
        bool, typer.Option("--demo", help="Load demo customers and run the seed notice.")
    ] = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Run everything locally: Temporal dev server + UI, PostgreSQL, SMTP sink, worker."""
    from noticeflow.stack import run_stack

    run(run_stack(settings_for(data_dir), demo=demo))


def worker(data_dir: DataDirOpt = None) -> None:
    """Run the Temporal worker (production)."""
    from noticeflow.logging import configure_logging
    from worker.main import run_worker

    configure_logging()
    run(run_worker(settings_for(data_dir)))


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
    address = host_port(settings.web_host, settings.web_port)
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
            raise InputError(f"could not listen on {host_port(host, port)} ({error})") from None
        typer.echo(f"noticeflow codec server on {url} (Ctrl-C stops it)", err=True)
        await task

    try:
        run(go())
    except SystemExit as exit_:
        if exit_.code in (0, None):
            raise
        fail(f"could not listen on {host_port(host, port)} (see the line above)")


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
        problems.append(one_line(str(error)))
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
        where = host_port(settings.web_host, settings.web_port)
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
