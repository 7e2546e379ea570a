"""Re-derived verdicts on a real lifecycle (PostgreSQL, Temporal's time-skipping server, SMTP):
every outcome column flipped behind the product's back is caught by `evidence verify --notice`,
naming the customer and the field; a pack is verified by docs/verify_pack.py, an independent
script that uses only the pack and the documented rules, and it agrees with `verify_pack`."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from noticeflow import eventstore as es
from noticeflow import repository
from noticeflow.contracts import NoticeStatus
from noticeflow.domain.rules import Phase
from noticeflow.evidence import export_pack, verify_database, verify_pack
from tests import helpers
from tests.workflows.test_notice_lifecycle import wait_for
from worker.main import build_worker, make_deps

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "docs" / "verify_pack.py"


@pytest.fixture
async def lifecycle(time_skipping_env, pool, smtp_sink) -> str:
    """The seed notice run to its end: acme opted in, objected late, withdrawn (on); globex opted
    in (on); initech objected in time, upheld (off); umbrella bounced, resent, never opted in."""
    task_queue = f"tq-{uuid.uuid4().hex[:8]}"
    env = time_skipping_env
    async with build_worker(env.client, make_deps(pool, smtp_sink.url, "privacy@vendor.example"),
                            task_queue):  # fmt: skip
        now = await env.get_current_time()
        spec = helpers.notice(now, effective_at=(now + timedelta(days=35)).isoformat())
        await repository.upsert_customers(pool, helpers.customers())
        await repository.create_notice(pool, spec, "alice", now)
        handle = await helpers.start_notice_workflow(env.client, spec, task_queue)
        await handle.signal("approve", {"by": "bob"})
        await wait_for(handle, lambda s: s.phase is Phase.window_open)
        await env.sleep(timedelta(days=5))
        await handle.signal("object", {"customer_id": "initech", "reason": "No AI on our data"})
        await handle.signal("opt_in", {"customer_id": "acme", "by": "Acme DPO"})
        await handle.signal("opt_in", {"customer_id": "globex"})
        await wait_for(handle, lambda s: s.pending_signals == 0 and s.open_objections == 1)
        await env.sleep(timedelta(days=19))  # day 24: past acme's deadline
        await handle.signal("object", {"customer_id": "acme", "reason": "Changed our mind"})
        await handle.signal(
            "resolve_objection", {"customer_id": "initech", "outcome": "excluded", "by": "carol"}
        )
        await wait_for(handle, lambda s: s.pending_signals == 0 and s.open_objections == 1)
        await env.sleep(timedelta(days=3))
        fixed = helpers.CUSTOMERS_CSV.replace("nobody@umbrella.invalid", "privacy@umbrella.example")
        await repository.upsert_customers(pool, helpers.customers(fixed))
        await handle.signal("resend", {"customer_id": "umbrella"})
        await wait_for(handle, lambda s: s.pending_signals == 0 and s.undelivered == 0)
        await env.sleep(timedelta(days=10))
        await wait_for(handle, lambda s: s.phase is Phase.active and s.activated == 2)
        await handle.signal(
            "resolve_objection", {"customer_id": "acme", "outcome": "withdrawn", "by": "carol"}
        )
        result: NoticeStatus = await handle.result()
        assert result.unsettled == 0
    return spec.notice_id


FLIPS = [  # (field as named, customer, table, the SET that flips it, the SET that undoes it)
    ("activated", "globex", "recipients", "activated = NOT activated", "activated = NOT activated"),
    ("opted_in", "globex", "recipients", "opted_in = NOT opted_in", "opted_in = NOT opted_in"),
    ("delivery", "initech", "recipients", "delivery = 'undelivered'", "delivery = 'delivered'"),
    ("deadline", "initech", "recipients", "deadline = deadline + interval '1 day'",
     "deadline = deadline - interval '1 day'"),
    ("verdict", "umbrella", "recipients", "verdict = 'activate'", "verdict = 'declined'"),
    ("settled", "acme", "recipients", "settled = false", "settled = true"),
    ("excluded_at", "acme", "recipients", "excluded_at = now()", "excluded_at = NULL"),
    ("status", "initech", "objections", "status = 'withdrawn'", "status = 'excluded'"),
    ("timely", "initech", "objections", "timely = NOT timely", "timely = NOT timely"),
    ("subprocessor_enablements.enabled", "acme", "subprocessor_enablements",
     "enabled = NOT enabled", "enabled = NOT enabled"),
    ("subprocessor_enablements.since", "acme", "subprocessor_enablements",
     "since = since - interval '1 day'", "since = since + interval '1 day'"),
    ("subprocessor_enablements names notice", "acme", "subprocessor_enablements",
     "since = since + interval '1 year', notice_id = 'a-later-notice'",
     "since = since - interval '1 year', notice_id = (SELECT notice_id FROM notices LIMIT 1)"),
    # the frozen audience's terms: a projection of the snapshot event, which carries them
    ("window_days", "globex", "recipients", "window_days = coalesce(window_days, 0) + 1000",
     "window_days = nullif(window_days - 1000, 0)"),
    ("region", "initech", "recipients", "region = region || 'x'", "region = left(region, -1)"),
    # the notice's own record, which the workflow and the intake read
    ("phase", "notice", "notices", "phase = 'cancelled'", "phase = 'active'"),
    ("approved_by", "notice", "notices", "approved_by = 'mallory'", "approved_by = 'bob'"),
]  # fmt: skip


def verify_notice(notice_id: str, database_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "noticeflow.cli", "evidence", "verify", "--notice", notice_id],
        capture_output=True,
        text=True,
        env={**os.environ, "NOTICEFLOW_DATABASE_URL": database_url},
    )


def export_cli(notice_id: str, out: Path, database_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "noticeflow.cli",
            "evidence",
            "export",
            notice_id,
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "NOTICEFLOW_DATABASE_URL": database_url},
    )


async def test_every_flipped_outcome_column_is_caught_naming_customer_and_field(
    lifecycle: str, pool, database_url, owner_database_url, tmp_path
):
    ok = verify_notice(lifecycle, database_url)
    assert ok.returncode == 0, ok.stderr
    assert "every customer's outcome follows" in ok.stdout
    owner = await asyncpg.connect(owner_database_url)  # only the owner can write the records
    try:
        for field, customer, table, flip, undo in FLIPS:
            where = "notice_id = $1" if table == "notices" else "customer_id = $1"
            key = lifecycle if table == "notices" else customer
            changed = await owner.execute(f"UPDATE {table} SET {flip} WHERE {where}", key)
            assert changed == "UPDATE 1", (field, changed)
            bad = verify_notice(lifecycle, database_url)
            await owner.execute(f"UPDATE {table} SET {undo} WHERE {where}", key)
            assert bad.returncode == 1, (field, bad.stdout, bad.stderr)
            assert "Traceback" not in bad.stderr
            who = f"notice {lifecycle}:" if table == "notices" else f"customer {customer}:"
            named = [line for line in bad.stderr.splitlines() if who in line]
            assert any(f" {field} is " in line or f" {field} " in line for line in named), (
                field,
                bad.stderr,
            )
            assert (await verify_database(pool, lifecycle)).ok, field  # undone: clean again
        # A pack is signed only over records that follow from the events.
        await owner.execute(
            "UPDATE recipients SET opted_in = NOT opted_in WHERE customer_id = 'globex'"
        )
        refused = export_cli(lifecycle, tmp_path / "refused", database_url)
        await owner.execute(
            "UPDATE recipients SET opted_in = NOT opted_in WHERE customer_id = 'globex'"
        )
        assert refused.returncode != 0 and "Traceback" not in refused.stderr
        assert "do not follow from its events" in refused.stderr
        assert "customer globex: opted_in" in refused.stderr
        assert not (tmp_path / "refused").exists()
    finally:
        await owner.close()


# --- the pack, verified by the independent script (docs/verify_pack.py, shipped in the pack) -----


def published_key_id() -> str:
    return es.signing_keys(es.HEAD_KEY_USE)[0][0]


def script(pack: Path) -> subprocess.CompletedProcess[str]:
    """The pack's own copy of the script, run outside the repository, on the pack alone."""
    return subprocess.run(
        [sys.executable, str(pack / "verify_pack.py"), str(pack), "--key-id", published_key_id()],
        capture_output=True,
        text=True,
        cwd=pack.parent,
    )


def resign(pack: Path, changed: list[str]) -> None:
    """What an insider holding the signing key could do: new file hashes, a new manifest
    signature (only the derivation can then tell that the contents do not follow the rules)."""
    manifest = json.loads((pack / "manifest.json").read_text())
    for name in changed:
        manifest["files"][name] = hashlib.sha256((pack / name).read_bytes()).hexdigest()
    body = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    (pack / "manifest.json").write_bytes(body)
    (pack / "manifest.json.sig").write_bytes(es.signing_keys(es.HEAD_KEY_USE)[0][1].sign(body))


def rechain(pack: Path, events: list[dict]) -> None:
    """Recompute every hash and sign the new head (the insider again), then re-sign the pack."""
    previous = es.GENESIS
    for event in events:
        event["prev_hash"] = previous.hex()
        previous = es.event_hash(
            previous,
            stream_id=event["stream_id"],
            version=event["version"],
            event_id=uuid.UUID(event["event_id"]),
            event_type=event["event_type"],
            schema_version=event["schema_version"],
            data_text=es.canonical(event["data"]),
            occurred_at=datetime.fromisoformat(event["occurred_at"]),
        )
        event["hash"] = previous.hex()
    (pack / "events.jsonl").write_text(
        "".join(json.dumps(e, sort_keys=True) + "\n" for e in events)
    )
    manifest = json.loads((pack / "manifest.json").read_text())
    head = manifest["head"]
    signature, _ = es.sign_head(head["stream_id"], head["version"], previous)
    assert signature is not None
    head.update(hash=previous.hex(), signature=signature.hex())
    manifest["chain_head"] = previous.hex()
    (pack / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    resign(pack, ["events.jsonl"])


def read_events(pack: Path) -> list[dict]:
    return [json.loads(line) for line in (pack / "events.jsonl").read_text().splitlines()]


def rewrite_csv(pack: Path, customer: str, column: str, value: str) -> None:
    rows = list(csv.DictReader(io.StringIO((pack / "customers.csv").read_text(), newline="")))
    for row in rows:
        if row["customer_id"] == customer:
            row[column] = value
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    (pack / "customers.csv").write_text(out.getvalue())
    resign(pack, ["customers.csv"])


async def test_the_independent_script_verifies_the_pack_and_agrees_with_noticeflow(
    lifecycle: str, pool, tmp_path: Path
):
    fresh = tmp_path / "pack"
    await export_pack(pool, lifecycle, fresh)
    source = (fresh / "verify_pack.py").read_text()
    assert "import noticeflow" not in source and "from noticeflow" not in source
    assert (fresh / "verifying.md").read_text() == (ROOT / "docs" / "verifying.md").read_text()
    rows = {
        r["customer_id"]: r
        for r in csv.DictReader(io.StringIO((fresh / "customers.csv").read_text()))
    }
    assert {c: r["ground"] for c, r in rows.items()} == {
        "acme": "opted_in", "globex": "opted_in", "initech": "excluded", "umbrella": "declined",
    }  # fmt: skip
    # umbrella bounced, then was resent to its fixed address: its row shows both mailings, the
    # bounce first, then the accepted one (not only the bounce, as before)
    replies = rows["umbrella"]["smtp_replies"]
    assert replies.index("failed") < replies.index("accepted"), replies
    assert len(rows["umbrella"]["message_ids"].split(";")) == 2, rows["umbrella"]

    passed = script(fresh)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "verified:" in passed.stdout and verify_pack(fresh).ok

    def copy(name: str) -> Path:
        target = tmp_path / name
        shutil.copytree(fresh, target)
        return target

    # A CSV cell altered (and the pack re-signed): both name the customer and the column.
    cell = copy("cell")
    rewrite_csv(cell, "globex", "activated", "False")
    ours, theirs = verify_pack(cell), script(cell)
    assert not ours.ok and theirs.returncode == 1
    for said in (str(ours.problems), theirs.stdout):
        assert "customer globex: activated is False in customers.csv" in said, said

    # An event altered: the chain breaks at that event, for both.
    event = copy("event")
    events = (event / "events.jsonl").read_text().splitlines(keepends=True)
    forged = json.loads(events[-1])
    forged["data"]["customer_id"] = "hooli"
    events[-1] = json.dumps(forged, sort_keys=True) + "\n"
    (event / "events.jsonl").write_text("".join(events))
    resign(event, ["events.jsonl"])
    ours, theirs = verify_pack(event), script(event)
    version = f"version {forged['version']}"
    assert not ours.ok and version in str(ours.problem) and "altered" in str(ours.problem)
    assert theirs.returncode == 1 and version in theirs.stdout and "altered" in theirs.stdout

    # A history rewritten by an insider holding the signing key (hashes, head and manifest all
    # re-signed): initech's timely objection recorded as late. The chain passes; the rules do not.
    history = copy("history")
    events_json = read_events(history)
    for e in events_json:
        if e["event_type"] == "objection_received" and e["data"]["customer_id"] == "initech":
            e["data"]["timely"] = False
    rechain(history, events_json)
    ours, theirs = verify_pack(history), script(history)
    assert not ours.ok and theirs.returncode == 1
    assert any(p.startswith("customer initech:") and "timely" in p for p in ours.problems)
    assert any(
        line.startswith("customer initech:") and "timely" in line
        for line in theirs.stdout.splitlines()
    ), theirs.stdout

    # The same insider switching a customer on before its deadline: named by both.
    early = copy("early")
    events_json = read_events(early)
    enabled = next(
        e for e in events_json
        if e["event_type"] == "subprocessor_enabled" and e["data"]["customer_id"] == "globex"
    )  # fmt: skip
    delivered = next(
        e for e in events_json
        if e["event_type"] == "notice_delivered" and e["data"]["customer_id"] == "globex"
    )  # fmt: skip
    delivered["data"]["deadline"] = (
        datetime.fromisoformat(enabled["occurred_at"]) + timedelta(days=1)
    ).isoformat()
    rechain(early, events_json)
    ours, theirs = verify_pack(early), script(early)
    assert any("customer globex: switched on" in p and "before its deadline" in p
               for p in ours.problems), ours.problems  # fmt: skip
    assert "customer globex: switched on" in theirs.stdout, theirs.stdout


def test_the_auditor_documents_ship_with_an_installed_package():
    """noticeflow/pack_docs holds links to docs/ (package data `pack_docs/*`: a wheel carries them
    as files), so export_pack finds them wherever noticeflow is installed."""
    from noticeflow.evidence import AUDITOR_DOCS, auditor_docs

    shipped = ROOT / "noticeflow" / "pack_docs"
    for name in AUDITOR_DOCS:
        assert (shipped / name).resolve() == (ROOT / "docs" / name).resolve(), name
    assert set(auditor_docs()) == set(AUDITOR_DOCS)
