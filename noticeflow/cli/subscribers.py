"""`noticeflow subscribers`: the e-mail subscribers of the public list (docs/public.md).

`list` shows ids, status, dates and mail counts only; `--show-addresses` (an operator who needs
to find one, e.g. to answer a data-subject request) opens the sealed addresses and says so on
stderr. `erase` takes an id or `--email ADDRESS` (the address is looked up by its keyed hash,
never printed)."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from noticeflow.cli.common import DataDirOpt, JsonOpt, database, emit, run, settings_for, table

app = typer.Typer(
    no_args_is_help=True,
    help="E-mail subscribers of the public sub-processor list: list, erase.",
)


@app.command("list")
def subscribers_list(
    show_addresses: Annotated[
        bool,
        typer.Option("--show-addresses", help="Also open and show each live subscriber's address."),
    ] = False,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every subscriber: id, status, dates, mails sent/pending/failed (no address unless
    --show-addresses)."""
    from noticeflow import subscriptions

    async def go() -> list[dict[str, Any]]:
        async with database(settings_for(data_dir)) as pool:
            return await subscriptions.listing(pool, show_addresses)

    rows = run(go())
    if show_addresses:
        print("showing subscriber addresses (personal data): do not paste them", file=sys.stderr)
    columns = [
        "id", "status", "created_at", "confirmed_at", "ended_at", "ended_by",
        "mails_sent", "mails_pending", "mails_failed",
    ]  # fmt: skip
    if show_addresses:
        columns.append("email")
    emit(rows, as_json, lambda: table(rows, columns) if rows else "no subscribers")


@app.command("erase")
def subscribers_erase(
    subscriber_id: Annotated[
        str | None, typer.Argument(help="The subscriber's id (sub_…, see `subscribers list`).")
    ] = None,
    email: Annotated[
        str | None, typer.Option("--email", help="Find the subscriber by address instead.")
    ] = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Erase a subscriber: its key is deleted, the sealed address and its hash blanked, its
    pending mails cancelled; an id, a status and dates remain."""
    from noticeflow import subscriptions
    from noticeflow.subscriptions import SubscriptionError

    if (subscriber_id is None) == (email is None):
        raise SubscriptionError(["give a subscriber id or --email ADDRESS (one of them)"])
    if subscriber_id is not None:
        subscriptions.check_id(subscriber_id)
    settings = settings_for(data_dir)

    async def go() -> tuple[str | None, bool]:
        async with database(settings) as pool:
            found = subscriber_id
            if email is not None:
                found = await subscriptions.find_by_email(pool, email)
                if found is None:
                    return None, False
            assert found is not None
            return found, await subscriptions.erase(pool, found, "operator")

    found, erased = run(go())
    if found is None:
        raise SubscriptionError(["no live subscriber has that address"])
    emit(
        {"id": found, "erased": erased},
        as_json,
        f"erased subscriber {found}" if erased else f"subscriber {found} was erased already",
    )
