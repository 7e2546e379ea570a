"""`noticeflow notice`: create, show and preview notices, and act on them through the intake."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from noticeflow.cli.common import (
    ByOpt,
    DataDirOpt,
    JsonOpt,
    UtcOpt,
    cell,
    database,
    emit,
    fail,
    parse_instant,
    run,
    services,
    settings_for,
    table,
)
from noticeflow.domain.errors import InputError
from noticeflow.domain.rules import Outcome, Phase

if TYPE_CHECKING:
    from temporalio.client import Client

    from noticeflow.config import Settings


app = typer.Typer(no_args_is_help=True, help="Sub-processor notices.")


@app.command("create")
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


@app.command("list")
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
        lambda: table(
            rows,
            ["notice_id", "phase", "subprocessor", "effective_at", "customers", "open_objections"],
        ),
    )


@app.command("show")
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


@app.command("preview")
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
            f"Deadline: {cell(mail['deadline'])}"
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
    when = cell(result["received_at"])
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


@app.command("approve")
def notice_approve(
    notice_id: Annotated[str, typer.Argument()],
    by: ByOpt,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Approve a draft (four eyes: not by its author); sending starts."""
    _act(data_dir, notice_id, "approve", {"by": by}, as_json=as_json)


@app.command("object")
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


@app.command("request-changes")
def notice_request_changes(
    notice_id: Annotated[str, typer.Argument()],
    customer: Annotated[str, typer.Option("--customer")],
    reason: Annotated[str, typer.Option("--reason", help="The modifications the customer asks.")],
    by: Annotated[str, typer.Option("--by")] = "ops",
    key: KeyOpt = "",
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Record a DORA customer's request for changes: a case that holds activation until it is
    resolved (notice resolve). Only customers whose contract is dora may request changes."""
    payload = {"customer_id": customer, "reason": reason, "by": by, "channel": "cli"}
    _act(data_dir, notice_id, "request_changes", payload, key=key, as_json=as_json)


@app.command("resolve")
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
    """Resolve a customer's open cases (objections, requests for changes): withdrawn, excluded
    or terminated."""
    payload = {"customer_id": customer, "outcome": outcome.value, "by": by, "note": note}
    _act(data_dir, notice_id, "resolve_objection", payload, key=key, as_json=as_json)


@app.command("opt-in")
def notice_opt_in(
    notice_id: Annotated[str, typer.Argument()],
    customer: Annotated[str, typer.Option("--customer")],
    by: Annotated[str, typer.Option("--by")] = "ops",
    key: KeyOpt = "",
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Record a customer's opt-in: on an opt-in notice, or an authorisation from a customer whose
    contract is specific (silence is refusal) or an approval from a dora one."""
    payload = {"customer_id": customer, "by": by, "channel": "cli"}
    _act(data_dir, notice_id, "opt_in", payload, key=key, as_json=as_json)


@app.command("revoke-opt-in")
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


@app.command("postpone")
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


@app.command("cancel")
def notice_cancel(
    notice_id: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option("--reason")],
    by: ByOpt,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Cancel a notice before it takes effect; recipients are told."""
    _act(data_dir, notice_id, "cancel", {"reason": reason, "by": by}, as_json=as_json)


@app.command("resend")
def notice_resend(
    notice_id: Annotated[str, typer.Argument()],
    customer: Annotated[str, typer.Option("--customer")],
    by: Annotated[str, typer.Option("--by")] = "ops",
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Resend the notice to a customer's current contacts (e.g. after a bounce)."""
    _act(data_dir, notice_id, "resend", {"customer_id": customer, "by": by}, as_json=as_json)


@app.command("exclude")
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


@app.command("receipt")
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
            + f" (received {cell(receipt.received_at)})"
        ),
    )


def _change_lines(summary: dict[str, Any]) -> list[str]:
    """What the notice changes, when it is not an addition (replaces, or each field old → new)."""
    kind = summary.get("kind") or "addition"
    if kind == "addition":
        return []
    lines = [f"  change            {kind.replace('_', ' ')}"]
    if summary.get("replaces"):
        lines[0] += f" of {summary['replaces']}"
    for name, old in (summary.get("previous") or {}).items():
        shown = ", ".join(old) if isinstance(old, list) else old
        lines.append(f"    {name}: was {shown}")
    return lines


def _show_text(summary: dict[str, Any]) -> str:
    head = [
        f"notice {summary['notice_id']}: {summary['title']}",
        f"  sub-processor     {summary['subprocessor']}{' (opt-in)' if summary['opt_in'] else ''}",
        *_change_lines(summary),
        f"  phase             {summary['phase']}",
        f"  author/approver   {summary['author']} / {summary['approved_by'] or '-'}",
        f"  effective at      {cell(summary['effective_at'])}",
        f"  window closes at  {cell(summary['window_closes_at'])}",
        f"  counts            {cell(summary['counts'])}",
        "",
    ]
    rows = [
        {
            **row,
            "objection": (
                f"{'changes ' if row['objection']['request'] == 'changes' else ''}"
                f"{row['objection']['status']}{'' if row['objection']['timely'] else ' (late)'}"
            )
            if row["objection"]
            else None,
        }
        for row in summary["customers"]
    ]
    return "\n".join(head) + table(
        rows,
        [
            "customer_id",
            "authorisation",
            "delivery",
            "deadline",
            "objection",
            "opted_in",
            "activated",
            "verdict",
        ],
    )
