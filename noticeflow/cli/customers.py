"""`noticeflow customers`: import, list and erase customers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from noticeflow.cli.common import (
    DataDirOpt,
    JsonOpt,
    _json_default,
    database,
    emit,
    fail,
    run,
    settings_for,
    table,
)

app = typer.Typer(no_args_is_help=True, help="Customers, contacts and contract terms.")


@app.command("import")
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


@app.command("list")
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
        lambda: table(
            rows,
            [
                "customer_id",
                "name",
                "region",
                "services",
                "timezone",
                "window_days",
                "window_unit",
                "authorisation",
                "contacts",
            ],
        ),
    )


@app.command("erase")
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


AtOpt = Annotated[
    str | None,
    typer.Option(
        "--at",
        help="A date (the end of that day, UTC) or an instant with its offset; default: now.",
    ),
]


def _customer_list(customer: str, at: str | None, data_dir: Path | None) -> Any:
    """The customer's list as of ``at``, from the events (noticeflow/annex.py)."""
    from datetime import UTC, datetime

    from noticeflow.annex import customer_list
    from noticeflow.domain.annex import parse_as_of
    from noticeflow.domain.errors import InputError

    try:  # validated before anything is read: one clear line
        instant = parse_as_of(at, datetime.now(UTC))
    except InputError as error:
        fail(str(error), 2)

    async def go() -> Any:
        async with database(settings_for(data_dir)) as pool:
            return await customer_list(pool, customer, instant)

    return run(go())


@app.command("subprocessors")
def customers_subprocessors(
    customer: Annotated[str, typer.Argument(help="Customer id.")],
    at: AtOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The sub-processors in use for a customer on a date, derived from the notices' events
    (`heads` in the JSON pins the streams read)."""
    listing = _customer_list(customer, at, data_dir)
    data = listing.as_json()

    def human() -> str:
        if not listing.subprocessors:
            return listing.empty_message()
        rows = data["subprocessors"]
        heads = ", ".join(
            f"{h['stream_id']}@{h['version']} {h['head_hash'][:16]}" for h in data["heads"]
        )
        return (
            f"sub-processors in use for {customer} on {data['at']}:\n"
            + table(rows, ["subprocessor", "purpose", "location", "data_categories",
                           "transfer_mechanism", "services", "since", "notice_id"])
            + f"\nchain heads read: {heads}"
        )  # fmt: skip

    emit(data, as_json, human)


@app.command("annex")
def customers_annex(
    customer: Annotated[str, typer.Argument(help="Customer id.")],
    out: Annotated[Path, typer.Option("--out", help="The HTML file to write.")],
    at: AtOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write the customer's annex — the sub-processors in use as of a date, with the chain
    heads read — as one self-contained, printable HTML file (print it to PDF in a browser)."""
    from noticeflow.annex import write_annex

    listing = _customer_list(customer, at, data_dir)
    try:
        write_annex(listing, out)
    except OSError as error:
        fail(f"--out: cannot write {out}: {error.strerror or error}", 2)
    count = len(listing.subprocessors)
    emit(
        {"out": str(out), "customer_id": customer, "at": listing.as_json()["at"],
         "subprocessors": count},
        as_json,
        f"wrote {out}: {count} sub-processor(s) in use for {customer} as of"
        f" {listing.as_json()['at']}",
    )  # fmt: skip
