"""The per-customer list over time, on real PostgreSQL, through the CLI: switches recorded on two
notices for two customers at different instants (the way the workflow records them: append and
project in one transaction), then `customers subprocessors` at several dates, its refusals, and
the annex (`customers annex`): the names in it, a hostile name escaped, the chain heads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from noticeflow import records, repository
from noticeflow.domain import events as ev
from tests import helpers

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
HOSTILE = '<script>alert("x")</script> & Sons'


def day(n: int) -> datetime:
    return T0 + timedelta(days=n)


def cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "noticeflow.cli", "customers", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "NOTICEFLOW_DATABASE_URL": database_url},
    )


def listed(database_url: str, customer: str, at: str) -> list[dict[str, object]]:
    run = cli(database_url, "subprocessors", customer, "--at", at, "--json")
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)["subprocessors"]


def names(database_url: str, customer: str, at: str) -> list[str]:
    return [str(entry["subprocessor"]) for entry in listed(database_url, customer, at)]


async def record(pool: asyncpg.Pool, stream: str, key: str, event: ev.Event, at: datetime) -> None:
    async with pool.acquire() as connection, connection.transaction():
        await records.record_one(connection, stream, key, event, at)


def switch(on: bool, customer: str, name: str) -> ev.Event:
    if on:
        return ev.SubprocessorEnabled(customer_id=customer, subprocessor=name, because="opted_in")
    return ev.SubprocessorDisabled(customer_id=customer, subprocessor=name, because="excluded")


@pytest.fixture
async def history(pool: asyncpg.Pool) -> asyncpg.Pool:
    """Notice a (OpenAI) and notice b (a hostile name): acme on a from day 1 and off from day 9,
    on b from day 6; globex on a from day 4. initech erased."""
    await repository.upsert_customers(pool, helpers.customers())
    a = helpers.notice(T0, notice_id="annex-a", transfer_mechanism="SCCs 2021, Module 3")
    b = helpers.notice(
        T0, notice_id="annex-b", subprocessor=HOSTILE, subprocessor_location="Iceland",
        purpose="Backups <b>bold</b>",
    )  # fmt: skip
    for spec in (a, b):
        stream = f"notice-{spec.notice_id}"
        created = ev.NoticeCreated(spec=spec, author="alice", text_sha256=spec.text_sha256())
        await record(pool, stream, "created", created, T0)
    await record(pool, "notice-annex-a", "on-acme", switch(True, "acme", a.subprocessor), day(1))
    await record(
        pool, "notice-annex-a", "on-globex", switch(True, "globex", a.subprocessor), day(4)
    )
    await record(pool, "notice-annex-b", "on-acme", switch(True, "acme", HOSTILE), day(6))
    await record(pool, "notice-annex-a", "off-acme", switch(False, "acme", a.subprocessor), day(9))
    await repository.erase_customer(pool, "initech")
    return pool


async def test_the_per_customer_list_over_time(history: asyncpg.Pool, database_url: str) -> None:
    openai = "OpenAI, LLC"
    # before any switch-on: empty, and said so
    empty = cli(database_url, "subprocessors", "acme", "--at", "2026-11-30")
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout.strip() == (
        "no sub-processor from a notice is in use for acme on 2026-11-30T23:59:59.999999Z"
    )
    # a date is the end of that day (UTC): the switch-on at 09:00 on day 1 counts on that date
    assert names(database_url, "acme", "2026-12-01") == []
    assert names(database_url, "acme", "2026-12-02") == [openai]
    assert names(database_url, "acme", "2026-12-02T08:59:59Z") == []
    assert names(database_url, "acme", "2026-12-02T09:00:00Z") == [openai]
    assert names(database_url, "acme", "2026-12-07") == [HOSTILE, openai]
    # the switch-off removes it from that instant on
    assert names(database_url, "acme", "2026-12-10T08:59:59Z") == [HOSTILE, openai]
    assert names(database_url, "acme", "2026-12-10T09:00:00Z") == [HOSTILE]
    assert names(database_url, "acme", "2027-06-01") == [HOSTILE]
    # the other customer has its own list
    assert names(database_url, "globex", "2026-12-04") == []
    assert names(database_url, "globex", "2026-12-05") == [openai]
    assert names(database_url, "hooli", "2027-06-01") == []

    # details from the enabling notice's spec; the heads pin each stream read
    run = cli(database_url, "subprocessors", "acme", "--at", "2026-12-08T10:00:00+01:00", "--json")
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["at"] == "2026-12-08T09:00:00Z"
    entry = next(e for e in data["subprocessors"] if e["notice_id"] == "annex-a")
    assert entry == {
        "subprocessor": openai,
        "purpose": "Interactive chatbots and virtual assistants for performance management",
        "location": "United States",
        "data_categories": ["user content", "text-based inquiries"],
        "transfer_mechanism": "SCCs 2021, Module 3",
        "services": ["assistant"],
        "since": "2026-12-02T09:00:00Z",
        "notice_id": "annex-a",
    }
    stored = {
        row["stream_id"]: (row["version"], bytes(row["head_hash"]).hex())
        for row in await history.fetch("SELECT stream_id, version, head_hash FROM event_streams")
    }
    assert {h["stream_id"]: (h["version"], h["head_hash"]) for h in data["heads"]} == {
        s: stored[s] for s in ("notice-annex-a", "notice-annex-b")
    }
    assert all(h["signed"] for h in data["heads"])

    # after the last switch, the list equals the records' projection of the same events
    now = names(database_url, "acme", "2099-12-31")
    projected = await history.fetch(
        "SELECT subprocessor FROM subprocessor_enablements WHERE customer_id = 'acme' AND enabled"
    )
    assert sorted(now) == sorted(row["subprocessor"] for row in projected)

    # the human table names each, with the heads
    table = cli(database_url, "subprocessors", "acme", "--at", "2026-12-07")
    assert table.returncode == 0, table.stderr
    assert openai in table.stdout and HOSTILE in table.stdout
    assert "notice-annex-a@" in table.stdout


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["acme", "--at", "yesterday"], "--at: not an ISO date"),
        (["acme", "--at", "2026-12-01T09:00:00"], "--at: an instant needs its offset"),
        (["nobody"], "no customer 'nobody'"),
        (["initech"], "customer 'initech' was erased for good on"),
    ],
)
async def test_refusals_are_one_clear_line(
    history: asyncpg.Pool, database_url: str, args: list[str], words: str
) -> None:
    for command in (["subprocessors"], ["annex", "--out", "/tmp/annex-refused.html"]):
        run = cli(database_url, *command, *args)
        assert run.returncode == 2, run
        assert words in run.stderr
        assert len(run.stderr.strip().splitlines()) == 1, run.stderr
        assert "Traceback" not in run.stderr
    assert not Path("/tmp/annex-refused.html").exists()


async def test_the_annex_names_them_escapes_them_and_pins_the_heads(
    history: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "annex.html"
    run = cli(database_url, "annex", "acme", "--at", "2026-12-08", "--out", str(out))
    assert run.returncode == 0, run.stderr
    assert "2 sub-processor(s) in use for acme" in run.stdout
    html = out.read_text()
    assert "OpenAI, LLC" in html and "SCCs 2021, Module 3" in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; Sons" in html
    assert "<script" not in html and "<b>bold" not in html
    assert "2026-12-08T23:59:59.999999Z" in html
    assert "@media print" in html
    # self-contained: no external assets
    assert "http://" not in html and "https://" not in html and "<link" not in html
    head = await history.fetchrow(
        "SELECT version, head_hash FROM event_streams WHERE stream_id = 'notice-annex-b'"
    )
    assert bytes(head["head_hash"]).hex() in html

    # as of a date before anything: the annex says the list is empty
    before = tmp_path / "before.html"
    run = cli(database_url, "annex", "globex", "--at", "2026-12-01", "--out", str(before))
    assert run.returncode == 0, run.stderr
    assert "no sub-processor from a notice is in use for globex" in before.read_text()

    # a place it cannot write: one line
    run = cli(database_url, "annex", "acme", "--out", str(tmp_path / "missing" / "annex.html"))
    assert run.returncode == 2 and "--out: cannot write" in run.stderr
