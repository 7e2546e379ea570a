"""What every command group shares: the options every command takes, running a command so
that a failure is one line and an exit code, settings and keys, the database and Temporal, and
how results are shown (JSON or text, instants in the reader's timezone)."""

from __future__ import annotations

import json
import os
import re
import sys
import traceback
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from noticeflow.domain.errors import InputError

if TYPE_CHECKING:
    import asyncpg
    from temporalio.client import Client

    from noticeflow.config import Settings


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
    """An error text fit for the terminal: no secret (config.scrub), and no character that would
    act on the terminal or hide or reorder what it shows (visible)."""
    from noticeflow.config import scrub

    return visible(scrub(text))


def visible(text: str) -> str:
    """``text`` with every control character but the line break (NUL, ESC, C1), every invisible
    format character (bidi overrides and isolates such as U+202E, zero-width joiners, the BOM),
    the line and paragraph separators and lone surrogates written as ``\\uXXXX``: a value echoed
    in an error shows what it holds and cannot reverse or hide the rest of the line."""
    import unicodedata

    if text.isprintable() or all(
        ch == "\n" or ch == "\t" or unicodedata.category(ch) not in _HIDDEN for ch in text
    ):
        return text
    return "".join(
        ch
        if ch in "\n\t" or unicodedata.category(ch) not in _HIDDEN
        else (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        for ch in text
    )


_HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


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


def one_line(message: str) -> str:
    """A block of problems ("what (2 problems):" and one indented line each) as one line."""
    head, *rest = message.splitlines() or [""]
    if not rest:
        return head
    return head.rstrip(":") + ": " + "; ".join(line.strip() for line in rest if line.strip())


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# Instants shown to people: in the reader's own timezone, to the second (`--utc` switches to UTC).
_SHOW_UTC = {"on": False}


def _instant(value: datetime) -> str:
    value = value.replace(microsecond=0)
    if _SHOW_UTC["on"] or value.tzinfo is None:
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    local = value.astimezone()
    return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname() or local.strftime('%z')}"


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return _instant(value)
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)
