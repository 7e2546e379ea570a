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
