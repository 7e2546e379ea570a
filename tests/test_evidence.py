"""Evidence packs: exported, verified offline, and any altered, removed or reordered event caught."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from noticeflow.domain.signals import Objection
from noticeflow.evidence import export_pack, verify_database, verify_pack
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
    }
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


async def test_the_database_is_checked_too(pack: Path, pool):
    assert (await verify_database(pool, "openai-test")).ok
    async with pool.acquire() as connection:
        await connection.execute("ALTER TABLE events DISABLE TRIGGER events_append_only")
        await connection.execute(
            "UPDATE events SET data = jsonb_set(data::jsonb, '{timely}', 'false')::json"
            " WHERE event_type = 'objection_received'"
        )
        await connection.execute("ALTER TABLE events ENABLE TRIGGER events_append_only")
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
