"""`noticeflow evidence`: evidence packs for auditors, and the signing key's id."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any

import typer

from noticeflow.cli.common import (
    DataDirOpt,
    JsonOpt,
    database,
    emit,
    fail,
    one_line,
    run,
    scrub,
    settings_for,
)
from noticeflow.domain.errors import InputError

app = typer.Typer(no_args_is_help=True, help="Evidence packs for auditors.")


@app.command("export")
def evidence_export(
    notice_id: Annotated[str, typer.Argument()],
    out: Annotated[Path, typer.Option("--out", help="Directory to write the pack into.")],
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a self-contained, verifiable evidence pack for one notice."""
    from noticeflow.evidence import export_pack

    async def go() -> dict[str, Any]:
        async with database(settings_for(data_dir)) as pool:
            return await export_pack(pool, notice_id, out)

    manifest = run(go())
    emit(
        manifest,
        as_json,
        f"wrote {len(manifest['files'])} files and {MANIFEST_NAME} to {out}"
        f" ({manifest['events']} events, chain head {str(manifest['chain_head'])[:16]}…)",
    )


MANIFEST_NAME = "manifest.json"


@app.command("verify")
def evidence_verify(
    directory: Annotated[Path | None, typer.Argument(help="An exported pack.")] = None,
    notice: Annotated[
        str | None, typer.Option("--notice", help="Check the database instead.")
    ] = None,
    allow_unsigned: Annotated[
        bool,
        typer.Option(
            "--allow-unsigned",
            help="Accept a pack or stream head from before signing, with a warning.",
        ),
    ] = False,
    key_id: Annotated[
        str | None,
        typer.Option(
            "--key-id",
            help="The signer's published key id (`evidence key-id`): only that key is trusted.",
        ),
    ] = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a pack offline, or a notice's events in the database; non-zero if anything is off."""
    from noticeflow import keyring
    from noticeflow.evidence import Verification, verify_database, verify_pack

    if (directory is None) == (notice is None):
        fail("give either a pack DIR or --notice ID")
    if key_id is not None:
        key_id = key_id.strip().lower()  # ids are printed in lower-case hex
        if not key_id:
            fail("--key-id is empty: give the signer's published key id (`evidence key-id`)")
    if directory is not None and not directory.is_dir():
        fail(
            f"{directory} is not a pack: "
            + ("no such directory" if not directory.exists() else "not a directory")
            + " (a pack is the directory `evidence export` wrote)"
        )
    if directory is not None and not keyring.has("signing"):
        # This installation's signing keys, when it has them (an auditor elsewhere: --key-id).
        with contextlib.suppress(InputError):
            keyring.install(keyring.from_settings(settings_for(data_dir), ["signing"]))

    async def go() -> Verification:
        if directory is not None:
            return verify_pack(directory, allow_unsigned=allow_unsigned, key_id=key_id)
        async with database(settings_for(data_dir)) as pool:
            return await verify_database(pool, str(notice), allow_unsigned=allow_unsigned)

    result = run(go())
    if not as_json:
        for warning in result.warnings:
            typer.echo(f"warning: {warning}", err=True)
    if not result.ok:
        if as_json:
            emit(result.as_json(), True, "")
        problems = list(result.problems) or [str(result.problem)]
        if len(problems) == 1:
            fail(f"verification failed: {problems[0]}", 1)
        # Every problem at once, one line each (a customer and a field per line), then the count.
        for problem in problems:
            typer.echo(f"  {scrub(one_line(problem))}", err=True)
        fail(f"verification failed: {len(problems)} problems (listed above)", 1)
    what = "hash chain and files intact" if directory is not None else "hash chain and head intact"
    emit(
        result.as_json(),
        as_json,
        f"verified: {result.events} events, {what}; every customer's outcome follows from them",
    )


@app.command("sign-heads")
def evidence_sign_heads(data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Once, after upgrading to signed heads: check every stream whose head has no signature and
    sign those whose chain and head check out. It vouches for them as they are now (a change made
    before this is not caught): run it right after the upgrade, never to silence a failure."""
    from noticeflow import eventstore

    async def go() -> tuple[int, list[Any]]:
        async with database(settings_for(data_dir)) as pool:
            return await eventstore.sign_unsigned_heads(pool)

    signed, refused = run(go())
    for problem in refused:
        typer.echo(f"NOT signed: {problem.stream_id}: {problem}", err=True)
    emit(
        {"signed": signed, "refused": [str(p.stream_id) for p in refused]},
        as_json,
        f"signed {signed} stream heads; {len(refused)} refused (they fail verification)",
    )
    if refused:
        raise typer.Exit(1)


@app.command("key-id")
def evidence_key_id(data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Print the signing key's id and public key: publish them, so an auditor can check that a
    pack (and its stream head) was signed by this installation (`evidence verify --key-id`)."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from noticeflow import eventstore, keyring

    try:
        keyring.install(keyring.from_settings(settings_for(data_dir), ["signing"]))
    except InputError as error:
        fail(one_line(str(error)))
    keys = eventstore.signing_keys(eventstore.HEAD_KEY_USE)
    current_id, current = keys[0]
    pem = (
        current.public_key()
        .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )
    emit(
        {"key_id": current_id, "public_key_pem": pem, "previous_key_ids": [k for k, _ in keys[1:]]},
        as_json,
        f"signing key id {current_id}\n{pem.rstrip()}",
    )
