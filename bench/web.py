"""Web benchmark: customers acting through their action pages, as their browsers do.

    python bench/web.py --burst 10000 [--concurrency 50] [--signals 5000] [--sqlite] [--profile DIR]
    python bench/web.py --pages ...          (page latency: not built yet, see ``pages`` below)

``--burst N`` starts the stack of bench/intake.py (embedded PostgreSQL, the Temporal dev server in
memory or on a SQLite file, the counting SMTP sink, ``noticeflow worker``) plus ``noticeflow web``
in its own process, imports N customers, creates an opt-in notice, approves it and waits for
``window_open`` (all N mailed). Then every customer, ``--concurrency`` at a time, does what its
browser does with the opt-in link from its mail: GET ``/a/<token>`` (an httpx client with its own
cookie jar: the CSRF token is bound to the session cookie), reads the opt-in form's hidden fields
and POSTs them, following no redirect (a 303 to its receipt page is expected); a request on a
kept-alive connection the server closed before answering is sent again, as browsers do. The
customers share one connection pool, not one cookie jar. The tokens are
signed here with the web's key exactly as the worker signed the mails (``LinkSigner.links_for``
with the recipient's recorded deadline), so they are the links the customers were sent.

Measured:

* at the client: customers/s (one GET + one POST each) and requests/s; GET and POST latency
  (p50 / p95 / max; a POST waits up to 5 s for its receipt to be judged before it redirects);
* the drain: first receipt's ``received_at`` to last ``handled_at`` (database clock), and until
  every confirmation mail is out (``mail_due`` cleared; last ledger row final);
* the signals the web actually sent (``WorkflowExecutionSignaled`` events of the burst, across
  runs; the web coalesces wakes, noticeflow/waker.py) and the worker's intake-sweeper wakes
  among them; the ``process_intake`` rounds (receipts per round, time in the activity, time
  between rounds) and where a round's time goes (reads, judging, commit + confirmation mail,
  totals), from the receipts' and the ledger's timestamps; the history events the burst wrote,
  by type; the workflow's history (runs after continue-as-new; events current / all);
* correctness: N receipts accepted (channel ``link``), N recipients opted in, N
  ``opt_in_recorded`` events, N confirmations at the sink, no duplicates, every POST a 303 to
  its own receipt;
* CPU seconds of each process over the burst (worker, web, PostgreSQL, Temporal, sink, this
  script), and per customer; warnings and errors the worker and the web logged meanwhile;
  with ``--profile DIR``, py-spy's collapsed stacks of the worker and the web;
* then, once drained, the raw signal rate: ``--signals`` plain ``intake`` wake signals (payload
  ``{}``: a wake that records nothing) sent to the same workflow as fast as ``--concurrency``
  senders can, with the CPU it cost; the drain rate as a share of it (issue 9's target: >= 50%).

The per-client rate limit of the action pages (``NOTICEFLOW_LINK_RATE_PER_CLIENT``, 120 a minute
by default) would refuse the bench, whose customers all come from 127.0.0.1: the web runs with
it raised (printed with the results).
"""

from __future__ import annotations

import argparse
import asyncio
import html
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ siblings
from intake import Stack, stop_process, wait_port

from noticeflow.contracts import NoticeStatus
from noticeflow.domain.signals import WAKE_SIGNAL
from noticeflow.links import LinkSigner
from noticeflow.sink import free_port

SECRET = "bench-web-link-key-" + "k" * 24
LINK_RATE_PER_CLIENT = 1_000_000  # requests a minute from one client address (default 120)
POST_WAIT = 5.0  # noticeflow/web/actions.py WAIT_SECONDS: a POST waits this long for its verdict

HIDDEN = re.compile(r'<input type="hidden" name="([A-Za-z_]+)" value="([^"]*)">')
FORM = re.compile(r'<form\b[^>]*\baction="([^"]*)"[^>]*>(.*?)</form>', re.DOTALL)
RECEIPT = re.compile(r"/receipts/(r-[0-9a-f]{20})$")


# --- the stack: bench/intake.py's, plus `noticeflow web` -----------------------------------------


@dataclass
class WebStack(Stack):
    web: subprocess.Popen[bytes] | None = None
    web_port: int = 0

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def web_log(self) -> Path:
        return self.root / "web.log"

    def app_env(self) -> dict[str, str]:
        """What both the worker and the web are told (the same key and public address, so the
        links in the mails are the links the web verifies)."""
        return {
            "NOTICEFLOW_SECRET_KEY": SECRET,
            "NOTICEFLOW_PUBLIC_URL": self.web_url,
        }

    async def start_web(self) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "NOTICEFLOW_DATA_DIR": str(self.root),
            "NOTICEFLOW_DATABASE_URL": self.database_url,
            "NOTICEFLOW_TEMPORAL_ADDRESS": f"127.0.0.1:{self.temporal_port}",
            "NOTICEFLOW_TASK_QUEUE": self.task_queue,
            "NOTICEFLOW_LINK_RATE_PER_CLIENT": str(LINK_RATE_PER_CLIENT),
            **self.app_env(),
        }
        log = self.web_log.open("ab")
        self.web = subprocess.Popen(
            [sys.executable, "-m", "noticeflow.cli", "web", "--port", str(self.web_port)],
            env=env,
            stdout=log,
            stderr=log,
        )
        await wait_port(self.web_port)
        return self.web

    async def close(self) -> None:
        stop_process(self.web, 15)
        await super().close()


# --- CPU per process -------------------------------------------------------------------------------


def _tree_cpu(pid: int | None) -> dict[int, float]:
    """CPU seconds (user + system) of a process and its children, by pid."""
    if pid is None:
        return {}
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return {}
    seconds = {}
    for process in processes:
        try:
            times = process.cpu_times()
            seconds[process.pid] = float(times.user + times.system)
        except psutil.Error:
            continue
    return seconds


def _postmaster(stack: Stack) -> int | None:
    try:
        return int((Path(stack._pg.pgdata) / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class CpuMeter:
    """CPU seconds each part of the stack spent between ``start()`` and ``stop()``."""

    def __init__(self, stack: WebStack) -> None:
        self.stack = stack
        self.before: dict[str, dict[int, float]] = {}
        self.spent: dict[str, float] = {}

    def _pids(self) -> dict[str, int | None]:
        def pid(process: subprocess.Popen[bytes] | None) -> int | None:
            return process.pid if process is not None else None

        s = self.stack
        return {
            "worker": pid(s.worker),
            "web": pid(s.web),
            "postgres": _postmaster(s),
            "temporal": pid(s.temporal),
            "sink": pid(s.sink),
        }

    def _sample(self) -> dict[str, dict[int, float]]:
        sample = {name: _tree_cpu(pid) for name, pid in self._pids().items()}
        sample["bench"] = {0: time.process_time()}
        return sample

    def start(self) -> None:
        self.before = self._sample()

    def stop(self) -> dict[str, float]:
        after = self._sample()
        self.spent = {
            name: sum(now - self.before.get(name, {}).get(pid, 0.0) for pid, now in pids.items())
            for name, pids in after.items()
        }
        return self.spent


# --- py-spy, optional ---------------------------------------------------------------------------


class Profiler:
    """``py-spy record`` of the worker and the web over the burst and its drain, into ``--profile
    DIR``: collapsed stacks of the thread holding the GIL (so: Python's CPU time), 100 Hz,
    non-blocking. py-spy is not a dependency: put it on PATH."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, stack: WebStack, count: int) -> None:
        if self.directory is None:
            return
        spy = shutil.which("py-spy")
        if spy is None:
            raise SystemExit("--profile needs py-spy on PATH (pip install py-spy)")
        self.directory.mkdir(parents=True, exist_ok=True)
        for name, process in (("worker", stack.worker), ("web", stack.web)):
            assert process is not None
            out = self.directory / f"{name}-{count}.txt"
            command = [spy, "record", "--pid", str(process.pid), "--format", "raw"]
            command += ["--rate", "100", "--gil", "--nonblocking", "--output", str(out)]
            log = (self.directory / f"{name}-{count}.log").open("ab")
            self.running.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log))

    def stop(self) -> None:
        for process in self.running:
            process.send_signal(signal.SIGINT)
        for process in self.running:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        self.running.clear()


# --- the workflow's history ----------------------------------------------------------------------


@dataclass
class Round:
    scheduled: datetime
    started: datetime | None = None
    closed: datetime | None = None
    handled: int | None = None


@dataclass
class History:
    runs: int = 0
    current: int = 0
    total: int = 0
    signals: list[tuple[datetime, str]] = field(default_factory=list)  # (time, name)
    activities: list[tuple[datetime, str]] = field(default_factory=list)  # scheduled, by type
    events: list[tuple[datetime, str]] = field(default_factory=list)  # every event: time, type
    rounds: list[Round] = field(default_factory=list)  # process_intake, in order

    def signals_between(self, start: datetime, end: datetime) -> Counter[str]:
        return Counter(name for at, name in self.signals if start <= at <= end)

    def rounds_between(self, start: datetime, end: datetime) -> list[Round]:
        return [r for r in self.rounds if start <= r.scheduled <= end]

    def activities_between(self, start: datetime, end: datetime) -> Counter[str]:
        return Counter(name for at, name in self.activities if start <= at <= end)

    def events_between(self, start: datetime, end: datetime) -> Counter[str]:
        return Counter(kind for at, kind in self.events if start <= at <= end)


def _when(event: HistoryEvent) -> datetime:
    return event.event_time.ToDatetime(tzinfo=UTC)


async def history(client: Client, notice_id: str) -> History:
    """Every run of the notice's workflow: signals received and process_intake rounds."""
    found = History()
    runs = [w async for w in client.list_workflows(f'WorkflowId = "notice-{notice_id}"')]
    runs.sort(key=lambda w: w.start_time)
    for run in runs:
        events = (
            await client.get_workflow_handle(run.id, run_id=run.run_id).fetch_history()
        ).events
        found.total += len(events)
        rounds: dict[int, Round] = {}
        for event in events:
            kind = event.event_type
            name = EventType.Name(kind).removeprefix("EVENT_TYPE_")
            if kind == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                cause = event.workflow_task_failed_event_attributes.cause
                name += (
                    " ("
                    + WorkflowTaskFailedCause.Name(cause).removeprefix(
                        "WORKFLOW_TASK_FAILED_CAUSE_"
                    )
                    + ")"
                )
            found.events.append((_when(event), name))
            if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
                name = event.workflow_execution_signaled_event_attributes.signal_name
                found.signals.append((_when(event), name))
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                scheduled = event.activity_task_scheduled_event_attributes
                found.activities.append((_when(event), scheduled.activity_type.name))
                if scheduled.activity_type.name == "process_intake":
                    rounds[event.event_id] = Round(scheduled=_when(event))
                    found.rounds.append(rounds[event.event_id])
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                started = rounds.get(
                    event.activity_task_started_event_attributes.scheduled_event_id
                )
                if started is not None:
                    started.started = _when(event)
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                completed = event.activity_task_completed_event_attributes
                done = rounds.get(completed.scheduled_event_id)
                if done is not None:
                    done.closed = _when(event)
                    try:
                        done.handled = int(json.loads(completed.result.payloads[0].data)["handled"])
                    except (IndexError, KeyError, TypeError, ValueError):
                        done.handled = None
    found.runs = len(runs)
    current = await client.get_workflow_handle(f"notice-{notice_id}").describe()
    found.current = current.raw_description.workflow_execution_info.history_length
    return found


def round_profile(rounds: list[Round]) -> dict[str, float]:
    """process_intake rounds: how many, receipts per round, seconds in the activity (started to
    completed), seconds queued (scheduled to started) and between rounds (completed to the next
    scheduled: the workflow task)."""
    inside = [(r.closed - r.started).total_seconds() for r in rounds if r.started and r.closed]
    queued = [(r.started - r.scheduled).total_seconds() for r in rounds if r.started]
    between = [
        (b.scheduled - a.closed).total_seconds()
        for a, b in itertools.pairwise(rounds)
        if a.closed is not None
    ]
    handled = [r.handled for r in rounds if r.handled]
    return {
        "rounds": len(rounds),
        "per_round": sum(handled) / len(handled) if handled else 0.0,
        "largest_round": max(handled, default=0),
        "in_activity": sum(inside),
        "queued": sum(queued),
        "between": sum(between),
    }


def round_anatomy(rounds: list[Round], receipts: list[Any]) -> dict[str, float]:
    """Where a round's time goes, from the database's timestamps of the receipts it judged
    (``handled_at``) and of their confirmations (the ledger's ``finished_at``), summed over the
    rounds that judged any: ``before`` (activity start to its first verdict: the reads), ``judging``
    (first to last verdict), ``mailing`` (last verdict to last confirmation: the chunk's commit and
    the confirmations), ``after`` (to the activity's completion: the totals and the reply)."""
    parts = {"before": 0.0, "judging": 0.0, "mailing": 0.0, "after": 0.0}
    ordered = sorted(receipts, key=lambda row: row["handled_at"])
    for r in rounds:
        if r.started is None or r.closed is None:
            continue
        mine = [x for x in ordered if r.started <= x["handled_at"] <= r.closed]
        if not mine:
            continue
        first, last = mine[0]["handled_at"], mine[-1]["handled_at"]
        mailed = max((x["mailed_at"] for x in mine if x["mailed_at"]), default=last)
        mailed = min(max(mailed, last), r.closed)
        parts["before"] += (first - r.started).total_seconds()
        parts["judging"] += (last - first).total_seconds()
        parts["mailing"] += (mailed - last).total_seconds()
        parts["after"] += (r.closed - mailed).total_seconds()
    return parts


# --- a customer's browser ------------------------------------------------------------------------


def opt_in_form(page: str) -> tuple[str, dict[str, str]]:
    """The opt-in form's target and hidden fields (csrf_token, nonce, action)."""
    for target, body in FORM.findall(page):
        fields = {name: html.unescape(value) for name, value in HIDDEN.findall(body)}
        if fields.get("action") == "opt_in":
            return html.unescape(target), fields
    raise LookupError("no opt-in form on the page")


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


@dataclass
class Burst:
    seconds: float = 0.0
    gets: list[float] = field(default_factory=list)
    posts: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    receipts: set[str] = field(default_factory=set)
    retries: Counter[str] = field(default_factory=Counter)


async def burst(base_url: str, tokens: list[str], concurrency: int) -> Burst:
    """Each customer: GET its page, POST the opt-in form; ``concurrency`` customers at a time.
    Each has its own httpx client and cookie jar; they share one connection pool (a client of
    its own each would build an SSL context per customer and measure this script)."""
    result = Burst()
    transport = httpx.AsyncHTTPTransport(
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    )
    queue = list(reversed(tokens))
    done = 0

    async def send(browser: httpx.AsyncClient, method: str, url: str, **kw: Any) -> httpx.Response:
        """As a browser does: a request on a kept-alive connection that the server closed before
        answering is sent again (uvicorn closes idle connections after 5 s). A POST sent again is
        the same form with the same nonce: the same receipt."""
        for attempt in range(3):
            try:
                return await browser.request(method, url, **kw)
            except (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError) as error:
                if attempt == 2:
                    raise
                result.retries[f"{method} {type(error).__name__}"] += 1
        raise AssertionError("unreachable")

    async def customer(token: str) -> None:
        browser = httpx.AsyncClient(
            base_url=base_url,
            transport=transport,
            trust_env=False,
            follow_redirects=False,
            timeout=60,
        )  # not closed: closing it would close the shared transport
        start = time.perf_counter()
        page = await send(browser, "GET", f"/a/{token}")
        got = time.perf_counter()
        result.gets.append(got - start)
        if page.status_code != 200:
            result.outcomes[f"GET {page.status_code}"] += 1
            return
        try:
            target, fields = opt_in_form(page.text)
        except LookupError:
            result.outcomes["GET 200 without an opt-in form"] += 1
            return
        posted = await send(browser, "POST", target, data=fields)
        result.posts.append(time.perf_counter() - got)
        where = posted.headers.get("location", "")
        found = RECEIPT.search(where)
        if posted.status_code == 303 and found and where.startswith(f"/a/{token}/receipts/"):
            result.outcomes["303 to its receipt"] += 1
            result.receipts.add(found.group(1))
        else:
            result.outcomes[f"POST {posted.status_code}"] += 1

    async def browse() -> None:
        nonlocal done
        while queue:
            token = queue.pop()
            try:
                await customer(token)
            except httpx.HTTPError as error:
                result.outcomes[f"{type(error).__name__}"] += 1
            done += 1

    async def progress() -> None:
        while True:
            await asyncio.sleep(10)
            print(f"  ... {done:,} of {len(tokens):,} customers done", flush=True)

    start = time.perf_counter()
    reporter = asyncio.create_task(progress())
    try:
        await asyncio.gather(*(browse() for _ in range(concurrency)))
    finally:
        reporter.cancel()
        await transport.aclose()
    result.seconds = time.perf_counter() - start
    return result


async def raw_signals(client: Client, notice_id: str, count: int, concurrency: int) -> float:
    """``count`` plain wake signals (``intake``, payload ``{}``) to the notice's workflow, as fast
    as ``concurrency`` senders go; the seconds it took."""
    handle = client.get_workflow_handle(f"notice-{notice_id}")
    left = count

    async def sender() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await handle.signal(WAKE_SIGNAL, {})

    start = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return time.perf_counter() - start


async def absorbed(client: Client, notice_id: str, handled: int, timeout: float) -> float | None:
    """Seconds until the workflow has handled ``handled`` signals in all (None: not in time)."""
    handle = client.get_workflow_handle(f"notice-{notice_id}")
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        status = await handle.query("status", result_type=NoticeStatus)
        if status.signals_handled >= handled and status.pending_signals == 0:
            return time.perf_counter() - start
        await asyncio.sleep(0.2)
    return None


# --- the run ---------------------------------------------------------------------------------------


async def run_burst(
    count: int,
    concurrency: int,
    signals: int,
    sqlite: bool,
    scratch: Path,
    profile: Path | None = None,
) -> dict[str, Any]:
    stack = WebStack(scratch / f"web-{count}", sqlite=sqlite)
    stack.web_port = free_port()
    stack.worker_env = stack.app_env()
    await stack.start()
    try:
        assert stack.pool is not None and stack.client is not None
        pool, client = stack.pool, stack.client
        await stack.import_customers(count)
        stack.start_worker()
        await stack.start_web()
        notice_id = f"web-{count}"
        spec = await stack.create_notice(notice_id, opt_in=True)
        approved, why = await stack.submit(notice_id, "approve", {"by": "bob"}, wait=30)
        assert approved.status == "accepted", (approved, why)
        phase = await stack.wait_phase(notice_id, {"window_open"}, timeout=600)
        assert phase == "window_open", phase
        effective_at = await pool.fetchval(
            "SELECT effective_at FROM notices WHERE notice_id = $1", notice_id
        )
        signer = LinkSigner(SECRET, stack.web_url)
        prefix = f"{stack.web_url}/a/"
        tokens = []
        for row in await pool.fetch(
            "SELECT customer_id, deadline FROM recipients WHERE notice_id = $1 ORDER BY customer_id",
            notice_id,
        ):
            url = signer.links_for(notice_id, row["customer_id"], row["deadline"], effective_at)
            tokens.append(url["opt_in_url"].removeprefix(prefix))
        assert len(tokens) == count, (len(tokens), count)
        mailed_notices = len(stack.sink_ids())
        print(
            f"{count:,} customers mailed ({mailed_notices:,} at the sink); burst through"
            f" {stack.web_url}, {concurrency} at a time"
            f" (web: NOTICEFLOW_LINK_RATE_PER_CLIENT={LINK_RATE_PER_CLIENT:,})",
            flush=True,
        )
        sweeps_before = _sweeper_wakes(stack)
        logs_from = {"worker": _size(stack.worker_log), "web": _size(stack.web_log)}
        profiler = Profiler(profile)
        profiler.start(stack, count)
        cpu = CpuMeter(stack)
        cpu.start()
        clock_start = await pool.fetchval("SELECT clock_timestamp()")
        result = await burst(stack.web_url, tokens, concurrency)
        give_up = time.monotonic() + 1800
        while time.monotonic() < give_up:
            left = await pool.fetchval(
                "SELECT count(*) FROM intake WHERE notice_id = $1 AND channel = 'link'"
                " AND (status = 'pending' OR mail_due IS NOT NULL)",
                notice_id,
            )
            if not left:
                break
            await asyncio.sleep(0.25)
        clock_end = await pool.fetchval("SELECT clock_timestamp()")
        spent = cpu.stop()
        profiler.stop()
        sweeps = _sweeper_wakes(stack) - sweeps_before
        problems = {
            "worker": log_problems(stack.worker_log, logs_from["worker"]),
            "web": log_problems(stack.web_log, logs_from["web"]),
        }
        times = await pool.fetchrow(
            "SELECT min(received_at) AS first, max(received_at) AS last_received,"
            " max(handled_at) AS last_judged, count(*) AS receipts,"
            " count(*) FILTER (WHERE status = 'pending') AS pending,"
            " count(*) FILTER (WHERE status = 'accepted') AS accepted,"
            " count(*) FILTER (WHERE status NOT IN ('pending', 'accepted')) AS other"
            " FROM intake WHERE notice_id = $1 AND channel = 'link' AND action = 'opt_in'",
            notice_id,
        )
        mailed_at = await pool.fetchval(
            "SELECT max(finished_at) FROM deliveries WHERE notice_id = $1"
            " AND kind LIKE 'confirmation/%'",
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
        await asyncio.sleep(0.5)
        at_sink = stack.sink_ids()
        after_burst = await history(client, notice_id)
        burst_signals = after_burst.signals_between(clock_start, clock_end)
        burst_rounds = after_burst.rounds_between(clock_start, clock_end)
        rounds = round_profile(burst_rounds)
        judged_rows = await pool.fetch(
            "SELECT i.handled_at, d.finished_at AS mailed_at FROM intake i LEFT JOIN deliveries d"
            " ON d.notice_id = i.notice_id AND d.kind = 'confirmation/' || i.receipt_id"
            " WHERE i.notice_id = $1 AND i.channel = 'link' AND i.handled_at IS NOT NULL",
            notice_id,
        )
        anatomy = round_anatomy(burst_rounds, list(judged_rows))
        activities = after_burst.activities_between(clock_start, clock_end)
        burst_events = after_burst.events_between(clock_start, clock_end)
        drain = (times["last_judged"] - times["first"]).total_seconds()
        mail_drain = (mailed_at - times["first"]).total_seconds() if mailed_at else float("nan")

        # The raw signal rate, on the same workflow, now that the burst has drained.
        status = await client.get_workflow_handle(f"notice-{notice_id}").query(
            "status", result_type=NoticeStatus
        )
        print(f"drained; now {signals:,} raw `{WAKE_SIGNAL}` signals", flush=True)
        raw_cpu = CpuMeter(stack)
        raw_cpu.start()
        raw_seconds = await raw_signals(client, notice_id, signals, concurrency)
        absorb = await absorbed(client, notice_id, status.signals_handled + signals, 600)
        raw_spent = raw_cpu.stop()
        after_raw = await history(client, notice_id)
        return {
            "count": count,
            "concurrency": concurrency,
            "sqlite": sqlite,
            "spec": spec.notice_id,
            "client_seconds": result.seconds,
            "customer_rate": count / result.seconds,
            "request_rate": (len(result.gets) + len(result.posts)) / result.seconds,
            "get_p50": percentile(result.gets, 0.5),
            "get_p95": percentile(result.gets, 0.95),
            "post_p50": percentile(result.posts, 0.5),
            "post_p95": percentile(result.posts, 0.95),
            "post_max": max(result.posts, default=float("nan")),
            "posts_waited_out": sum(1 for p in result.posts if p >= POST_WAIT),
            "outcomes": dict(result.outcomes),
            "distinct_receipts": len(result.receipts),
            "received_span": (times["last_received"] - times["first"]).total_seconds(),
            "drain_seconds": drain,
            "drain_rate": count / drain,
            "mail_seconds": mail_drain,
            "retries": dict(result.retries),
            "anatomy": anatomy,
            "activities": dict(activities),
            "burst_events": sum(burst_events.values()),
            "burst_event_types": dict(burst_events.most_common()),
            "signals": sum(burst_signals.values()),
            "signal_names": dict(burst_signals),
            "sweeper_wakes": sweeps,
            **rounds,
            "runs": after_burst.runs,
            "history": after_burst.current,
            "history_total": after_burst.total,
            "receipts": times["receipts"],
            "events": events,
            "opted_in": opted_in,
            "accepted": times["accepted"],
            "pending": times["pending"],
            "other": times["other"],
            "confirmations": len(confirmations),
            "confirmations_at_sink": len(confirmations & set(at_sink)),
            "duplicates_at_sink": sum(n - 1 for n in at_sink.values() if n > 1),
            "cpu": spent,
            "raw_cpu": raw_spent,
            "log_problems": {name: dict(found.most_common(6)) for name, found in problems.items()},
            "raw_signals": signals,
            "raw_seconds": raw_seconds,
            "raw_rate": signals / raw_seconds,
            "raw_absorbed": absorb,
            "runs_after_raw": after_raw.runs,
            "history_after_raw": after_raw.current,
            "history_total_after_raw": after_raw.total,
        }
    finally:
        await stack.close()


def log_problems(path: Path, start: int = 0) -> Counter[str]:
    """Warnings and errors a process logged from byte ``start`` on: JSON lines by level and
    event, plain (stdlib) lines by their first words."""
    found: Counter[str] = Counter()
    if not path.exists():
        return found
    with path.open("rb") as log:
        log.seek(start)
        for raw in log:
            line = raw.decode(errors="replace").strip()
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            if isinstance(entry, dict):
                level = str(entry.get("level", ""))
                if level in ("warning", "error", "critical"):
                    found[f"{level}: {entry.get('event')}"] += 1
            elif line.startswith(("WARNING", "ERROR", "CRITICAL", "Traceback")):
                found[line[:120]] += 1
    return found


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _sweeper_wakes(stack: Stack) -> int:
    """The worker's intake-sweeper wakes so far (its log line names no customer)."""
    if not stack.worker_log.exists():
        return 0
    return stack.worker_log.read_text(errors="replace").count("waking notice for pending receipts")


# --- output ----------------------------------------------------------------------------------------


def correct(r: dict[str, Any]) -> bool:
    n = r["count"]
    return (
        r["events"] == r["opted_in"] == r["accepted"] == r["receipts"] == n
        and r["distinct_receipts"] == n
        and r["outcomes"] == {"303 to its receipt": n}
        and r["confirmations_at_sink"] == n
        and r["duplicates_at_sink"] == 0
    )


def report(r: dict[str, Any]) -> str:
    cpu = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in r["cpu"].items())
    cpu_each = "a customer: " + ", ".join(
        f"{name} {1000 * seconds / r['count']:.1f} ms" for name, seconds in r["cpu"].items()
    )
    raw_cpu = ", ".join(
        f"{name} {seconds:.1f} s ({1000 * seconds / r['raw_signals']:.2f} ms a signal)"
        for name, seconds in r["raw_cpu"].items()
    )
    names = ", ".join(f"{n} `{name}`" for name, n in sorted(r["signal_names"].items()))
    anatomy = ", ".join(f"{part} {seconds:.1f} s" for part, seconds in r["anatomy"].items())
    activities = ", ".join(f"{name} {n:,}" for name, n in sorted(r["activities"].items()))
    event_types = ", ".join(f"{name.lower()} {n:,}" for name, n in r["burst_event_types"].items())
    absorbed_text = (
        f"absorbed by the workflow {r['raw_absorbed']:.1f} s after the last was sent"
        if r["raw_absorbed"] is not None
        else "not all absorbed by the workflow within 10 minutes"
    )
    return "\n".join(
        [
            f"{r['count']:,} opt-ins through the web, {r['concurrency']} customers at a time,"
            f" Temporal {'on a SQLite file' if r['sqlite'] else 'in memory'}"
            f" (NOTICEFLOW_LINK_RATE_PER_CLIENT={LINK_RATE_PER_CLIENT:,} for the web: all bench"
            " clients come from 127.0.0.1, and the default 120 a minute would refuse them)",
            f"  client: {r['customer_rate']:,.0f} customers/s (GET + POST each),"
            f" {r['request_rate']:,.0f} requests/s, {r['client_seconds']:.1f} s;"
            f" GET p50 {1000 * r['get_p50']:.0f} ms, p95 {1000 * r['get_p95']:.0f} ms;"
            f" POST p50 {1000 * r['post_p50']:.0f} ms, p95 {1000 * r['post_p95']:.0f} ms,"
            f" max {1000 * r['post_max']:.0f} ms ({r['posts_waited_out']:,} waited the full"
            f" {POST_WAIT:.0f} s and showed the receipt pending)",
            f"  answers: {r['outcomes']}; distinct receipts {r['distinct_receipts']:,};"
            f" sent again after the server closed a kept-alive connection: {r['retries'] or 0}",
            f"  drain: judged at {r['drain_rate']:,.0f}/s ({r['drain_seconds']:.1f} s from the"
            f" first receipt; receipts arrived over {r['received_span']:.1f} s), confirmations"
            f" mailed by {r['mail_seconds']:.1f} s",
            f"  signals sent during the burst: {r['signals']:,} ({names});"
            f" of them intake-sweeper wakes: {r['sweeper_wakes']}",
            f"  process_intake rounds: {r['rounds']:,}, {r['per_round']:.0f} receipts a round on"
            f" average (largest {r['largest_round']}), {r['in_activity']:.1f} s in the activity,"
            f" {r['queued']:.1f} s queued before it started, {r['between']:.1f} s between rounds;"
            f" inside the rounds that judged: {anatomy}",
            f"  activities scheduled during the burst: {activities};"
            f" history events written during the burst: {r['burst_events']:,}"
            f" ({r['burst_events'] / max(1, r['rounds']):.1f} a round): {event_types}",
            f"  history after the burst: {r['runs']} run(s), {r['history']:,} events in the"
            f" current run, {r['history_total']:,} in all",
            f"  correctness: receipts {r['receipts']:,}, accepted {r['accepted']:,}, other"
            f" {r['other']}, pending {r['pending']}; opt_in_recorded {r['events']:,}; opted in"
            f" {r['opted_in']:,}; confirmations {r['confirmations']:,}, at the sink"
            f" {r['confirmations_at_sink']:,}, duplicates {r['duplicates_at_sink']}"
            f" -> {'correct' if correct(r) else 'WRONG'}",
            f"  CPU over the burst and drain: {cpu} ({cpu_each})",
            f"  warnings and errors logged during the burst: {r['log_problems']}",
            f"  raw signals: {r['raw_signals']:,} in {r['raw_seconds']:.1f} s ="
            f" {r['raw_rate']:,.0f}/s ({absorbed_text}); history then {r['runs_after_raw']}"
            f" run(s), {r['history_after_raw']:,} / {r['history_total_after_raw']:,} events;"
            f" CPU while sending them and until absorbed: {raw_cpu}",
            f"  drain / raw signal rate: {100 * r['drain_rate'] / r['raw_rate']:.1f}%"
            " (target >= 50%)",
        ]
    )


def table(results: list[dict[str, Any]]) -> str:
    head = (
        "| opt-ins through the web | Temporal store | client: customers/s (GET + POST), at a time"
        " | POST p50 / p95 | judged: first receipt to last judged | confirmations mailed"
        " | signals from the web (sweeper) ; intake rounds | history (runs; events: current run"
        " / all runs) | raw signals | drain / raw | opt_in_recorded / opted in / accepted"
        " | confirmations at sink / duplicates | CPU: worker / web / postgres / temporal / bench |"
        "\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    rows = [head]
    for r in results:
        ok = "" if correct(r) else " **(wrong)**"
        c = r["cpu"]
        rows.append(
            f"| {r['count']:,} | {'SQLite file' if r['sqlite'] else 'in memory'} |"
            f" {r['customer_rate']:,.0f}/s ({r['client_seconds']:.1f} s, {r['concurrency']}) |"
            f" {1000 * r['post_p50']:.0f} / {1000 * r['post_p95']:.0f} ms |"
            f" {r['drain_rate']:,.0f}/s ({r['drain_seconds']:.1f} s) |"
            f" {r['mail_seconds']:.1f} s |"
            f" {r['signals']:,} ({r['sweeper_wakes']}); {r['rounds']:,} |"
            f" {r['runs']}; {r['history']:,} / {r['history_total']:,} |"
            f" {r['raw_rate']:,.0f}/s |"
            f" {100 * r['drain_rate'] / r['raw_rate']:.1f}% |"
            f" {r['events']:,} / {r['opted_in']:,} / {r['accepted']:,}{ok} |"
            f" {r['confirmations_at_sink']:,} / {r['duplicates_at_sink']} |"
            f" {c['worker']:.0f} / {c['web']:.0f} / {c['postgres']:.0f} / {c['temporal']:.0f}"
            f" / {c['bench']:.0f} s |"
        )
    return "\n".join(rows)


async def main_burst(
    counts: list[int],
    concurrency: int,
    signals: int | None,
    sqlite: bool,
    profile: Path | None = None,
) -> None:
    results = []
    with tempfile.TemporaryDirectory(prefix="nf-web-") as scratch_dir:
        scratch = Path(scratch_dir)
        scratch.chmod(0o755)
        for count in counts:
            raw = signals if signals is not None else min(count, 5000)
            result = await run_burst(count, concurrency, raw, sqlite, scratch, profile)
            results.append(result)
            print(report(result), flush=True)
    print()
    print(table(results))


# --- page latency ----------------------------------------------------------------------------------


def pages(arguments: argparse.Namespace) -> None:
    """``--pages``: the latency of the dashboard's and the action pages' GETs. To be written (issue
    9): reuse WebStack, CpuMeter and percentile above; add its options to ``parser()``."""
    raise SystemExit("bench/web.py --pages is not built yet; use --burst N")


def parser() -> argparse.ArgumentParser:
    found = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = found.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--burst",
        type=int,
        action="append",
        metavar="N",
        help="N customers opt in through their action pages (repeat for several runs)",
    )
    mode.add_argument("--pages", action="store_true", help="page latency (not built yet)")
    found.add_argument("--concurrency", type=int, default=50, help="customers at a time")
    found.add_argument(
        "--signals",
        type=int,
        default=None,
        metavar="N",
        help="raw wake signals for the baseline (default: min(N, 5000))",
    )
    found.add_argument(
        "--sqlite", action="store_true", help="the dev server on a SQLite file, as `noticeflow up`"
    )
    found.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="py-spy the worker and the web over the burst (collapsed stacks into DIR)",
    )
    return found


if __name__ == "__main__":
    arguments = parser().parse_args()
    problems = [f"--burst {n}: must be at least 1" for n in arguments.burst or [] if n < 1] + (
        ["--concurrency: must be at least 1"] if arguments.concurrency < 1 else []
    )
    if arguments.signals is not None and arguments.signals < 1:
        problems.append("--signals: must be at least 1")
    if problems:
        parser().error("; ".join(problems))
    if arguments.pages:
        pages(arguments)
    else:
        asyncio.run(
            main_burst(
                arguments.burst,
                arguments.concurrency,
                arguments.signals,
                arguments.sqlite,
                arguments.profile,
            )
        )
