"""End to end on the dev server, embedded PostgreSQL and aiosmtpd, driving the real `noticeflow` CLI.

A notice with a one-minute window and an effective date two minutes out runs to `active` with exactly
the right customers enabled, every mail in the sink, every step in the event table, no failed
workflow task, and no contact address in the workflow history.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from noticeflow.contracts import workflow_id
from noticeflow.projections import run_projections
from tests import helpers
from worker.main import build_worker, make_deps

CUSTOMERS = """customer_id,name,region,services,contact_emails,timezone
alpha,Alpha Inc,US,assistant,privacy@alpha.example;legal@alpha.example,America/New_York
beta,Beta LLC,US,assistant,dpo@beta.example,America/Chicago
gamma,Gamma Co,US,assistant,privacy@gamma.example,America/Denver
delta,Delta Corp,US,assistant,bounce@delta.invalid,America/Phoenix
epsilon,Epsilon SA,EU,assistant,dpo@epsilon.example,Europe/Paris
"""


class Cli:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    async def __call__(self, *args: str, ok: bool = True) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "noticeflow.cli",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
        )
        out, err = await process.communicate()
        code = process.returncode or 0
        if ok:
            assert code == 0, f"noticeflow {' '.join(args)} failed: {err.decode()}"
        return code, out.decode(), err.decode()

    async def json(self, *args: str) -> Any:
        _, out, _ = await self(*args, "--json")
        return json.loads(out)


@pytest.fixture
async def stack(dev_server_env, database_url, pool, smtp_sink, tmp_path: Path):
    task_queue = f"tq-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "NOTICEFLOW_TEMPORAL_ADDRESS": dev_server_env.client.service_client.config.target_host,
        "NOTICEFLOW_DATABASE_URL": database_url,
        "NOTICEFLOW_SMTP_URL": smtp_sink.url,
        "NOTICEFLOW_TASK_QUEUE": task_queue,
        "NOTICEFLOW_DATA_DIR": str(tmp_path / "data"),
    }
    deps = make_deps(pool, smtp_sink.url, "privacy@vendor.example")
    stop = asyncio.Event()
    projector = asyncio.create_task(run_projections(pool, stop, poll_seconds=0.5))
    async with build_worker(dev_server_env.client, deps, task_queue):
        yield Cli(env), dev_server_env.client
    stop.set()
    await projector


async def wait_phase(cli: Cli, notice_id: str, phase: str, seconds: float) -> dict:
    loop = asyncio.get_running_loop()
    give_up = loop.time() + seconds
    while True:
        shown = await cli.json("notice", "show", notice_id)
        if shown["phase"] == phase or loop.time() > give_up:
            return shown
        await asyncio.sleep(2)


async def test_one_minute_window_runs_to_active(stack, pool, smtp_sink, tmp_path: Path):
    cli, client = stack
    csv_file = tmp_path / "customers.csv"
    csv_file.write_text(CUSTOMERS)
    assert await cli.json("customers", "import", str(csv_file)) == {"imported": 5}

    now = datetime.now(UTC)
    spec = helpers.notice(
        now,
        notice_id="e2e-notice",
        opt_in=False,
        objection_window="PT1M",
        effective_at=(now + timedelta(minutes=2)).isoformat(),
    )
    notice_file = tmp_path / "notice.toml"
    notice_file.write_text(_toml(spec.model_dump(mode="json", exclude={"how_to_object", "body"})))
    assert await cli.json("notice", "create", str(notice_file), "--by", "alice") == {
        "notice_id": "e2e-notice"
    }

    preview = await cli.json("notice", "preview", "e2e-notice", "--customer", "alpha")
    assert preview["to"] == ["privacy@alpha.example", "legal@alpha.example"]
    assert preview["deadline_is_projected"] and "OpenAI, LLC" in preview["text"]
    assert "Alpha Inc" in preview["text"] and "<html>" in preview["html"]
    assert smtp_sink.messages() == []  # a preview sends nothing

    code, _, err = await cli("notice", "approve", "e2e-notice", "--by", "alice", ok=False)
    assert code != 0 and "four eyes" in err and len(err.strip().splitlines()) == 1
    await cli("notice", "approve", "e2e-notice", "--by", "bob")
    shown = await wait_phase(cli, "e2e-notice", "window_open", 30)
    delivery = {c["customer_id"]: c["delivery"] for c in shown["customers"]}
    assert delivery == {
        "alpha": "delivered",
        "beta": "delivered",
        "gamma": "delivered",
        "delta": "undelivered",
    }

    await cli("notice", "object", "e2e-notice", "--customer", "beta", "--reason", "We object")
    code, _, err = await cli(
        "notice", "object", "e2e-notice", "--customer", "zeta", "--reason", "?", ok=False
    )
    assert code != 0 and "unknown customer" in err
    code, _, err = await cli(
        "notice",
        "postpone",
        "e2e-notice",
        "--effective-at",
        "2020-01-01T00:00:00Z",
        "--by",
        "alice",
        ok=False,
    )
    assert code != 0 and "later" in err
    code, _, err = await cli(
        "notice",
        "resolve",
        "e2e-notice",
        "--customer",
        "beta",
        "--outcome",
        "maybe",
        "--by",
        "carol",
        ok=False,
    )
    assert code != 0

    shown = await wait_phase(cli, "e2e-notice", "active", 150)
    assert shown["phase"] == "active"
    await cli(
        "notice",
        "resolve",
        "e2e-notice",
        "--customer",
        "beta",
        "--outcome",
        "excluded",
        "--by",
        "carol",
    )
    await asyncio.sleep(2)
    shown = await cli.json("notice", "show", "e2e-notice")
    rows = {c["customer_id"]: c for c in shown["customers"]}
    assert {c for c, r in rows.items() if r["activated"]} == {"alpha", "gamma"}
    assert rows["beta"]["objection"] == {
        "status": "excluded", "timely": True, "request": "objection",
    }  # fmt: skip
    assert rows["delta"]["delivery"] == "undelivered" and rows["delta"]["deadline"] is None
    assert shown["window_closes_at"] and shown["effective_at"]

    enabled = {
        r["customer_id"]
        for r in await pool.fetch(
            "SELECT customer_id FROM subprocessor_enablements WHERE enabled AND notice_id = 'e2e-notice'"
        )
    }
    assert enabled == {"alpha", "gamma"}

    received = [(m["To"], m["Subject"]) for m in smtp_sink.messages()]
    to = [address for address, _ in received]
    for address in (
        "privacy@alpha.example",
        "legal@alpha.example",
        "dpo@beta.example",
        "privacy@gamma.example",
    ):
        assert any(
            a == address and s.startswith("Notice of a new sub-processor") for a, s in received
        )
    assert "dpo@epsilon.example" not in to and "bounce@delta.invalid" not in to
    assert to.count("privacy@alpha.example") == 2  # the notice and the activation mail
    assert to.count("dpo@beta.example") == 3  # notice, acknowledgement, resolution

    ledger = await pool.fetch("SELECT status FROM deliveries WHERE notice_id = 'e2e-notice'")
    assert {r["status"] for r in ledger} == {"accepted", "failed"}

    types = {
        r["event_type"]
        for r in await pool.fetch(
            "SELECT event_type FROM events WHERE stream_id = 'notice-e2e-notice'"
        )
    }
    assert {
        "notice_created",
        "notice_approved",
        "audience_snapshotted",
        "notice_delivered",
        "notice_undelivered",
        "objection_received",
        "action_rejected",
        "objection_resolved",
        "deemed_acceptance",
        "subprocessor_enabled",
        "phase_changed",
    } <= types

    handle = client.get_workflow_handle(workflow_id("e2e-notice"))
    history = await handle.fetch_history()
    failed = [e for e in history.events if e.HasField("workflow_task_failed_event_attributes")]
    assert failed == []
    await helpers.assert_no_contact_address_in_history(handle, CUSTOMERS)

    listed = await cli.json("notice", "list", "--phase", "active")
    assert [n["notice_id"] for n in listed] == ["e2e-notice"]


async def test_bad_input_gets_one_clear_line(stack, tmp_path: Path):
    cli, _ = stack
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text(
        "customer_id,name,region,services,contact_emails,timezone\nx,X,US,a,nope,Nowhere/Zone\n"
    )
    code, out, err = await cli("customers", "import", str(bad_csv), ok=False)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and "nope" in err and "Nowhere/Zone" in err
    assert len(err.strip().splitlines()) == 1

    notice = tmp_path / "incomplete.toml"
    notice.write_text('title = "Only a title"\n')
    code, _, err = await cli("notice", "create", str(notice), ok=False)
    assert code == 2 and "subprocessor: missing" in err and "effective_at: missing" in err

    code, _, err = await cli("notice", "show", "no-such-notice", ok=False)
    assert code == 2 and "no notice 'no-such-notice'" in err
    assert (await cli.json("customers", "list")) == []


def _toml(data: dict) -> str:
    lines, tables = [], []
    for key, value in data.items():
        if value is None:  # TOML has no null: leave the key out
            continue
        if isinstance(value, dict):
            tables.append(
                f"[{key}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in value.items())
            )
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n\n" + "\n".join(tables)
