"""`noticeflow receipts`: check a customer's signed receipt (a JWS downloaded from its receipt
page) offline, against this installation's keys or a saved JWK Set."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from noticeflow.cli.common import DataDirOpt, JsonOpt, emit, fail, one_line, settings_for
from noticeflow.domain.errors import InputError

app = typer.Typer(no_args_is_help=True, help="Signed receipts of customers' actions.")

MAX_BYTES = 1_000_000  # a receipt is under 1 kB, a JWK Set a few
LABELS = (
    ("receipt_id", "receipt"),
    ("notice_id", "notice"),
    ("customer_id", "customer"),
    ("action", "action"),
    ("channel", "channel"),
    ("received_at", "received at"),
    ("status", "status"),
    ("reason", "reason"),
    ("timely", "timely"),
    ("deadline", "deadline"),
    ("notice_text_sha256", "notice text sha256"),
    ("issued_at", "issued at"),
)


def _read(source: str, what: str) -> bytes:
    """A file's bytes (``-``: standard input), or one line saying why not (exit 2)."""
    if source == "-":
        return sys.stdin.buffer.read(MAX_BYTES + 1)
    path = Path(source)
    try:
        with path.open("rb") as handle:
            return handle.read(MAX_BYTES + 1)
    except FileNotFoundError:
        fail(f"{source}: no such file (give the {what} you saved)")
    except IsADirectoryError:
        fail(f"{source}: a directory, not the {what}")
    except OSError as error:
        fail(f"{source}: cannot read it ({error.strerror or error})")
    raise AssertionError("unreachable")


def _fetch(url: str) -> bytes:
    import httpx

    try:
        answer = httpx.get(url, timeout=15, follow_redirects=True)
    except httpx.HTTPError as error:
        fail(f"--jwks {url}: cannot fetch it ({type(error).__name__}: {one_line(str(error))})")
        raise AssertionError("unreachable") from None
    if answer.status_code != 200:
        fail(f"--jwks {url}: the server answered {answer.status_code}, not a JWK Set")
    return answer.content[: MAX_BYTES + 1]


def _keys(jwks: str | None, data_dir: Path | None) -> tuple[dict[str, bytes], str]:
    """(key id -> public key, where they came from): the given JWK Set only, or this
    installation's receipt keys."""
    from noticeflow import receipts

    if jwks is not None:
        remote = jwks.startswith(("http://", "https://"))
        raw = _fetch(jwks) if remote else _read(jwks, "JWK Set")
        try:
            return receipts.keys_from_jwks(json.loads(raw)), f"the JWK Set {jwks}"
        except (ValueError, UnicodeDecodeError) as error:
            reason = str(error) if not isinstance(error, json.JSONDecodeError) else "not JSON"
            fail(f"--jwks {jwks}: {reason}")
    from noticeflow import keyring

    if not keyring.has("signing"):
        with contextlib.suppress(InputError):  # none here: the caller can give --jwks
            keyring.install(keyring.from_settings(settings_for(data_dir), ["signing"]))
    keys = receipts.public_keys()
    if not keys:
        fail(
            "no keys to check against: give --jwks with the signer's JWK Set (saved from"
            f" {receipts.JWKS_PATH} on its web address), or set NOTICEFLOW_SIGNING_KEY"
        )
    return keys, "this installation's signing keys"


@app.command("verify")
def receipts_verify(
    file: Annotated[str, typer.Argument(help="The downloaded receipt (.jws); - reads stdin.")],
    jwks: Annotated[
        str | None,
        typer.Option(
            "--jwks",
            help="A saved JWK Set (file or URL of /.well-known/noticeflow-receipts.json):"
            " only its keys are trusted. Default: this installation's signing keys.",
        ),
    ] = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check that a receipt is signed by one of the keys and unchanged; non-zero if not."""
    from noticeflow import receipts

    raw = _read(file, "receipt")
    keys, source = _keys(jwks, data_dir)
    try:
        if len(raw) > MAX_BYTES:
            raise receipts.ReceiptProblem("malformed", "not a receipt: far too long")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise receipts.ReceiptProblem("malformed", "not a receipt: not text") from None
        verified = receipts.verify(text, keys)
    except receipts.ReceiptProblem as problem:
        if as_json:
            emit({"valid": False, "problem": problem.kind, "message": str(problem)}, True, "")
            raise typer.Exit(1) from None
        fail(f"{file}: {problem}", 1)
        raise AssertionError("unreachable") from None
    claims = verified.claims
    emit(
        {"valid": True, "key_id": verified.key_id, "receipt": claims},
        as_json,
        lambda: _block(claims, verified.key_id, source),
    )


def _block(claims: dict[str, Any], key_id: str, source: str) -> str:
    lines = [f"valid: signed by key {key_id} ({source}) and unchanged since"]
    width = max(len(label) for _, label in LABELS)
    for name, label in LABELS:
        if name in claims:
            value = claims[name]
            lines.append(f"  {label:<{width}}  {'-' if value is None else value}")
    return "\n".join(lines)
