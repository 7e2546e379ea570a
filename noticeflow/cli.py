"""The `noticeflow` command line (Typer). Every command takes --json; bad input exits non-zero
with one readable line."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import asyncpg
import typer
from pydantic import TypeAdapter, ValidationError
from temporalio.client import Client
from temporalio.service import RPCError

from noticeflow import db, repository
from noticeflow.config import Settings, load_settings
from noticeflow.control import default_user, query_status, send_signal, start_notice
from noticeflow.domain.customers import parse_customers_csv
from noticeflow.domain.errors import InputError
from noticeflow.domain.notice import load_notice_file
from noticeflow.domain.rules import Outcome, Phase
from noticeflow.temporal import connect

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
customers_app = typer.Typer(no_args_is_help=True, help="Customers, contacts and contract terms.")
notice_app = typer.Typer(no_args_is_help=True, help="Sub-processor notices.")
projections_app = typer.Typer(no_args_is_help=True, help="Read models.")
evidence_app = typer.Typer(no_args_is_help=True, help="Evidence packs for auditors.")
app.add_typer(db_app, name="db")
app.add_typer(customers_app, name="customers")
app.add_typer(notice_app, name="notice")
app.add_typer(projections_app, name="projections")
app.add_typer(evidence_app, name="evidence")

T = TypeVar("T")
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", envvar="NOTICEFLOW_DATA_DIR", help="Data dir of `noticeflow up`."),
]
ByOpt = Annotated[str, typer.Option("--by", help="Who does this (a user name).")]


class Failure(Exception):
    """A command failed for a reason the user should read; exit code 1."""


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a command; every expected failure becomes one line on stderr and a non-zero exit."""
    try:
        return asyncio.run(coroutine)
    except InputError as error:
        fail(str(error), 2)
    except Failure as error:
        fail(str(error), 1)
    except RPCError as error:
        fail(f"Temporal: {error.message}", 1)
    except (OSError, asyncpg.PostgresError) as error:
        fail(f"cannot reach a required service: {error}", 1)
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
    return load_settings(data_dir)


@asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.create_pool(settings.require_database_url(), max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


@asynccontextmanager
async def services(settings: Settings) -> AsyncIterator[tuple[Client, asyncpg.Pool]]:
    try:
        client = await connect(settings)
    except RuntimeError as error:
        raise Failure(f"cannot reach Temporal at {settings.temporal_address}: {error}") from None
    async with database(settings) as pool:
        yield client, pool


def parse_instant(value: str, option: str) -> datetime:
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


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Apply schema migrations (idempotent)."""
    applied = run(db.upgrade(settings_for(data_dir).require_database_url()))
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

    async def go() -> int:
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InputError(f"{file}: no such file") from None
        customers = parse_customers_csv(text, str(file))
        async with database(settings_for(data_dir)) as pool:
            return await repository.upsert_customers(pool, customers)

    count = run(go())
    emit({"imported": count}, as_json, f"imported {count} customers")


@customers_app.command("list")
def customers_list(data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """List customers (contacts are counted, not shown)."""

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
    """Erase a customer's personal data (contacts and names), keeping the evidence trail."""

    async def go() -> int:
        async with database(settings_for(data_dir)) as pool:
            return await repository.erase_customer(pool, customer)

    erased = run(go())
    emit(
        {"customer_id": customer, "erased_contacts": erased},
        as_json,
        f"erased personal data of {customer} ({erased} contact records)",
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
) -> None:
    """List notices, optionally in one phase."""

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
) -> None:
    """Phase, deadlines, counts and the per-customer table."""

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
                LinkSigner(settings.secret_key, settings.public_url),
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


def _act(
    data_dir: Path | None,
    notice_id: str,
    name: str,
    payload: dict[str, Any],
    check: Callable[[Any], Awaitable[None]] | None = None,
    *,
    as_json: bool = False,
) -> None:
    """Send one signal, wait for the workflow to handle it, and report the outcome."""

    async def go() -> dict[str, Any]:
        async with services(settings_for(data_dir)) as (client, pool):
            if check is not None:
                await check(await query_status(client, notice_id))
            status, rejection = await send_signal(client, pool, notice_id, name, payload)
            if rejection:
                raise Failure(f"{name} rejected: {rejection}")
            return {
                "notice_id": notice_id,
                "signal": name,
                "handled": status is not None,
                "phase": status.phase.value if status else None,
            }

    result = run(go())
    emit(result, as_json, _acted_text(result))


def _acted_text(result: dict[str, Any]) -> str:
    if not result["handled"]:
        return f"{result['signal']} sent; no worker has handled it yet (it will once one runs)"
    return f"{result['signal']}: done; notice {result['notice_id']} is {result['phase']}"


@notice_app.command("approve")
def notice_approve(
    notice_id: Annotated[str, typer.Argument()],
    by: ByOpt,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Approve a draft (four eyes: not by its author); sending starts."""

    async def check(status: Any) -> None:
        if status.phase is not Phase.draft:
            raise InputError(f"notice {notice_id} is {status.phase.value}, not draft")
        if status.author == by:
            raise InputError(
                f"{by} wrote notice {notice_id}; someone else must approve it (four eyes)"
            )

    _act(data_dir, notice_id, "approve", {"by": by}, check, as_json=as_json)


@notice_app.command("object")
def notice_object(
    notice_id: Annotated[str, typer.Argument()],
    customer: Annotated[str, typer.Option("--customer")],
    reason: Annotated[str, typer.Option("--reason")],
    by: Annotated[str, typer.Option("--by")] = "ops",
    key: Annotated[
        str, typer.Option("--key", help="Idempotency key (default: from the content).")
    ] = "",
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Record a customer's objection (received by ops, e.g. by mail or phone)."""
    payload = {
        "customer_id": customer,
        "reason": reason,
        "by": by,
        "channel": "cli",
        "idempotency_key": key,
    }
    _act(data_dir, notice_id, "object", payload, as_json=as_json)


@notice_app.command("resolve")
def notice_resolve(
    notice_id: Annotated[str, typer.Argument()],
    customer: Annotated[str, typer.Option("--customer")],
    outcome: Annotated[Outcome, typer.Option("--outcome")],
    by: ByOpt,
    note: Annotated[str, typer.Option("--note")] = "",
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Resolve a customer's open objection: withdrawn, excluded or terminated."""
    payload = {"customer_id": customer, "outcome": outcome.value, "by": by, "note": note}
    _act(data_dir, notice_id, "resolve_objection", payload, as_json=as_json)


@notice_app.command("opt-in")
def notice_opt_in(
    notice_id: Annotated[str, typer.Argument()],
    customer: Annotated[str, typer.Option("--customer")],
    by: Annotated[str, typer.Option("--by")] = "ops",
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Record a customer's opt-in (opt-in notices)."""
    _act(
        data_dir,
        notice_id,
        "opt_in",
        {"customer_id": customer, "by": by, "channel": "cli"},
        as_json=as_json,
    )


@notice_app.command("revoke-opt-in")
def notice_revoke_opt_in(
    notice_id: Annotated[str, typer.Argument()],
    customer: Annotated[str, typer.Option("--customer")],
    by: Annotated[str, typer.Option("--by")] = "ops",
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a customer's opt-in, before or after activation."""
    payload = {"customer_id": customer, "by": by, "channel": "cli"}
    _act(data_dir, notice_id, "revoke_opt_in", payload, as_json=as_json)


@notice_app.command("postpone")
def notice_postpone(
    notice_id: Annotated[str, typer.Argument()],
    effective_at: Annotated[str, typer.Option("--effective-at", help="New RFC 3339 date-time.")],
    by: ByOpt,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Move the effective date later (never earlier); recipients get an update."""
    when = parse_instant(effective_at, "--effective-at")

    async def check(status: Any) -> None:
        if when <= status.effective_at:
            raise InputError(
                f"--effective-at must be later than the current effective date "
                f"{status.effective_at.isoformat()} (postpone only moves later)"
            )

    _act(
        data_dir,
        notice_id,
        "postpone",
        {"effective_at": when.isoformat(), "by": by},
        check,
        as_json=as_json,
    )


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
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a pack offline, or a notice's events in the database; non-zero if anything is off."""
    from noticeflow.evidence import Verification, verify_database, verify_pack

    if (directory is None) == (notice is None):
        fail("give either a pack DIR or --notice ID")

    async def go() -> Verification:
        if directory is not None:
            return verify_pack(directory)
        async with database(settings_for(data_dir)) as pool:
            return await verify_database(pool, str(notice))

    result = run(go())
    if not result.ok:
        if as_json:
            emit(result.as_json(), True, "")
        fail(f"verification failed: {result.problem}", 1)
    emit(
        result.as_json(), as_json, f"verified: {result.events} events, hash chain and files intact"
    )


# --- text output --------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
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
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
