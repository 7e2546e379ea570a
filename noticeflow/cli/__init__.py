"""The `noticeflow` command line (Typer). Every command takes --json; bad input exits non-zero
with one readable line."""

# Startup: a command imports what it needs when it runs (Temporal's client, asyncpg, the web, the
# settings' pydantic models), so `noticeflow --help` and a typo cost Python and Typer only
# (bench/cli_startup.py; docs/benchmarks.md). One module per command group; common.py holds what
# they share.

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import traceback
from typing import NoReturn

import typer

from noticeflow.cli import (
    customers,
    db,
    evidence,
    keys,
    notice,
    projections,
    receipts,
    replies,
    servers,
    subprocessors,
    subscribers,
    temporal,
    users,
    webhooks,
)
from noticeflow.cli.common import Failure, _json_default, scrub
from noticeflow.domain.errors import InputError

__all__ = ["_json_default", "app", "main"]

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
app.add_typer(db.app, name="db")
app.add_typer(customers.app, name="customers")
app.add_typer(notice.app, name="notice")
app.add_typer(projections.app, name="projections")
app.add_typer(users.app, name="users")
app.add_typer(evidence.app, name="evidence")
app.add_typer(keys.app, name="keys")
app.add_typer(receipts.app, name="receipts")
app.add_typer(temporal.app, name="temporal")
app.add_typer(subprocessors.app, name="subprocessors")
app.add_typer(webhooks.app, name="webhooks")
app.add_typer(replies.app, name="replies")
app.add_typer(subscribers.app, name="subscribers")
app.command()(servers.up)
app.command()(servers.worker)
app.command()(servers.web)
app.command("codec-server")(servers.codec_server)
app.command()(replies.inbound)


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
