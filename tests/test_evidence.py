"""Evidence packs: exported, verified offline, and any altered, removed or reordered event caught."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from noticeflow import eventstore as es
from noticeflow import keyring
from noticeflow.domain.errors import InputError
from noticeflow.domain.signals import Objection
from noticeflow.evidence import _csv, auditor_docs, export_pack, verify_database, verify_pack
from tests import helpers


@pytest.fixture
async def pack(pool, smtp_sink, tmp_path: Path) -> Path:
    spec = await helpers.notified_with_objection(
        pool, smtp_sink.url, Objection(customer_id="initech", reason="No")
    )
    out = tmp_path / "pack"
    manifest = await export_pack(pool, spec.notice_id, out)
    assert manifest["events"] == 7  # created, snapshot, 3 delivered, 1 undelivered, objection
    return out


def lines(pack: Path) -> list[str]:
    return (pack / "events.jsonl").read_text().splitlines(keepends=True)


def rewrite_events(pack: Path, new_lines: list[str]) -> None:
    """Tamper the way a careful forger would: fix the manifest's file hash too."""
    (pack / "events.jsonl").write_text("".join(new_lines))
    manifest = json.loads((pack / "manifest.json").read_text())
    import hashlib

    manifest["files"]["events.jsonl"] = hashlib.sha256(
        (pack / "events.jsonl").read_bytes()
    ).hexdigest()
    (pack / "manifest.json").write_text(json.dumps(manifest))


def test_an_untouched_pack_verifies(pack: Path):
    result = verify_pack(pack)
    assert result.ok and result.events == 7
    assert {p.name for p in pack.iterdir()} == {
        "events.jsonl",
        "notice.txt",
        "audience.json",
        "customers.csv",
        "deliveries.csv",
        "report.html",
        "manifest.json",
        "manifest.json.sig",
        "signing-key.pem",
        *auditor_docs(),  # verifying.md, verify_pack.py, events.md: what an auditor needs
    }
    assert {"verifying.md", "verify_pack.py"} <= set(auditor_docs())
    customers = (pack / "customers.csv").read_text()
    assert "initech" in customers and "250 " in customers and "550 " in customers
    assert "umbrella" in (pack / "audience.json").read_text()


def test_an_altered_event_is_named(pack: Path):
    events = lines(pack)
    forged = json.loads(events[4])
    forged["data"]["delivered_at"] = "2020-01-01T00:00:00+00:00"
    events[4] = json.dumps(forged) + "\n"
    rewrite_events(pack, events)
    result = verify_pack(pack)
    assert (
        not result.ok
        and f"version {forged['version']}" in str(result.problem)
        and "altered" in str(result.problem)
    )


def test_a_removed_event_is_caught(pack: Path):
    events = lines(pack)
    rewrite_events(pack, events[:3] + events[4:])
    result = verify_pack(pack)
    assert not result.ok and "version 4" in str(result.problem)


def test_a_removed_last_event_is_caught(pack: Path):
    rewrite_events(pack, lines(pack)[:-1])
    assert "chain head" in str(verify_pack(pack).problem)


def test_reordered_events_are_caught(pack: Path):
    events = lines(pack)
    events[2], events[3] = events[3], events[2]
    rewrite_events(pack, events)
    assert not verify_pack(pack).ok


def test_a_changed_file_is_caught_by_the_manifest(pack: Path):
    (pack / "notice.txt").write_text("We will use whoever we like.\n")
    assert "notice.txt" in str(verify_pack(pack).problem)


async def test_the_database_is_checked_too(pack: Path, pool, owner_database_url):
    assert (await verify_database(pool, "openai-test")).ok
    connection = await asyncpg.connect(owner_database_url)  # only the owner can even try
    try:
        await connection.execute("ALTER TABLE events DISABLE TRIGGER events_append_only")
        await connection.execute(
            "UPDATE events SET data = jsonb_set(data::jsonb, '{timely}', 'false')::json"
            " WHERE event_type = 'objection_received'"
        )
        await connection.execute("ALTER TABLE events ENABLE TRIGGER events_append_only")
    finally:
        await connection.close()
    result = await verify_database(pool, "openai-test")
    assert not result.ok and "version 7" in str(result.problem)


def test_the_cli_exits_non_zero_and_names_the_event(pack: Path):
    ok = subprocess.run(
        [sys.executable, "-m", "noticeflow.cli", "evidence", "verify", str(pack)],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0 and "verified: 7 events" in ok.stdout
    events = lines(pack)
    events[1] = events[1].replace('"audience_snapshotted"', '"audience_snapshoted"')
    rewrite_events(pack, events)
    bad = subprocess.run(
        [sys.executable, "-m", "noticeflow.cli", "evidence", "verify", str(pack)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "first bad event" in bad.stderr and "version 2" in bad.stderr


# --- signatures, paths and cells (issue 10) -------------------------------------------------


def resign(pack: Path, manifest: dict[str, object]) -> None:
    """Write a manifest and sign it with this installation's key: only the check under test fails."""
    body = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    (pack / "manifest.json").write_bytes(body)
    (pack / "manifest.json.sig").write_bytes(es.signing_keys(es.HEAD_KEY_USE)[0][1].sign(body))


def manifest_of(pack: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((pack / "manifest.json").read_text())
    return loaded


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "sub/../../x", "..\\x"])
def test_a_manifest_naming_a_path_outside_the_pack_is_refused(pack: Path, name: str):
    (pack.parent / "x").write_text("outside\n")
    manifest = manifest_of(pack)
    manifest["files"][name] = "0" * 64
    resign(pack, manifest)
    result = verify_pack(pack)
    assert (
        not result.ok
        and "outside the pack" in str(result.problem)
        and repr(name) in str(result.problem)
    )


def test_a_symlink_leading_out_of_the_pack_is_refused(pack: Path, tmp_path: Path):
    outside = tmp_path / "elsewhere.txt"
    outside.write_bytes((pack / "notice.txt").read_bytes())
    (pack / "notice.txt").unlink()
    (pack / "notice.txt").symlink_to(outside)
    result = verify_pack(pack)
    assert not result.ok and "'notice.txt'" in str(result.problem)


def test_an_altered_signed_manifest_is_refused(pack: Path):
    text = (pack / "manifest.json").read_text()
    (pack / "manifest.json").write_text(text.replace('"events": 7', '"events": 8'))
    result = verify_pack(pack)
    assert not result.ok and "manifest.json signature does not match" in str(result.problem)


def test_a_manifest_signed_by_another_key_is_refused(pack: Path):
    other = Ed25519PrivateKey.generate()
    manifest = manifest_of(pack)
    manifest["signing"]["public_key"] = es.public_bytes(other).hex()
    body = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    (pack / "manifest.json").write_bytes(body)
    (pack / "manifest.json.sig").write_bytes(other.sign(body))
    result = verify_pack(pack)  # the key id still names the real key: inconsistent
    assert not result.ok and "not the id of signing.public_key" in str(result.problem)
    manifest["signing"]["key_id"] = keyring.Keyring.key_id(es.public_bytes(other))
    body = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    (pack / "manifest.json").write_bytes(body)
    (pack / "manifest.json.sig").write_bytes(other.sign(body))
    result = verify_pack(pack)
    assert not result.ok and "does not know" in str(result.problem)


def test_without_signing_keys_an_auditor_names_the_signer_by_its_key_id(pack: Path):
    """Elsewhere (no NOTICEFLOW_SIGNING_KEY), the key inside the pack proves nothing by itself:
    the signer's published key id must be given, and a pack re-signed by anyone else fails."""
    published = manifest_of(pack)["signing"]["key_id"]
    before = keyring.installed()
    keyring.install(keyring.Keyring({k: v for k, v in before.keys.items() if k != "signing"}))
    try:
        unnamed = verify_pack(pack)
        assert not unnamed.ok and "--key-id" in str(unnamed.problem)
        assert verify_pack(pack, key_id=published).ok
        other = Ed25519PrivateKey.generate()
        manifest = manifest_of(pack)
        manifest["signing"]["public_key"] = es.public_bytes(other).hex()
        manifest["signing"]["key_id"] = keyring.Keyring.key_id(es.public_bytes(other))
        body = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        (pack / "manifest.json").write_bytes(body)
        (pack / "manifest.json.sig").write_bytes(other.sign(body))
        forged = verify_pack(pack, key_id=published)
        assert not forged.ok and "not by the key id you gave" in str(forged.problem)
    finally:
        keyring.install(before)


def test_an_unsigned_pack_fails_unless_accepted_with_a_warning(pack: Path):
    (pack / "manifest.json.sig").unlink()
    result = verify_pack(pack)
    assert not result.ok and "not signed" in str(result.problem)
    accepted = verify_pack(pack, allow_unsigned=True)
    assert accepted.ok and any("not signed" in w for w in accepted.warnings)


def test_the_head_in_the_pack_is_signed_and_must_be_the_last_event(pack: Path):
    manifest = manifest_of(pack)
    head = manifest["head"]
    assert head["stream_id"] == "notice-openai-test" and head["version"] == 7
    assert head["signature"] and head["key_id"] == manifest["signing"]["key_id"]
    head["hash"] = "00" * 32
    resign(pack, manifest)
    assert "not the last event" in str(verify_pack(pack).problem)
    head["hash"] = json.loads(lines(pack)[-1])["hash"]
    head["signature"] = "00" * 64
    resign(pack, manifest)
    assert "head signature does not match" in str(verify_pack(pack).problem)


def test_an_auditor_checks_the_manifest_without_noticeflow(pack: Path):
    """OpenSSL alone, with the public key shipped in the pack (compare its id with the operator's)."""
    checked = subprocess.run(
        ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "signing-key.pem", "-rawin",
         "-in", "manifest.json", "-sigfile", "manifest.json.sig"],
        cwd=pack, capture_output=True, text=True,
    )  # fmt: skip
    assert checked.returncode == 0 and "Signature Verified Successfully" in checked.stdout
    public = serialization.load_pem_public_key((pack / "signing-key.pem").read_bytes())
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert keyring.Keyring.key_id(raw) == manifest_of(pack)["signing"]["key_id"]


async def test_a_stream_rewritten_by_the_owner_with_its_hashes_recomputed_fails(
    pack: Path, pool, owner_database_url
):
    from tests.test_least_privilege import rewrite

    stream = "notice-openai-test"
    await rewrite(owner_database_url, stream, 7, {"forged": True})
    result = await verify_database(pool, "openai-test")
    assert not result.ok and stream in str(result.problem)
    assert "head signature does not match" in str(result.problem)


async def test_an_unsigned_head_in_the_database_is_a_failure_or_a_warning(
    pack: Path, pool, owner_database_url
):
    connection = await asyncpg.connect(owner_database_url)
    try:
        await connection.execute("UPDATE event_streams SET head_signature = NULL")
    finally:
        await connection.close()
    result = await verify_database(pool, "openai-test")
    assert not result.ok and "head is not signed" in str(result.problem)
    accepted = await verify_database(pool, "openai-test", allow_unsigned=True)
    assert accepted.ok and "head is not signed" in accepted.warnings[0]


def test_csv_cells_that_would_run_as_formulas_are_neutralised():
    address = '=HYPERLINK("http://x","a")@example.com'
    rows: list[dict[str, Any]] = [
        {"customer_id": "c", "email": address, "note": "+1", "other": "-2", "at": "@x"},
        {"customer_id": "\tc", "email": "\rx", "note": ["=a", "b"], "other": 3, "at": None},
    ]
    text = _csv(rows, ["customer_id", "email", "note", "other", "at"])
    cells = [cell for row in csv.reader(io.StringIO(text, newline="")) for cell in row]
    assert "'" + address in cells and "'+1" in cells and "'-2" in cells and "'@x" in cells
    assert "'\tc" in cells and "'\rx" in cells and "'=a;b" in cells and "3" in cells
    assert not [c for c in cells if c and c[0] in "=+-@\t\r"]


def test_no_cell_of_an_exported_csv_starts_a_formula(pack: Path):
    for name in ("customers.csv", "deliveries.csv"):
        cells = [c for row in csv.reader(io.StringIO((pack / name).read_text())) for c in row]
        assert not [c for c in cells if c and c[0] in "=+-@\t\r"], name


SEALED_PREFIXES = ("enc1:", "enc2:")


def csv_cells(pack: Path) -> dict[str, list[dict[str, str]]]:
    """Each CSV of a pack, as rows; none may hold a sealed value (ciphertext shown as data)."""
    tables = {}
    for path in pack.glob("*.csv"):
        text = path.read_text()
        assert not [p for p in SEALED_PREFIXES if p in text], path.name
        tables[path.name] = list(csv.DictReader(io.StringIO(text, newline="")))
    return tables


async def test_who_resolved_a_case_reads_in_clear_and_no_csv_holds_ciphertext(
    pool, smtp_sink, tmp_path: Path
):
    from noticeflow import intake, repository
    from worker.main import make_deps

    spec = await helpers.notified_with_objection(
        pool, smtp_sink.url, Objection(customer_id="initech", reason="No", by="Jane Roe")
    )
    resolution = {"customer_id": "initech", "outcome": "withdrawn", "by": "Olga Ops", "note": "ok"}
    await intake.record(pool, spec.notice_id, "resolve_objection", resolution, channel="cli")
    await helpers.take_intake(make_deps(pool, smtp_sink.url, "privacy@vendor.example"), spec)
    stored = await pool.fetchval("SELECT resolved_by FROM objections WHERE customer_id = 'initech'")
    assert stored.startswith(SEALED_PREFIXES)  # sealed in the records: opened for the pack only

    await export_pack(pool, spec.notice_id, tmp_path / "pack")
    tables = csv_cells(tmp_path / "pack")
    assert set(tables) == {"customers.csv", "deliveries.csv"}
    customers = {row["customer_id"]: row for row in tables["customers.csv"]}
    assert customers["initech"]["resolved_by"] == "Olga Ops"
    assert customers["initech"]["resolution"] == "withdrawn"

    await repository.erase_customer(pool, "initech")
    await export_pack(pool, spec.notice_id, tmp_path / "after")
    tables = csv_cells(tmp_path / "after")
    customers = {row["customer_id"]: row for row in tables["customers.csv"]}
    assert customers["initech"]["resolved_by"] == "[erased]"
    for name, rows in tables.items():
        for row in rows:
            assert "Olga Ops" not in row.values() and "Jane Roe" not in row.values(), name


async def test_a_pack_is_private_whatever_the_umask_and_whatever_was_there(
    pool, smtp_sink, tmp_path: Path
):
    import os
    import stat

    spec = await helpers.notified_with_objection(
        pool, smtp_sink.url, Objection(customer_id="initech", reason="No")
    )
    out = tmp_path / "shared" / "pack"
    out.mkdir(parents=True)
    out.chmod(0o755)  # made before, empty, by someone else's umask
    used = tmp_path / "used"
    used.mkdir()
    (used / "customers.csv").write_text("old")
    with pytest.raises(InputError, match="not an empty directory"):
        await export_pack(pool, spec.notice_id, used)  # its files would not be the pack's
    fresh = tmp_path / "fresh"
    before = os.umask(0o022)
    try:
        for directory in (out, fresh):
            await export_pack(pool, spec.notice_id, directory)
    finally:
        os.umask(before)
    for directory in (out, fresh):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
        files = list(directory.iterdir())
        assert len(files) == 9 + len(auditor_docs()) and all(p.is_file() for p in files)
        loose = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
        assert set(loose.values()) == {"0o600"}, loose
        assert verify_pack(directory).ok


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ("note.txt", "'note.txt'"),
        (".hidden.csv", "'.hidden.csv'"),
        ("sub/", "'sub/'"),
        ("sub/confession.txt", "'sub/'"),
    ],
)
def test_a_file_the_manifest_does_not_list_fails_verification(pack: Path, extra: str, named: str):
    """Anything in a pack that its signed manifest does not list could have been put there by
    anyone: the pack fails, naming it, until it is removed."""
    assert verify_pack(pack).ok
    target = pack / extra
    if extra.endswith("/"):
        target.mkdir()
    else:
        target.parent.mkdir(exist_ok=True)
        target.write_text("The vendor agreed to stop using this sub-processor.\n")
    result = verify_pack(pack)
    assert not result.ok
    assert "not covered by the manifest's signature" in str(result.problem)
    assert named in str(result.problem)
    for name in ("manifest.json", "manifest.json.sig", "signing-key.pem", "events.jsonl"):
        assert repr(name) not in str(result.problem)
    (pack / "sub" / "confession.txt").unlink(missing_ok=True)
    if (pack / "sub").exists():
        (pack / "sub").rmdir()
    else:
        target.unlink()
    assert verify_pack(pack).ok


def test_a_link_the_manifest_does_not_list_fails_verification(pack: Path, tmp_path: Path):
    (tmp_path / "elsewhere").mkdir()
    (pack / "more").symlink_to(tmp_path / "elsewhere")
    result = verify_pack(pack)
    assert not result.ok and "'more'" in str(result.problem)
