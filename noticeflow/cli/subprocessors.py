"""`noticeflow subprocessors`: the baseline of the public list, and the list itself
(docs/public.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from noticeflow.cli.common import DataDirOpt, JsonOpt, database, emit, run, settings_for, table
from noticeflow.domain.errors import InputError

app = typer.Typer(
    no_args_is_help=True, help="The public sub-processor list: its baseline, and what it says."
)

ReplaceOpt = Annotated[
    bool,
    typer.Option(
        "--replace",
        help="Correct a baseline recorded earlier (only before the first notice is mailed).",
    ),
]


def _by(value: str | None) -> str | None:
    if value is None:
        return None
    from pydantic import TypeAdapter, ValidationError

    from noticeflow.domain.text import SingleLine

    try:
        checked: str = TypeAdapter(SingleLine).validate_python(value)
    except ValidationError as error:
        raise InputError(f"--by: {error.errors()[0]['msg']}") from None
    return checked


@app.command("import")
def subprocessors_import(
    file: Annotated[Path, typer.Argument(help="TOML file: one [[subprocessors]] table each.")],
    by: Annotated[str | None, typer.Option("--by", help="Who imports it (a user name).")] = None,
    replace: ReplaceOpt = False,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Record the sub-processors already in use when noticeflow is adopted, as the baseline
    event of the public list. The same file again changes nothing."""
    from datetime import UTC, datetime

    from noticeflow import public_list
    from noticeflow.domain.public_list import load_baseline_file

    async def go() -> public_list.BaselineOutcome:
        now = datetime.now(UTC)
        entries = load_baseline_file(file, now.date())  # every problem, before any connection
        who = _by(by)
        async with database(settings_for(data_dir)) as pool:
            return await public_list.record_baseline(pool, entries, who, now, replace)

    outcome = run(go())
    if outcome.recorded:
        human = f"recorded baseline {outcome.version}: {outcome.subprocessors} sub-processors"
    else:
        human = (
            f"baseline {outcome.version} with these {outcome.subprocessors} sub-processors is"
            " recorded already: nothing changed"
        )
    emit(outcome.as_json(), as_json, human)


@app.command("show")
def subprocessors_show(
    head: Annotated[
        str | None,
        typer.Option("--head", help="A chain head a reader pinned (<position>:sha256:<hex>)."),
    ] = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The public list as the events say now, or as it was at a pinned chain head (derived
    afresh from the event store, as /subprocessors.json serves it)."""
    from noticeflow import public_list
    from noticeflow.domain.public_list import ChainHead, parse_head

    pinned: ChainHead | None = parse_head(head) if head is not None else None

    async def go() -> dict[str, Any]:
        async with database(settings_for(data_dir)) as pool:
            if pinned is None:
                return (await public_list.derive_through(pool)).as_json()
            listing = await public_list.derive_at(pool, pinned)
            if listing is None:
                raise InputError(
                    f"--head: the event store has no such chain head ({head}): no event at that"
                    " position, or the events up to it differ from what that head names"
                )
            return listing.as_json()

    shown = run(go())

    def human() -> str:
        rows = [
            {
                "name": e["name"],
                "location": e["location"],
                "since": e["in_use_since"],
                "source": e["source"],
            }
            for e in shown["subprocessors"]
        ]
        changes = [
            {
                "notice_id": c["notice_id"],
                "kind": c["kind"],
                "subprocessor": c["subprocessor"],
                "effective_at": c["effective_at"],
                "status": c["status"],
            }
            for c in shown["upcoming_changes"] + shown["past_changes"]
        ]
        head_json = shown["chain_head"]
        return "\n\n".join(
            [
                table(rows, ["name", "location", "since", "source"]),
                table(changes, ["notice_id", "kind", "subprocessor", "effective_at", "status"]),
                f"chain head {head_json['position']}:{head_json['digest']}",
            ]
        )

    emit(shown, as_json, human)
