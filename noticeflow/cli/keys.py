"""`noticeflow keys`: customer keys, wrapped by the key-encryption key."""

from __future__ import annotations

import typer

from noticeflow.cli.common import (
    DataDirOpt,
    JsonOpt,
    database,
    emit,
    fail,
    run,
    settings_for,
)

app = typer.Typer(no_args_is_help=True, help="Customer keys (wrapped by the key-encryption key).")


@app.command("rewrap")
def keys_rewrap(data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Wrap every customer key under the current key-encryption key: keys stored in clear (from
    before wrapping) and keys wrapped by a previous one (after a rotation)."""
    from noticeflow import crypto

    async def go() -> tuple[dict[str, int], dict[str, int]]:
        async with database(settings_for(data_dir)) as pool:
            return await crypto.rewrap_keys(pool), await crypto.unavailable_keks(pool)

    counts, missing = run(go())
    emit(
        counts,
        as_json,
        f"customer keys: {counts['wrapped']} wrapped (were in clear), {counts['rewrapped']}"
        f" re-wrapped under the current key-encryption key, {counts['current']} already current,"
        f" {counts['unavailable']} under a key-encryption key this process does not have",
    )
    if counts["unavailable"]:
        named = ", ".join(f"{kek_id} ({count})" for kek_id, count in missing.items())
        fail(
            f"{counts['unavailable']} customer keys are wrapped by a key-encryption key this"
            f" process does not have ({named or 'key id unknown'}): set it in"
            f" {crypto.KEK_SETTINGS} and run this again",
            1,
        )
