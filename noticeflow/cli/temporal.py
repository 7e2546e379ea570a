"""`noticeflow temporal setup`: make a Temporal namespace ready for noticeflow — registered when
missing (self-hosted clusters), with the search attributes of the public contract (the phase,
sub-processor, dates and open objections the Web UI and `notice list` filter on). The same
connection settings as the worker, web and CLI: NOTICEFLOW_TEMPORAL_ADDRESS and _NAMESPACE, an
API key (NOTICEFLOW_TEMPORAL_API_KEY) or mTLS client certificates (NOTICEFLOW_TEMPORAL_TLS_CERT
and _KEY)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from noticeflow.cli.common import DataDirOpt, JsonOpt, emit, run, settings_for

app = typer.Typer(no_args_is_help=True, help="The Temporal namespace noticeflow runs in.")


@app.command("setup")
def temporal_setup(
    namespace: Annotated[
        str | None,
        typer.Option("--namespace", help="Default: NOTICEFLOW_TEMPORAL_NAMESPACE."),
    ] = None,
    retention_days: Annotated[
        int,
        typer.Option(
            "--retention-days",
            min=1,
            max=3650,
            help="Days Temporal keeps a completed notice's history, when it creates the"
            " namespace (the evidence is kept in PostgreSQL, not there).",
        ),
    ] = 30,
    create: Annotated[
        bool,
        typer.Option("--create/--no-create", help="Register the namespace when it is missing."),
    ] = True,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register the namespace (when missing) and its search attributes; safe to run again."""
    from noticeflow.temporal import setup_namespace

    settings = settings_for(data_dir)
    done = run(
        setup_namespace(settings, namespace or settings.temporal_namespace, retention_days, create)
    )
    emit(done, as_json, lambda: _words(done))


def _words(done: dict[str, Any]) -> str:
    where = f"namespace {done['namespace']} at {done['address']}"
    lines = [
        f"{where}: created, keeping completed histories {done['retention_days']} days"
        if done["namespace_created"]
        else f"{where}: exists (completed histories kept {done['retention_days']} days)"
    ]
    added = done["search_attributes_added"]
    if added:
        lines.append("search attributes added: " + ", ".join(added))
    present = [name for name in done["search_attributes"] if name not in added]
    if present:
        lines.append("search attributes already there: " + ", ".join(present))
    return "\n".join(lines)
