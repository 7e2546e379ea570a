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

app = typer.Typer(no_args_is_help=True, help="Read models.")


@app.command("rebuild")
def projections_rebuild(data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Rebuild every read model from zero, from the event store alone."""
    from noticeflow.projections import rebuild

    async def go() -> int:
        async with database(settings_for(data_dir)) as pool:
            return await rebuild(pool)

    count = run(go())
    emit({"events_replayed": count}, as_json, f"rebuilt the read models from {count} events")
