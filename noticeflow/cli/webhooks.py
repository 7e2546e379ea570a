"""`noticeflow webhooks`: signed event deliveries to other systems (docs/webhooks.md)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from noticeflow.cli.common import (
    DataDirOpt,
    JsonOpt,
    database,
    emit,
    fail,
    run,
    settings_for,
    table,
)

app = typer.Typer(
    no_args_is_help=True,
    help="Webhooks: notice events POSTed, signed (Standard Webhooks), to other systems.",
)

EVENTS_HELP = (
    "Events to deliver, comma-separated or repeated: notice.sent, notice.postponed,"
    " notice.cancelled, subprocessor.enabled, subprocessor.disabled, objection.received"
    " (default: all)."
)
IdArg = Annotated[str, typer.Argument(help="The webhook's id (wh_…, see `webhooks list`).")]


@app.command("add")
def webhooks_add(
    url: Annotated[str, typer.Argument(help="Where to POST (https://…); public addresses only.")],
    events: Annotated[list[str] | None, typer.Option("--events", help=EVENTS_HELP)] = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Subscribe URL to events; prints the signing secret (shown only now). A URL already
    subscribed is refused: remove it first."""
    from noticeflow import webhooks

    settings = settings_for(data_dir)
    allow = settings.webhooks_allow_private

    async def go() -> tuple[Any, str]:
        # Every problem of the input at once, before keys or the database are touched.
        _, problems = await webhooks.validate(url, events, allow)
        if problems:
            raise webhooks.WebhookError(webhooks.problem_block("cannot add the webhook", problems))
        async with database(settings) as pool:
            return await webhooks.add(pool, url, events, allow)

    subscription, secret = run(go())
    emit(
        {
            "id": subscription.subscription_id,
            "url": subscription.url,
            "events": subscription.events,
            "secret": secret,
            "created_at": subscription.created_at,
        },
        as_json,
        f"added webhook {subscription.subscription_id}: {', '.join(subscription.events)}\n"
        f"secret: {secret}\n"
        "Keep the secret now: it is not shown again. Receivers verify each request's"
        " webhook-signature with it (docs/webhooks.md).",
    )


@app.command("list")
def webhooks_list(
    include_removed: Annotated[
        bool, typer.Option("--all", help="Also the removed webhooks.")
    ] = False,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every webhook with its deliveries so far (pending, delivered, failed); no secrets."""
    from noticeflow import webhooks
    from noticeflow.config import redact_url

    async def go() -> list[dict[str, Any]]:
        async with database(settings_for(data_dir)) as pool:
            return await webhooks.listing(pool, include_removed)

    rows = run(go())
    shown = [{**row, "url": redact_url(row["url"])} for row in rows]
    columns = ["id", "url", "events", "pending", "delivered", "failed", "last_attempt_at"]
    if include_removed:
        columns.append("removed_at")
    emit(shown, as_json, lambda: table(shown, columns))


@app.command("remove")
def webhooks_remove(
    subscription_id: IdArg, data_dir: DataDirOpt = None, as_json: JsonOpt = False
) -> None:
    """Stop a webhook: nothing more is POSTed to it; its pending deliveries are cancelled."""
    from noticeflow import webhooks

    webhooks.check_id(subscription_id)  # before keys or the database

    settings = settings_for(data_dir)

    async def go() -> tuple[bool, int, bool]:
        async with database(settings) as pool:
            removed, cancelled = await webhooks.remove(pool, subscription_id)
        return removed, cancelled, await _end_workflow(settings, subscription_id)

    removed, cancelled, ended = run(go())
    emit(
        {
            "id": subscription_id,
            "removed": True,
            "was_live": removed,
            "cancelled": cancelled,
            "workflow_woken": ended,
        },
        as_json,
        f"removed webhook {subscription_id} ({cancelled} pending deliveries cancelled)"
        if removed
        else f"webhook {subscription_id} was already removed",
    )


async def _end_workflow(settings: Any, subscription_id: str) -> bool:
    """Best effort: wake the removed webhook's delivery workflow so that it ends now. Without
    Temporal it ends at its next wake instead; it POSTs nothing more either way (it reads the
    subscription before every POST)."""
    import asyncio

    from noticeflow import webhooks
    from noticeflow.temporal import connect

    try:
        client = await asyncio.wait_for(connect(settings), timeout=5)
    except Exception:
        return False
    return await webhooks.wake_removed(client, subscription_id)


@app.command("test")
def webhooks_test(
    subscription_id: IdArg, data_dir: DataDirOpt = None, as_json: JsonOpt = False
) -> None:
    """POST a signed webhook.test event now and say what the receiver answered (not retried;
    recorded as a delivery). Exit 1 when it was not accepted."""
    from noticeflow import webhooks

    webhooks.check_id(subscription_id)
    settings = settings_for(data_dir)

    async def go() -> Any:
        async with database(settings) as pool:
            outcome = await webhooks.send_test(
                pool, subscription_id, settings.webhooks_allow_private
            )
        return outcome

    outcome = run(go())
    data = {
        "id": subscription_id,
        "delivered": outcome.outcome == "delivered",
        "status_code": outcome.status_code,
        "error": outcome.error,
        "duration_ms": outcome.duration_ms,
    }
    if outcome.outcome == "delivered":
        emit(
            data,
            as_json,
            f"delivered: HTTP {outcome.status_code} in {outcome.duration_ms} ms",
        )
        return
    if as_json:
        emit(data, True, "")
        raise typer.Exit(1)
    fail(f"not delivered: {outcome.error} (after {outcome.duration_ms} ms)", 1)
