"""`noticeflow inbound` (the reply endpoint) and `noticeflow replies` (list, classify): replies to
notice mails (docs/replies.md)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from noticeflow.cli.common import (
    DataDirOpt,
    Failure,
    JsonOpt,
    database,
    emit,
    fail,
    one_line,
    run,
    settings_for,
    table,
)
from noticeflow.domain.errors import InputError

app = typer.Typer(
    no_args_is_help=True,
    help="Replies to notice mails: list them, classify one (objection, opt_in, question).",
)


def inbound(
    host: Annotated[
        str | None,
        typer.Option("--host", help="Address to listen on (NOTICEFLOW_INBOUND_HOST)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            "--port", help="Port (NOTICEFLOW_INBOUND_PORT, default 2526).", min=0, max=65535
        ),
    ] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Run the inbound SMTP endpoint that takes replies to notice mails (needs
    NOTICEFLOW_REPLY_ADDRESS; `noticeflow up` runs it itself)."""
    import asyncio
    import contextlib
    import signal

    from noticeflow import keyring
    from noticeflow.config import install_keys
    from noticeflow.logging import configure_logging
    from noticeflow.replies import inbound as endpoint

    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["inbound_host"] = host
    if port is not None:
        overrides["inbound_port"] = port
    settings = settings_for(data_dir).model_copy(update=overrides)
    problems = []
    if not settings.reply_address:
        problems.append(
            "no reply address: set NOTICEFLOW_REPLY_ADDRESS (e.g. reply@replies.example.com)"
        )
    if not settings.database_url:
        problems.append("no database: set NOTICEFLOW_DATABASE_URL")
    # The link key derives the reply tokens; the key-encryption key opens customers' keys.
    problems += keyring.problems(settings, ("link", "kek"))
    if problems:
        fail("; ".join(problems))
    install_keys(settings, ("link", "kek"))
    configure_logging()

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        started: asyncio.Future[str] = loop.create_future()
        serving = asyncio.create_task(endpoint.serve(settings, stop, started=started))
        try:
            url = await asyncio.wait_for(started, 30)
        except OSError as error:
            raise InputError(
                f"the reply endpoint could not listen on {settings.inbound_host}:"
                f"{settings.inbound_port} ({error.strerror or error})"
            ) from None
        typer.echo(f"noticeflow inbound: taking replies to {settings.reply_address} on {url}")
        await serving

    run(go())


@app.command("list")
def replies_list(
    notice: Annotated[str | None, typer.Option("--notice", help="Only this notice's.")] = None,
    status: Annotated[
        str, typer.Option("--status", help="new (default), classified, rejected or all.")
    ] = "new",
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Replies, newest first, with their own words (quotes and signatures stripped)."""
    from noticeflow.replies import store

    if status not in ("new", "classified", "rejected", "all"):
        fail(f"--status: {status[:20]!r} is none of new, classified, rejected, all")
    settings = settings_for(data_dir)

    async def go() -> list[Any]:
        async with database(settings) as pool:
            return await store.listing(
                pool, notice_id=notice, status=None if status == "all" else status
            )

    found = run(go())
    rows = [r.as_json() for r in found]
    emit(
        rows,
        as_json,
        lambda: (
            table(
                [
                    {
                        **r,
                        "body": " ".join(str(r["body"] or r["reason"] or "").split())[:60],
                        # tried, but its receipt was rejected: it does not bind
                        "classified_as": f"{r['classified_as']} (rejected: {r['receipt_reason']})"
                        if r["status"] == "new" and r["receipt_status"] == "rejected"
                        else r["classified_as"],
                    }
                    for r in rows
                ],
                [
                    "reply_id",
                    "received_at",
                    "notice_id",
                    "customer_id",
                    "status",
                    "classified_as",
                    "body",
                ],
            )
            if rows
            else "no replies"
        ),
    )


@app.command("classify")
def replies_classify(
    reply_id: Annotated[str, typer.Argument(help="The reply (rp-…, see `replies list`).")],
    kind: Annotated[str, typer.Argument(help="objection, opt_in or question.")],
    by: Annotated[str, typer.Option("--by", help="Who classifies it.")] = "ops",
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Classify a reply: an objection or opt-in is recorded with the mail's receipt time and
    judged by the notice's workflow; a question is marked handled."""
    from noticeflow.cli.notice import _temporal
    from noticeflow.control import hand_over
    from noticeflow.replies import store

    settings = settings_for(data_dir)

    async def go() -> dict[str, Any]:
        async with database(settings) as pool:
            try:
                reply, receipt = await store.classify(pool, reply_id, kind, by)
            except store.NotApplicable as error:  # not a typing mistake: this reply's terms
                raise Failure(str(error)) from None
            result: dict[str, Any] = {"reply": reply.as_json(), "receipt": None}
            if receipt is not None:
                client, problem = await _temporal(settings) if receipt.pending else (None, None)
                receipt, pending_because = await hand_over(
                    client, pool, receipt, settings.task_queue, connect_error=problem
                )
                result["receipt"] = {**receipt.as_json(), "pending_because": pending_because}
                # The reply as it stands once its receipt is judged: its receipt_status is the
                # receipt's, and a rejected receipt has made it new again.
                again = await store.get(pool, reply_id)
                result["reply"] = (again or reply).as_json()
            return result

    result = run(go())
    receipt = result["receipt"]
    if receipt is not None and receipt["status"] == "rejected":
        # The intake refused it: the classification does not bind, the reply stays to classify.
        if as_json:
            emit(result, True, "")
        fail(
            f"reply {reply_id}: the {receipt['action']} was rejected:"
            f" {one_line(str(receipt['reason']))} (receipt {receipt['receipt_id']}); the reply is"
            " new again: classify it as what applies (its mail's receipt time is kept)",
            1,
        )
    if receipt is None:
        human = f"reply {reply_id}: a question, marked handled (no action)"
    else:
        human = (
            f"reply {reply_id}: {receipt['action']} received"
            f" {receipt['received_at']:%Y-%m-%d %H:%M:%S} UTC (the mail's receipt time),"
            f" receipt {receipt['receipt_id']}:"
            f" {receipt['status']}"
            + (f" ({one_line(str(receipt['reason']))})" if receipt["reason"] else "")
        )
    emit(result, as_json, human)
