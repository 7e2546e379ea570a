"""`noticeflow projections`: the read models."""

from __future__ import annotations

import typer

from noticeflow.cli.common import (
    DataDirOpt,
    JsonOpt,
    database,
    emit,
    run,
    settings_for,
)

app = typer.Typer(no_args_is_help=True, help="Records and read models, built from the events.")


@app.command("rebuild")
def projections_rebuild(data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Rebuild the records (what decisions read) and every read model from zero, from the event
    store alone: a record altered behind the product's back is repaired."""
    from noticeflow import projections, records

    async def go() -> tuple[int, int]:
        async with database(settings_for(data_dir)) as pool:
            return await records.rebuild(pool), await projections.rebuild(pool)

    into_records, into_read_models = run(go())
    emit(
        {"events_replayed": into_read_models, "record_events_replayed": into_records},
        as_json,
        f"rebuilt the records from {into_records} events and the read models from"
        f" {into_read_models} events",
    )
