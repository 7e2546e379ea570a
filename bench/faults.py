"""Fault runs on the real stack: does anything get lost, repeated, misjudged or wedged?

    python bench/faults.py [--only a,b,c,d1,d2,d3] [--markdown] [--keep DIR]

Each scenario runs on a fresh stack in its own directory (bench/intake.py's ``Stack``: embedded
PostgreSQL, the Temporal dev server, an SMTP sink and ``noticeflow worker``, each its own
process), injects its faults, and prints one row:

    scenario | mails expected | mails accepted at the sink | duplicates | actions expected |
    actions recorded (receipts judged) | wedged | notes

* a  — the worker is SIGKILLed three times during a 5,000-customer send (a quarter, half and three
  quarters of the way, each time mid-batch, each time after the previous kill's send resumed) and
  started again; objections are submitted while it is dead.
* b  — the Temporal dev server (SQLite file) is stopped for 50 s while the window is open; actions
  are submitted before, during (the CLI itself, ``control.submit`` with no client, and a long-lived
  client whose server went away) and after. The ones from the outage must be judged through the
  worker's sweeper alone before anything else is submitted.
* c  — PostgreSQL is restarted (``pg_ctl stop -m fast``, 5 s down, start) during the send, during a
  burst of objections being judged, and during the activation round.
* d1 — the SMTP server greylists (``greylist-N`` local parts: 451 the first N times) and always
  defers (``tempfail-`` local parts), with the rules of noticeflow/sink.py; give-up set to 40 s.
* d2 — the SMTP server drops connections: without a reply after taking a message's DATA (every
  50th), and at RCPT (every 37th).
* d3 — a slow SMTP server: 0.2 s before every reply to DATA, and 35 s for two addresses
  (``slow-35``: longer than the mailer's 30 s client timeout); give-up set to 90 s.

Mails are matched by Message-ID, computed independently with ``noticeflow.mail.message_id`` for
every mail the run should cause (the notice to every contact a server can take, a confirmation per
accepted objection, an activation mail per activated customer). A duplicate is the same recipient
and kind of mail accepted twice: under the original Message-ID, or under another (an unexpected id).

The sink used here is this file run with ``--sink`` (it takes RCPT with noticeflow/sink.py's
greylist/tempfail/.invalid rules and records ``message-id recipient how`` per DATA it took).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ siblings
from intake import Stack, stop_process

from noticeflow import control
from noticeflow.binaries import binary
from noticeflow.config import Settings
from noticeflow.crypto import load_keys
from noticeflow.mail import message_id

MAIL_FROM = Settings.model_fields["mail_from"].default
FLUSH_EVERY, CONNECTIONS = 25, 4  # noticeflow/mailer.py FLUSH_EVERY, NOTICEFLOW_SMTP_CONCURRENCY
HERE = Path(__file__).resolve()
DOWN = 50.0  # scenario b: seconds the Temporal dev server is down


# --- the sink ------------------------------------------------------------------------------------


def run_sink(argv: list[str]) -> None:
    """``faults.py --sink PORT OUT [--drop-data-every N] [--drop-rcpt-every N] [--delay S]``"""
    import signal

    from aiosmtpd.controller import Controller

    from noticeflow.sink import MailDirHandler

    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("out", type=Path)
    parser.add_argument("--drop-data-every", type=int, default=0)
    parser.add_argument("--drop-rcpt-every", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0)
    options = parser.parse_args(argv)
    message_id_header = re.compile(rb"^Message-ID:\s*(\S+)", re.MULTILINE | re.IGNORECASE)
    slow = re.compile(r"^<?slow-(\d+)@", re.IGNORECASE)

    class Faulty(MailDirHandler):
        """noticeflow/sink.py's RCPT rules (greylist-N, tempfail-, .invalid), plus faults."""

        def __init__(self) -> None:
            super().__init__(options.out.parent / "maildir")
            self.out = options.out.open("ab", buffering=0)
            self.rcpts = self.datas = 0

        async def handle_RCPT(self, server, session, envelope, address, options_):  # type: ignore[no-untyped-def]
            self.rcpts += 1
            if options.drop_rcpt_every and self.rcpts % options.drop_rcpt_every == 0:
                server.transport.abort()  # no reply at all
                return "421 4.4.2 dropped"
            return await super().handle_RCPT(server, session, envelope, address, options_)

        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            found = message_id_header.search(envelope.original_content or b"")
            rcpt = envelope.rcpt_tos[0] if envelope.rcpt_tos else "-"
            self.datas += 1
            drop = options.drop_data_every and self.datas % options.drop_data_every == 0
            delay = options.delay
            if match := slow.match(rcpt):
                delay = float(match.group(1))
            how = "dropped" if drop else ("slow" if delay > 1 else "ok")
            with self._lock:  # taken: from here on the server has the message
                self.out.write(
                    b"%s %s %s\n" % (found.group(1) if found else b"-", rcpt.encode(), how.encode())
                )
            if delay:
                await asyncio.sleep(delay)
            if drop:
                server.transport.abort()  # the message is in; the reply never goes out
            return "250 2.0.0 OK"

    controller = Controller(Faulty(), hostname="127.0.0.1", port=options.port)
    controller.start()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    stopped.wait()
    controller.stop()


def sink_argv(*options: str) -> list[str]:
    return [sys.executable, str(HERE), "--sink", "{port}", "{out}", *options]


# --- bookkeeping ---------------------------------------------------------------------------------


@dataclass
class Row:
    scenario: str
    mails_expected: int = 0
    mails_accepted: int = 0
    duplicates: str = ""
    actions_expected: int = 0
    actions_recorded: int = 0
    wedged: int = 0
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Action:
    receipt_id: str
    customer_id: str
    submitted: float  # monotonic
    route: str


class Run:
    """One scenario: its stack, the mails it should cause and the actions it submitted."""

    def __init__(self, stack: Stack, notice_id: str) -> None:
        self.stack = stack
        self.notice_id = notice_id
        self.actions: list[Action] = []
        self.notes: list[str] = []
        self.started = time.monotonic()

    @property
    def pool(self) -> Any:
        assert self.stack.pool is not None
        return self.stack.pool

    async def object(self, customer_id: str, wait: float = 0, route: str = "client") -> Any:
        payload = {
            "customer_id": customer_id,
            "reason": "fault run",
            "by": "bench",
            "channel": "cli",
        }
        receipt, why = await self.stack.submit(self.notice_id, "object", payload, wait=wait)
        self.actions.append(Action(receipt.receipt_id, customer_id, time.monotonic(), route))
        return receipt, why

    def sink_lines(self) -> list[tuple[str, str, str]]:
        path = self.stack.sink_file
        if not path.exists():
            return []
        lines = []
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:
                lines.append((parts[0], parts[1], parts[2]))
        return lines

    def sink_count(self) -> int:
        path = self.stack.sink_file
        return path.read_bytes().count(b"\n") if path.exists() else 0

    async def until(
        self, check: Callable[[], Awaitable[bool]], timeout: float, poll: float = 0.25
    ) -> bool:
        give_up = time.monotonic() + timeout
        while time.monotonic() < give_up:
            try:
                if await check():
                    return True
            except Exception:  # the database may be down right now
                pass
            await asyncio.sleep(poll)
        return False

    async def pending(self) -> int:
        return int(
            await self.pool.fetchval(
                "SELECT count(*) FROM intake WHERE notice_id = $1"
                " AND (status = 'pending' OR mail_due IS NOT NULL)",
                self.notice_id,
            )
        )

    async def drained(self, timeout: float) -> bool:
        async def check() -> bool:
            return await self.pending() == 0

        return await self.until(check, timeout)

    async def expected_mails(
        self, contacts: dict[str, list[str]], undeliverable: set[str]
    ) -> set[str]:
        """Message-IDs of every mail this run should have caused, from the records' own facts
        (who was activated, which objections were accepted), computed with message_id()."""
        ids = set()
        keys = await load_keys(self.pool, list(contacts))  # Message-IDs are keyed per customer

        def add(customer_id: str, kind: str) -> None:
            for email in contacts[customer_id]:
                if email not in undeliverable:
                    ids.add(message_id(keys[customer_id], self.notice_id, email, kind, MAIL_FROM))

        for customer_id in contacts:
            add(customer_id, "notice")
        for row in await self.pool.fetch(
            "SELECT receipt_id, customer_id FROM intake WHERE notice_id = $1 AND action = 'object'"
            " AND status = 'accepted'",
            self.notice_id,
        ):
            add(row["customer_id"], f"confirmation/{row['receipt_id']}")
        for row in await self.pool.fetch(
            "SELECT customer_id FROM recipients WHERE notice_id = $1 AND activated", self.notice_id
        ):
            add(row["customer_id"], "activation")
        return ids

    async def finish(
        self,
        scenario: str,
        contacts: dict[str, list[str]],
        expected_phase: set[str],
        undeliverable: set[str] = frozenset(),  # type: ignore[assignment]
        phase_timeout: float = 300,
    ) -> Row:
        row = Row(scenario)
        stack = self.stack
        reached = await stack.wait_phase(self.notice_id, expected_phase, phase_timeout)
        phase = await stack.phase(self.notice_id)
        drained = await self.drained(120)
        await asyncio.sleep(2.0)  # the last mail's line at the sink
        row.wedged = int(reached is None or not drained)
        if reached is None:
            self.notes.append(f"phase {phase}, expected {'/'.join(sorted(expected_phase))}")
        if not drained:
            self.notes.append(f"{await self.pending()} receipt(s) still pending or owing mail")
        # Mail.
        expected = await self.expected_mails(contacts, undeliverable)
        lines = self.sink_lines()
        taken = Counter(mid for mid, _, _ in lines)
        row.mails_expected = len(expected)
        row.mails_accepted = len(expected & set(taken))
        same = sum(n - 1 for mid, n in taken.items() if n > 1)
        unexpected = {mid for mid in taken if mid not in expected}
        row.duplicates = f"{same} same Message-ID; {len(unexpected)} other"
        if unexpected:
            self.notes.append(f"unexpected Message-IDs at the sink: {sorted(unexpected)[:3]}")
        if len(expected - set(taken)):
            self.notes.append(
                f"{len(expected - set(taken))} expected mail(s) never reached the sink"
            )
        dropped = sum(1 for _, _, how in lines if how == "dropped")
        if dropped:
            self.notes.append(f"sink dropped {dropped} connection(s) after DATA")
        # Actions.
        row.actions_expected = len(self.actions)
        statuses = {
            r["receipt_id"]: r
            for r in await self.pool.fetch(
                "SELECT i.receipt_id, i.status, i.reason, i.received_at, i.handled_at, o.timely"
                " FROM intake i LEFT JOIN objections o ON o.notice_id = i.notice_id"
                "  AND o.receipt_id = i.receipt_id WHERE i.notice_id = $1",
                self.notice_id,
            )
        }
        judged = [
            statuses[a.receipt_id]
            for a in self.actions
            if statuses[a.receipt_id]["status"] != "pending"
        ]
        row.actions_recorded = len(judged)
        wrong = [r for r in judged if r["status"] != "accepted" or r["timely"] is not True]
        if wrong:
            self.notes.append(
                f"{len(wrong)} misjudged, e.g. {wrong[0]['status']} ({wrong[0]['reason']}),"
                f" timely={wrong[0]['timely']}"
            )
        # What the logs say, and whether the read models kept up.
        self.notes += worker_log_notes(stack.worker_log)
        if stack.worker is not None and stack.worker.poll() is not None:
            self.notes.append(f"worker exited by itself with code {stack.worker.returncode}")
        stale = await self.read_model_stale()
        if stale:
            self.notes.append(stale)
        row.notes = self.notes
        row.seconds = time.monotonic() - self.started
        return row

    async def read_model_stale(self) -> str | None:
        async def current() -> bool:
            left = await self.pool.fetchrow(
                "SELECT n.phase AS phase, rm.phase AS rm_phase,"
                " (SELECT count(*) FROM objections o WHERE o.notice_id = n.notice_id"
                "  AND o.status = 'open') AS open, rm.open_objections AS rm_open"
                " FROM notices n LEFT JOIN rm_notices rm USING (notice_id) WHERE n.notice_id = $1",
                self.notice_id,
            )
            return bool(left["phase"] == left["rm_phase"] and left["open"] == left["rm_open"])

        if await self.until(current, 15):
            return None
        return "read model (rm_notices) not current 15 s after the run: the projector stopped?"


def worker_log_notes(path: Path) -> list[str]:
    """Warnings and errors of the worker's JSON log, counted by message."""
    if not path.exists():
        return []
    counts: Counter[str] = Counter()
    tracebacks = 0
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            tracebacks += line.startswith("Traceback")
            continue
        if isinstance(entry, dict) and entry.get("level") in {"warning", "error", "critical"}:
            event = str(entry.get("event", ""))[:60]
            if event.startswith("customer action links are signed"):
                continue
            counts[f"{entry['level']} '{event}'"] += 1
    notes = [f"log: {n}x {what}" for what, n in counts.most_common(4)]
    if tracebacks:
        notes.append(f"log: {tracebacks} traceback(s)")
    return notes


def plain_contacts(count: int) -> dict[str, list[str]]:
    return {f"c{i:06d}": [f"privacy@c{i:06d}.example"] for i in range(count)}


async def approve(stack: Stack, notice_id: str) -> None:
    receipt, why = await stack.submit(notice_id, "approve", {"by": "bob"}, wait=30)
    assert receipt.status == "accepted", (receipt, why)


# --- scenarios -----------------------------------------------------------------------------------


async def scenario_a(root: Path) -> Row:
    """Three SIGKILLs of the worker during a 5,000-customer send."""
    count = 5000
    stack = Stack(root / "a", sink_command=sink_argv())
    try:
        await stack.start()
        await stack.import_customers(count)
        stack.start_worker()
        run = Run(stack, "fault-a")
        await stack.create_notice(run.notice_id, opt_in=False)
        await approve(stack, run.notice_id)
        killed_at = []
        for k, at in enumerate((count // 4, count // 2, 3 * count // 4)):
            threshold = at + 60  # mid-batch (batches of 200), mid-flush-group

            async def past(threshold: int = threshold) -> bool:
                return run.sink_count() >= threshold

            if not await run.until(past, 240, poll=0.02):
                run.notes.append(f"kill {k + 1}: the send never got to {threshold} mails")
                break
            stack.kill_worker()
            killed_at.append(run.sink_count())
            # While no worker runs: objections from customers mailed in the first batch.
            for j in range(34):
                await run.object(f"c{k * 34 + j:06d}")
            stack.start_worker()
        run.notes.insert(0, f"killed after {', '.join(map(str, killed_at))} mails at the sink")
        row = await run.finish(
            "a. worker SIGKILLed 3x mid-send, 5,000 customers",
            plain_contacts(count),
            {"window_open"},
        )
        bound = len(killed_at) * (FLUSH_EVERY + CONNECTIONS)
        row.notes.insert(
            1, f"repeat bound {bound} ({len(killed_at)} kills x ({FLUSH_EVERY} + {CONNECTIONS}))"
        )
        return row
    finally:
        await stack.close()


async def cli_object(stack: Stack, notice_id: str, customer_id: str) -> dict[str, Any]:
    """The real CLI, as an operator would type it."""
    env = {
        **os.environ,
        "NOTICEFLOW_DATA_DIR": str(stack.root),
        "NOTICEFLOW_DATABASE_URL": stack.database_url,
        "NOTICEFLOW_TEMPORAL_ADDRESS": f"127.0.0.1:{stack.temporal_port}",
        "NOTICEFLOW_TASK_QUEUE": stack.task_queue,
    }
    done = await asyncio.create_subprocess_exec(
        binary("noticeflow"), "notice", "object", notice_id, "--customer", customer_id,
        "--reason", "fault run", "--by", "bench", "--json",
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await done.communicate()
    if done.returncode != 0:
        return {"error": (err or out).decode(errors="replace").strip()[-300:]}
    return dict(json.loads(out))


async def scenario_b(root: Path) -> Row:
    """The Temporal dev server restarted (SQLite file) while the window is open."""
    count = 300
    stack = Stack(root / "b", sqlite=True, sink_command=sink_argv())
    try:
        await stack.start()
        await stack.import_customers(count)
        stack.start_worker()
        run = Run(stack, "fault-b")
        await stack.create_notice(run.notice_id, opt_in=False)
        await approve(stack, run.notice_id)
        assert await stack.wait_phase(run.notice_id, {"window_open"}, 120)
        # Before: judged at once.
        before = await asyncio.gather(*(run.object(f"c{i:06d}", wait=20) for i in range(20)))
        late = [r for r, _ in before if r.pending]
        if late:
            run.notes.append(f"{len(late)} of the 20 'before' actions not judged within 20 s")
        # During: the server is down for DOWN seconds, long enough for the sweeper to find every
        # receipt of the outage (pending > 15 s) while the server is still down.
        assert stack.temporal is not None
        down_at = time.monotonic()

        stop_process(stack.temporal)
        why_counts: Counter[str] = Counter()
        # (1) the CLI itself: it cannot connect, so it records the action and says it is pending
        for i in range(20, 25):
            result = await cli_object(stack, run.notice_id, f"c{i:06d}")
            if "receipt_id" in result:
                run.actions.append(
                    Action(result["receipt_id"], f"c{i:06d}", time.monotonic(), "cli")
                )
                why_counts[f"CLI: {result['status']}: {str(result['pending_because'])[:40]}"] += 1
            else:
                why_counts[f"CLI failed: {result['error'][:80]}"] += 1
        # (2) control.submit without a client, as the CLI calls it when the connect fails
        for i in range(25, 35):
            receipt, why = await control.submit(
                None, run.pool, run.notice_id, "object",
                {"customer_id": f"c{i:06d}", "reason": "fault run", "by": "bench", "channel": "cli"},
                connect_error="connection refused",
            )  # fmt: skip
            run.actions.append(Action(receipt.receipt_id, f"c{i:06d}", time.monotonic(), "none"))
            why_counts[f"no client: {receipt.status}: {str(why)[:40]}"] += 1

        # (3) a long-lived client whose server went away (a web process, say)
        async def stale(i: int) -> None:
            try:
                receipt, why = await run.object(f"c{i:06d}", route="stale")
                why_counts[f"stale client: {receipt.status}: {str(why)[:40]}"] += 1
            except Exception as error:  # the receipt was written before the wake failed
                why_counts[f"stale client raised {type(error).__name__}: {str(error)[:60]}"] += 1
                for r in await run.pool.fetch(
                    "SELECT receipt_id FROM intake WHERE notice_id = $1 AND customer_id = $2",
                    run.notice_id,
                    f"c{i:06d}",
                ):
                    run.actions.append(
                        Action(r["receipt_id"], f"c{i:06d}", time.monotonic(), "stale")
                    )

        await asyncio.gather(*(stale(i) for i in range(35, 40)))
        during = [a for a in run.actions if a.route in {"cli", "none", "stale"}]
        await asyncio.sleep(max(0.0, DOWN - (time.monotonic() - down_at)))
        await stack.start_temporal()
        up_at = time.monotonic()
        run.notes.append(
            f"down {up_at - down_at:.0f} s; during: "
            + "; ".join(f"{n}x {w}" for w, n in why_counts.items())
        )

        # Nothing else is submitted: the sweeper alone must get the outage's receipts judged.
        async def outage_judged() -> bool:
            left = await run.pool.fetchval(
                "SELECT count(*) FROM intake WHERE receipt_id = ANY($1::text[]) AND status = 'pending'",
                [a.receipt_id for a in during],
            )
            return int(left) == 0

        judged = await run.until(outage_judged, 400, poll=1.0)
        took = time.monotonic() - up_at
        run.notes.append(
            f"{len(during)} outage receipts judged by the sweeper alone {took:.0f} s after the restart"
            if judged
            else f"outage receipts NOT judged by the sweeper within {took:.0f} s of the restart"
        )
        waited = await run.pool.fetchval(
            "SELECT max(handled_at - received_at) FROM intake WHERE receipt_id = ANY($1::text[])",
            [a.receipt_id for a in during],
        )
        if waited is not None:
            run.notes.append(
                f"longest receipt-to-judgement of the outage {waited.total_seconds():.0f} s"
            )
        kicks = await run.pool.fetch(
            "SELECT receipt_id, received_at, kicked_at, handled_at FROM intake"
            " WHERE receipt_id = ANY($1::text[]) ORDER BY received_at",
            [a.receipt_id for a in during],
        )
        if kicks:
            first = kicks[0]
            run.notes.append(
                "first outage receipt: last woken for by the sweeper"
                f" {(first['kicked_at'] - first['received_at']).total_seconds():.0f} s after receipt"
                if first["kicked_at"]
                else "first outage receipt never woken for by the sweeper"
            )
        # After: judged at once again.
        after = await asyncio.gather(*(run.object(f"c{i:06d}", wait=30) for i in range(40, 60)))
        late = [r for r, _ in after if r.pending]
        if late:
            run.notes.append(f"{len(late)} of the 20 'after' actions not judged within 30 s")
        return await run.finish(
            "b. Temporal restarted (SQLite), window open", plain_contacts(count), {"window_open"}
        )
    finally:
        await stack.close()


async def scenario_c(root: Path) -> Row:
    """PostgreSQL restarted during the send, during an intake burst and during activation."""
    count = 3000
    stack = Stack(root / "c", sink_command=sink_argv())
    try:
        await stack.start()
        await stack.import_customers(count)
        stack.start_worker()
        run = Run(stack, "fault-c")
        await stack.create_notice(
            run.notice_id, opt_in=False, window="PT1M", effective_in=timedelta(seconds=100)
        )
        await approve(stack, run.notice_id)

        async def sending() -> bool:
            return run.sink_count() >= count * 2 // 5

        await run.until(sending, 120, poll=0.05)
        at = run.sink_count()
        t = time.monotonic()
        await stack.restart_postgres(5)
        run.notes.append(f"PG restart 1 after {at} notice mails ({time.monotonic() - t:.0f} s)")
        if not await stack.wait_phase(run.notice_id, {"window_open"}, 240):
            run.notes.append("never reached window_open after restart 1")
        # A burst of objections; PostgreSQL goes while they are being judged.
        await asyncio.gather(*(run.object(f"c{i:06d}") for i in range(200)))

        async def judging() -> bool:
            done = await run.pool.fetchval(
                "SELECT count(*) FROM intake WHERE notice_id = $1 AND action = 'object'"
                " AND status <> 'pending'",
                run.notice_id,
            )
            return int(done) >= 40

        await run.until(judging, 120, poll=0.05)
        t = time.monotonic()
        await stack.restart_postgres(5)
        run.notes.append(f"PG restart 2 while judging objections ({time.monotonic() - t:.0f} s)")
        await run.drained(180)

        # The activation round: effective date reached, customers being switched on.
        async def activating() -> bool:
            on = await run.pool.fetchval(
                "SELECT count(*) FROM recipients WHERE notice_id = $1 AND activated", run.notice_id
            )
            return int(on) >= count // 4

        if await run.until(activating, 300, poll=0.05):
            on = await run.pool.fetchval(
                "SELECT count(*) FROM recipients WHERE notice_id = $1 AND activated", run.notice_id
            )
            t = time.monotonic()
            await stack.restart_postgres(5)
            run.notes.append(f"PG restart 3 after {on} activations ({time.monotonic() - t:.0f} s)")
        else:
            run.notes.append("activation never started")

        async def all_settled() -> bool:
            left = await run.pool.fetchval(
                "SELECT count(*) FROM recipients WHERE notice_id = $1 AND NOT settled"
                " AND customer_id NOT IN (SELECT customer_id FROM objections WHERE notice_id = $1)",
                run.notice_id,
            )
            return int(left) == 0

        settled = await run.until(all_settled, 300)
        row = await run.finish(
            "c. PostgreSQL restarted 3x: send, intake, activation",
            plain_contacts(count),
            {"active"},
        )
        on = await run.pool.fetchval(
            "SELECT count(*) FROM recipients WHERE notice_id = $1 AND activated", run.notice_id
        )
        if not settled or on != count - 200:
            row.wedged = 1
            row.notes.append(f"activated {on}, expected {count - 200}")
        else:
            row.notes.insert(3, f"activated {on} = {count} - 200 objecting")
        return row
    finally:
        await stack.close()


async def smtp_run(
    root: Path,
    name: str,
    title: str,
    count: int,
    contacts: dict[str, list[str]],
    undeliverable: set[str],
    sink_options: list[str],
    worker_env: dict[str, str],
    objectors: list[str],
    phase_timeout: float = 300,
) -> Row:
    stack = Stack(root / name, sink_command=sink_argv(*sink_options), worker_env=worker_env)
    try:
        await stack.start()
        await stack.import_customers(count, emails=lambda i: contacts[f"c{i:06d}"])
        stack.start_worker()
        run = Run(stack, f"fault-{name}")
        await stack.create_notice(run.notice_id, opt_in=False)
        await approve(stack, run.notice_id)

        async def mailed() -> bool:  # the objectors' notices went out: they can object
            got = {rcpt.strip("<>").split("@")[1] for _, rcpt, _ in run.sink_lines()}
            return all(f"{c}.example" in got for c in objectors)

        await run.until(mailed, 120)
        for customer_id in objectors:
            await run.object(customer_id)
        row = await run.finish(title, contacts, {"window_open"}, undeliverable, phase_timeout)
        if row.wedged:
            row.notes.append(
                f"history: {await stack.history(run.notice_id)} (runs, events now, events in all)"
            )
        phases = await run.pool.fetchrow(
            "SELECT min(recorded_at) FILTER (WHERE event_type = 'notice_approved') AS approved,"
            " min(recorded_at) FILTER (WHERE event_type = 'phase_changed'"
            "  AND data->>'phase' = 'window_open') AS open FROM events WHERE stream_id = $1",
            f"notice-{run.notice_id}",
        )
        judged = await run.pool.fetchrow(
            "SELECT min(received_at) AS first, max(handled_at) AS last FROM intake"
            " WHERE notice_id = $1 AND action = 'object'",
            run.notice_id,
        )
        if phases["approved"] and phases["open"]:
            row.notes.insert(
                0, f"send {(phases['open'] - phases['approved']).total_seconds():.0f} s"
            )
        if judged["first"] and judged["last"]:
            row.notes.insert(
                1,
                "objections received during the send judged"
                f" {(judged['last'] - judged['first']).total_seconds():.0f} s after the first",
            )
        failed = await run.pool.fetch(
            "SELECT customer_id, status, smtp_code, smtp_status, attempts FROM deliveries"
            " WHERE notice_id = $1"
            " AND kind = 'notice' AND status <> 'accepted' ORDER BY customer_id",
            run.notice_id,
        )
        if failed:
            row.notes.append(
                f"ledger: {len(failed)} notice mail(s) {failed[0]['status']}, e.g."
                f" {failed[0]['customer_id']}: reply {failed[0]['smtp_code']}"
                f" {failed[0]['smtp_status'] or ''}".rstrip()
            )
        undelivered = await run.pool.fetchval(
            "SELECT count(*) FROM recipients WHERE notice_id = $1 AND delivery = 'undelivered'",
            run.notice_id,
        )
        row.notes.append(f"{undelivered} customer(s) undelivered")
        return row
    finally:
        await stack.close()


async def scenario_d1(root: Path) -> Row:
    count = 500
    contacts = plain_contacts(count)
    undeliverable = set()
    for i in range(count):
        cid = f"c{i:06d}"
        if i % 25 == 0:
            contacts[cid] = [f"greylist-2@{cid}.example"]  # taken on the mailer's third try
        elif i % 25 == 5:
            contacts[cid] = [f"greylist-4@{cid}.example"]  # needs a second run of the activity
        elif i % 50 == 10:
            contacts[cid] = [f"tempfail-x@{cid}.example"]  # never: given up after 40 s
        elif i % 50 == 35:
            contacts[cid] = [f"privacy@{cid}.example", f"tempfail-y@{cid}.example"]
        if any(e.startswith("tempfail-") for e in contacts[cid]):
            undeliverable |= {e for e in contacts[cid] if e.startswith("tempfail-")}
    return await smtp_run(
        root, "d1", "d1. SMTP 451: greylist-2/-4 (40), tempfail- (20)", count, contacts,
        undeliverable, [], {"NOTICEFLOW_SMTP_GIVE_UP_AFTER": "40"},
        [f"c{i:06d}" for i in range(101, 200) if i % 25 not in {0, 5} and i % 50 not in {10, 35}][:20],
    )  # fmt: skip


async def scenario_d2(root: Path) -> Row:
    count = 500
    return await smtp_run(
        root, "d2", "d2. SMTP drops: after DATA (1/50), at RCPT (1/37)", count,
        plain_contacts(count), set(), ["--drop-data-every", "50", "--drop-rcpt-every", "37"], {},
        [f"c{i:06d}" for i in range(101, 111)],
    )  # fmt: skip


async def scenario_d3(root: Path) -> Row:
    count = 500
    contacts = plain_contacts(count)
    for i in (7, 307):
        contacts[f"c{i:06d}"] = [f"slow-35@c{i:06d}.example"]
    return await smtp_run(
        root, "d3", "d3. slow SMTP: 0.2 s a message, 35 s for 2", count, contacts, set(),
        ["--delay", "0.2"], {"NOTICEFLOW_SMTP_GIVE_UP_AFTER": "90"},
        [f"c{i:06d}" for i in range(101, 111)], phase_timeout=240,
    )  # fmt: skip


SCENARIOS: dict[str, Callable[[Path], Awaitable[Row]]] = {
    "a": scenario_a,
    "b": scenario_b,
    "c": scenario_c,
    "d1": scenario_d1,
    "d2": scenario_d2,
    "d3": scenario_d3,
}

COLUMNS = (
    "scenario", "mails expected", "mails accepted at the sink", "duplicates (same recipient+kind)",
    "actions expected", "actions recorded (judged)", "wedged", "notes",
)  # fmt: skip


def cells(row: Row) -> list[str]:
    return [
        row.scenario,
        f"{row.mails_expected:,}",
        f"{row.mails_accepted:,}",
        row.duplicates,
        str(row.actions_expected),
        str(row.actions_recorded),
        str(row.wedged),
        "; ".join(row.notes) + f" ({row.seconds:.0f} s)",
    ]


def markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in cells(row)) + " |" for row in rows]
    return "\n".join(lines)


def plain(rows: list[Row]) -> str:
    table = [list(COLUMNS[:-1])] + [cells(row)[:-1] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    out = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in table]
    for row in rows:
        out.append(f"{row.scenario.split('.')[0]}: " + cells(row)[-1])
    return "\n".join(out)


async def main(only: list[str], as_markdown: bool, keep: Path | None) -> None:
    rows = []
    started = datetime.now(UTC)
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="nf-faults-", dir=keep) as scratch:
        root = Path(scratch)
        root.chmod(0o755)
        for name in only:
            print(f"--- {name} ...", file=sys.stderr, flush=True)
            try:
                row = await SCENARIOS[name](root)
            except Exception as error:  # a broken run is a row too, and the others still run
                row = Row(
                    name, wedged=1, notes=[f"the run failed: {type(error).__name__}: {error}"]
                )
            rows.append(row)
            print(plain([row]), file=sys.stderr, flush=True)
            if keep is not None:  # the logs, the sink's records; the databases are gone
                for item in root.iterdir():
                    item.rename(keep / item.name)
    print(
        f"\n{started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, {platform.machine()},"
        f" Python {platform.python_version()}\n"
    )
    print(markdown(rows) if as_markdown else plain(rows))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--sink":
        run_sink(sys.argv[2:])
        raise SystemExit(0)
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--only", default=",".join(SCENARIOS), help="e.g. a,c or d1,d2,d3 (d: all three)"
    )
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--keep", type=Path, help="keep each run's logs and sink records here")
    arguments = parser.parse_args()
    chosen: list[str] = []
    for name in arguments.only.split(","):
        name = name.strip()
        chosen += [n for n in SCENARIOS if n == name or (name == "d" and n.startswith("d"))]
    asyncio.run(main(chosen, arguments.markdown, arguments.keep))
