"""`noticeflow db`: the database schema."""

from __future__ import annotations

import typer

from noticeflow.cli.common import (
    DataDirOpt,
    JsonOpt,
    emit,
    keyed,
    run,
    settings_for,
)

app = typer.Typer(no_args_is_help=True, help="Database schema.")


@app.command("upgrade")
def db_upgrade(data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Apply schema migrations (idempotent): as NOTICEFLOW_OWNER_DATABASE_URL when set, granting
    the runtime role (NOTICEFLOW_DATABASE_URL's) only what it needs."""
    from noticeflow import db

    settings = keyed(settings_for(data_dir))
    applied = run(db.upgrade_as_owner(settings.require_database_url(), settings.owner_database_url))
    emit(
        {"applied": applied},
        as_json,
        f"applied: {', '.join(applied)}" if applied else "schema is up to date",
    )
