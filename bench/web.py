"""Web benchmark: customers acting through their action pages, as their browsers do.

    python bench/web.py --burst 10000 [--concurrency 50] [--signals 5000] [--sqlite] [--profile DIR]
    python bench/web.py --pages [--notices 1000] [--customers 100000] [--requests 200]

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

``--pages`` times the dashboard's and the JSON API's GETs (issue 9: p95 <= 150 ms) with
``--notices`` notices, one of them with ``--customers`` customers. It seeds the data as
production writes it (``Seeder``: the activities' own code for the notice, approval, phases,
audience snapshot and the send's batches; the intake's and the activation round's event types
and data shapes, in time order) — 999 notices of about 100 customers in every phase and one
active opt-in notice of 100,000 (1% undelivered, 40% opted in, 2% objected, activated by the
rules) — then runs the projector (``projections.catch_up``, timed for the small notices and for
the large one alone) and checks that every notice's counts equal its rows. Then it starts
``noticeflow web``, signs in through the form (the API is read with the bearer token, as scripts
do) and, after one warm-up request per URL, sends ``--requests`` sequential GETs per page kind,
shuffled: the notice list (default, by phase, search), the large notice's page (default, sorted
by each column both ways, deep pages, each filter), its live fragment and timeline pages, small
notices' pages, and the API's notice list, customers and events following ``next_cursor``.
Printed: p50 / p95 / max per page kind and overall, the slowest URLs, the CPU of the web and
PostgreSQL and the load average meanwhile, and a row for docs/benchmarks.md.
``--no-web-indexes`` drops migration 012's indexes first, to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import itertools
import json
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlencode

import asyncpg
import httpx
import psutil
import structlog
from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ siblings
from intake import Stack, stop_process, wait_port

from noticeflow import eventstore, projections, repository, users
from noticeflow.application.deps import Deps
from noticeflow.application.lifecycle import LifecycleService
from noticeflow.application.sending import Delivered, SendingService
from noticeflow.application.sending import _deadline as customer_deadline_of
from noticeflow.contracts import AudienceRequest, EventRequest, NoticeStatus, PhaseChange
from noticeflow.crypto import CustomerKey, load_keys
from noticeflow.domain.customers import Customer
from noticeflow.domain.events import NoticeCancelled
from noticeflow.domain.notice import NoticeSpec, parse_notice
from noticeflow.domain.rules import (
    Case,
    CaseStatus,
    Delivery,
    Phase,
    Verdict,
    activation_ground,
    decide,
    is_deemed_acceptance,
    is_settled,
    is_timely,
)
from noticeflow.domain.signals import WAKE_SIGNAL
from noticeflow.links import LinkSigner
from noticeflow.mail import SmtpReply, message_id
from noticeflow.mailer import ContactOutcome
from noticeflow.sink import free_port
from noticeflow.users import Role
from noticeflow.web import queries

SECRET = "VGMPLxafyKUJn87NTdxsoG0BllNM4fEguP4GHSoUZbk"  # a link key as keys must be
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
    link_wait: float | None = None  # NOTICEFLOW_LINK_WAIT_SECONDS for the web (None: its default)

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
        if self.link_wait is not None:
            env["NOTICEFLOW_LINK_WAIT_SECONDS"] = str(self.link_wait)
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
    backlog: bool = False,
) -> dict[str, Any]:
    stack = WebStack(scratch / f"web-{count}", sqlite=sqlite)
    stack.web_port = free_port()
    if backlog:
        stack.link_wait = 0.0  # the posts do not wait for a judgement that cannot come yet
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
        if backlog:  # nothing judges while the burst is received: the worker is stopped
            assert stack.worker is not None
            os.kill(stack.worker.pid, signal.SIGSTOP)
        clock_start = await pool.fetchval("SELECT clock_timestamp()")
        result = await burst(stack.web_url, tokens, concurrency)
        resumed_at = None
        if backlog:
            resumed_at = await pool.fetchval("SELECT clock_timestamp()")
            assert stack.worker is not None
            os.kill(stack.worker.pid, signal.SIGCONT)
            print(f"{count:,} receipts written with the worker stopped; resumed it", flush=True)
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
        backlog_drain = (
            (times["last_judged"] - resumed_at).total_seconds() if resumed_at else float("nan")
        )
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
            "backlog": backlog,
            "backlog_seconds": backlog_drain,
            "backlog_rate": count / backlog_drain if resumed_at else float("nan"),
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
            " (target >= 50%)"
            + (
                f"\n  backlog: {r['count']:,} receipts judged {r['backlog_seconds']:.1f} s after the"
                f" worker resumed: {r['backlog_rate']:,.0f}/s, "
                f"{100 * r['backlog_rate'] / r['raw_rate']:.1f}% of the raw signal rate"
                if r.get("backlog")
                else ""
            ),
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
    backlog: bool = False,
) -> None:
    results = []
    with tempfile.TemporaryDirectory(prefix="nf-web-") as scratch_dir:
        scratch = Path(scratch_dir)
        scratch.chmod(0o755)
        for count in counts:
            raw = signals if signals is not None else min(count, 5000)
            result = await run_burst(count, concurrency, raw, sqlite, scratch, profile, backlog)
            results.append(result)
            print(report(result), flush=True)
    print()
    print(table(results))


# --- page latency ----------------------------------------------------------------------------------
#
# ``--pages``: 1,000 notices, one of them with 100,000 customers, seeded as production writes them
# (the activities' own code where it needs no Temporal, the same event types and data shapes
# elsewhere), projected by the real projector, then the dashboard's and the API's pages timed.

PAGE_USER, PAGE_PASSWORD = "pat", "pat-bench-password-1"  # an approver signs in through the form
PAGE_TOKEN = "bench-web-token-" + "t" * 24  # the API is read with the bearer token, as scripts do
MAIL_FROM = "privacy@vendor.example"
ZONES = (
    ("America/New_York", "US"),
    ("America/Chicago", "US"),
    ("America/Los_Angeles", "US"),
    ("Europe/Berlin", "DE"),
    ("Europe/Paris", "FR"),
    ("Europe/London", "GB"),
)
TERMS = ((None, None), (30, "calendar"), (20, "business"), (30, "business"))  # contract windows
SUBPROCESSORS = (
    "Acme Analytics GmbH",
    "Globex Cloud Ltd",
    "Initech Hosting Inc",
    "Umbrella Translation SA",
    "Hooli Mail Inc",
    "Stark Support BV",
    "Wayne Payments plc",
    "Tyrell Search AB",
)
SEARCHES = ("analytics", "Globex", "n0500", "hosting inc", "no such thing")
# How the small notices are spread: drafts, one being mailed now, sent ones (their phase follows
# from their dates: window open, awaiting the effective date, active) and cancelled ones.
SMALL_KINDS = (("draft", 0.04), ("notifying", 0.01), ("sent", 0.90), ("cancelled", 0.05))
WINDOW = "P21D"
EFFECTIVE_AFTER = timedelta(days=50)  # after every customer's deadline (30 business days at most)
INTAKE_BATCH = 500  # intake events appended in one transaction


def page_customers(count: int, groups: int) -> list[Customer]:
    """N customers, all with the service ``assistant`` (the large notice's audience) and one of
    ``groups`` group services ``g000``... (a small notice's audience); timezones, countries
    (public holidays) and contract windows vary."""
    found = []
    for i in range(count):
        zone, country = ZONES[i % len(ZONES)]
        days, unit = TERMS[(i // len(ZONES)) % len(TERMS)]
        found.append(
            Customer(
                customer_id=f"c{i:06d}",
                name=f"Customer {i}",
                region="US",
                services=["assistant", f"g{i % groups:03d}"],
                contact_emails=[f"privacy@c{i:06d}.example"],
                timezone=zone,
                window_days=days,
                window_unit=unit,
                country=country,
            )
        )
    return found


@dataclass
class Plan:
    """One notice to seed: its dates and how its customers behave (shares are probabilities)."""

    notice_id: str
    kind: str  # draft, notifying (being mailed now), sent, cancelled
    opt_in: bool
    services: list[str]
    subprocessor: str
    created: datetime
    send_rate: float = 20.0  # customers mailed a second
    sent_share: float = 1.0  # notifying: the part mailed so far
    undelivered: float = 0.01
    opted_in: float = 0.4  # opt-in notices: customers who opt in
    revoked: float = 0.05  # of those, who revoke later
    objected: float = 0.03
    late: float = 0.25  # of the objections: received after the customer's deadline, if it passed
    resolved: float = 0.6  # of the objections: resolved by ops
    excluded: float = 0.2  # of the undelivered: settled by ops with `notice exclude`
    cancel_at: datetime | None = None

    @property
    def effective(self) -> datetime:
        return self.created + EFFECTIVE_AFTER


@dataclass
class Sim:
    """A customer as the workflow and the intake would know it, to decide its verdict."""

    delivered_at: datetime | None
    deadline: datetime | None
    opted_in: bool = False
    cases: dict[str, Case] = field(default_factory=dict)  # receipt id -> case
    excluded: bool = False


@dataclass
class Seeded:
    phases: Counter[str] = field(default_factory=Counter)
    events: int = 0


def _between(rng: random.Random, start: datetime, end: datetime) -> datetime:
    return start + (end - start) * rng.random() if end > start else start


class Seeder:
    """Writes notices as production does: ``repository.create_notice``; the services'
    ``check_approval``, ``append_event``, ``record_phase``, ``snapshot_audience`` and the send's
    batch recording (``SendingService._record``: the delivery events and the recipients'
    state, 200 customers a transaction); the intake's events (objections, resolutions, opt-ins
    and revocations, exclusions) and the activation round's (deemed acceptance, sub-processor
    enabled, customer settled, by ``rules.decide``) with the data shapes the services
    (noticeflow/application/intake.py and lifecycle.py) append, in time order, ``INTAKE_BATCH``
    a transaction. Not written: the intake's receipts and the objections/enablement tables (no
    page reads them)."""

    def __init__(self, pool: asyncpg.Pool, now: datetime, keys: dict[str, CustomerKey]) -> None:
        self.pool = pool
        self.now = now
        self.keys = keys
        self.deps = Deps(
            pool=pool,
            mailer=cast(Any, None),  # nothing is mailed: the outcomes are made here
            links=LinkSigner(SECRET, "http://127.0.0.1"),
        )
        self.life = LifecycleService(self.deps)
        self.sending = SendingService(self.deps)
        self.seeded = Seeded()

    def _seal(self, customer_id: str, place: str, text: str) -> str:
        """``text`` sealed as the worker seals it for ``place`` ("<event type>.<field>")."""
        return self.keys[customer_id].seal(place, text)

    async def _append(self, stream: str, events: list[eventstore.NewEvent]) -> None:
        if events:
            async with self.pool.acquire() as connection:
                await eventstore.append_events(connection, stream, events)
            self.seeded.events += len(events)
            events.clear()

    async def notice(self, plan: Plan, rng: random.Random) -> None:
        spec = parse_notice(
            {
                "notice_id": plan.notice_id,
                "title": f"{plan.subprocessor} for {', '.join(plan.services)}",
                "subprocessor": plan.subprocessor,
                "subprocessor_location": "Ireland",
                "purpose": "Customer support and analytics",
                "data_categories": ["contact details", "usage data"],
                "services": plan.services,
                "transfer_mechanism": "EU SCC 2021 Module 3",
                "opt_in": plan.opt_in,
                "objection_window": WINDOW,
                "effective_at": plan.effective.isoformat(),
                "audience": {"services": plan.services},
            }
        )
        notice_id = spec.notice_id
        stream = eventstore.notice_stream(notice_id)
        await repository.create_notice(self.pool, spec, "alice", plan.created)
        self.seeded.events += 1
        if plan.kind == "draft":
            self.seeded.phases["draft"] += 1
            return
        steps = itertools.count(1)

        def key(step: str) -> str:  # as the workflow's _step_key: a run id and a counter
            return f"seed-{notice_id}/{step}-{next(steps)}"

        async def phase(name: Phase, at: datetime, closes: datetime | None = None) -> None:
            await self.life.record_phase(
                PhaseChange(
                    notice_id=notice_id, phase=name, at=at, key=key("phase"),
                    effective_at=spec.effective_at, window_closes_at=closes, approved_by="bob",
                )
            )  # fmt: skip
            self.seeded.events += 1

        approved = plan.created + timedelta(hours=1)
        check = await self.sending.check_approval(AudienceRequest(spec=spec, at=approved))
        await self.life.append_event(
            EventRequest(
                notice_id=notice_id, key=key("notice_approved"), event_type="notice_approved",
                data={"by": "bob", "audience_size": check.audience_size}, at=approved,
            )
        )  # fmt: skip
        self.seeded.events += 1
        await phase(Phase.notifying, approved)
        await self.sending.snapshot_audience(AudienceRequest(spec=spec, at=approved))
        self.seeded.events += 1
        rows = [
            dict(row)
            for row in await self.pool.fetch(
                "SELECT customer_id, timezone, window_days, window_unit, country FROM recipients"
                " WHERE notice_id = $1 ORDER BY customer_id",
                notice_id,
            )
        ]
        if plan.kind == "notifying":
            rows = rows[: int(len(rows) * plan.sent_share)]
        customers = await self._send(spec, plan, rows, approved, rng)
        if plan.kind == "notifying":
            self.seeded.phases["notifying"] += 1
            return
        sent = max((c.delivered_at for c in customers.values() if c.delivered_at), default=approved)
        closes = max((c.deadline for c in customers.values() if c.deadline), default=None)
        stop = plan.cancel_at or self.now
        horizon = min(stop, spec.effective_at)
        # The phases the workflow records as time passes, and every customer's actions.
        timeline: list[tuple[datetime, int, str, str]] = [(sent, 0, "phase", "window_open")]
        if closes is not None and closes < spec.effective_at:
            timeline.append((closes, 0, "phase", "awaiting_effective_date"))
        timeline.append((spec.effective_at, 0, "phase", "active"))
        for customer_id, c in customers.items():
            timeline += self._actions(plan, customer_id, c, sent, horizon, rng)
        timeline.sort()
        reached = "notifying"
        pending: list[eventstore.NewEvent] = []
        for at, _, what, detail in timeline:
            if at > stop:
                break
            if what == "phase":
                await self._append(stream, pending)
                await phase(Phase(detail), at, closes)
                reached = detail
                if detail == "active":
                    await self._activate(spec, stream, customers, at)
                continue
            pending.append(self._intake_event(spec, stream, what, detail, at, customers, rng))
            if len(pending) >= INTAKE_BATCH:
                await self._append(stream, pending)
        await self._append(stream, pending)
        if plan.cancel_at is not None:
            async with self.pool.acquire() as connection:  # as activities/sending.mail_change
                await eventstore.append(
                    connection, stream, key("cancellation"),
                    NoticeCancelled(
                        by="bob", reason="The sub-processor withdrew its offer", phase=reached,
                        text_sha256=spec.text_sha256(),
                    ),
                    plan.cancel_at,
                )  # fmt: skip
            self.seeded.events += 1
            await phase(Phase.cancelled, plan.cancel_at, closes)
            reached = "cancelled"
        self.seeded.phases[reached] += 1

    async def _send(
        self,
        spec: NoticeSpec,
        plan: Plan,
        rows: list[dict[str, Any]],
        approved: datetime,
        rng: random.Random,
    ) -> dict[str, Sim]:
        """The send: one accepted (or refused) contact a customer, a batch recorded at a time."""
        text_sha = spec.text_sha256()
        customers: dict[str, Sim] = {}
        at = approved
        size = self.deps.send_batch_size
        for first in range(0, len(rows), size):
            results = []
            for row in rows[first : first + size]:
                at += timedelta(seconds=1 / plan.send_rate)
                customer_id = row["customer_id"]
                mid = message_id(
                    self.keys[customer_id], spec.notice_id, f"privacy@{customer_id}.example",
                    "notice", MAIL_FROM,
                )  # fmt: skip
                if rng.random() < plan.undelivered:
                    reply = SmtpReply(550, "5.1.1", "Recipient address rejected: User unknown")
                    outcome = ContactOutcome(0, mid, "failed", reply, at, text_sha)
                    results.append(Delivered(customer_id, [outcome], None, None, None))
                    customers[customer_id] = Sim(None, None)
                else:
                    deadline = customer_deadline_of(spec, at, row)
                    reply = SmtpReply(250, "2.0.0", f"Ok: queued as {mid[1:11].upper()}")
                    outcome = ContactOutcome(0, mid, "accepted", reply, at, text_sha)
                    results.append(Delivered(customer_id, [outcome], at, at, deadline))
                    customers[customer_id] = Sim(at, deadline)
            await self.sending._record(spec, "notice", results, approved)
            self.seeded.events += len(results)
        return customers

    @staticmethod
    def _actions(
        plan: Plan,
        customer_id: str,
        c: Sim,
        sent: datetime,
        horizon: datetime,
        rng: random.Random,
    ) -> list[tuple[datetime, int, str, str]]:
        found: list[tuple[datetime, int, str, str]] = []
        if c.delivered_at is None or c.deadline is None:
            if rng.random() < plan.excluded:
                found.append((_between(rng, sent, horizon), 1, "exclude", customer_id))
            return found
        if plan.opt_in and rng.random() < plan.opted_in:
            at = c.delivered_at + (min(c.deadline, horizon) - c.delivered_at) * rng.random() ** 2
            found.append((at, 1, "opt_in", customer_id))
            if rng.random() < plan.revoked:
                found.append((_between(rng, at, horizon), 2, "revoke_opt_in", customer_id))
        if rng.random() < plan.objected:
            late = c.deadline < horizon and rng.random() < plan.late
            at = (
                _between(rng, c.deadline, horizon)
                if late
                else _between(rng, c.delivered_at, min(c.deadline, horizon))
            )
            found.append((at, 1, "object", customer_id))
            if rng.random() < plan.resolved:
                found.append((_between(rng, at, horizon), 2, "resolve", customer_id))
        return found

    def _intake_event(
        self,
        spec: NoticeSpec,
        stream: str,
        action: str,
        customer_id: str,
        at: datetime,
        customers: dict[str, Sim],
        rng: random.Random,
    ) -> eventstore.NewEvent:
        """The event noticeflow/application/intake.py appends for one judged receipt (same key
        and data)."""
        c = customers[customer_id]
        receipt_id = "r-" + rng.randbytes(10).hex()
        channel = rng.choice(("link", "link", "link", "web", "api", "cli"))

        def event(key: str, event_type: str, data: dict[str, Any]) -> eventstore.NewEvent:
            return eventstore.NewEvent(eventstore.event_id(stream, key), event_type, data, at)

        if action == "object":
            timely = is_timely(at, c.deadline)
            c.cases[receipt_id] = Case(CaseStatus.open, timely)
            return event(
                f"objection/{receipt_id}", "objection_received",
                {"customer_id": customer_id, "idempotency_key": receipt_id,
                 "receipt_id": receipt_id, "timely": timely, "channel": channel,
                 "by": self._seal(customer_id, "objection_received.by", "Privacy officer"),
                 "reason": self._seal(customer_id, "objection_received.reason",
                                      "We do not agree to this sub-processor."),
                 "received_at": at, "deadline": c.deadline},
            )  # fmt: skip
        if action == "resolve":
            outcome = rng.choice(("withdrawn", "withdrawn", "withdrawn", "excluded", "terminated"))
            closed = [rid for rid, case in c.cases.items() if case.status is CaseStatus.open]
            for rid in closed:
                c.cases[rid] = Case(CaseStatus(outcome), c.cases[rid].timely)
            return event(
                f"resolution/{receipt_id}", "objection_resolved",
                {"customer_id": customer_id, "receipt_id": receipt_id, "outcome": outcome,
                 "by": self._seal(customer_id, "objection_resolved.by", "ops"), "note": "",
                 "objections": closed},
            )  # fmt: skip
        if action in ("opt_in", "revoke_opt_in"):
            c.opted_in = action == "opt_in"
            kind = "opt_in_recorded" if c.opted_in else "opt_in_revoked"
            return event(
                f"opt-in/{receipt_id}",
                kind,
                {"customer_id": customer_id, "receipt_id": receipt_id,
                 "by": self._seal(customer_id, f"{kind}.by", "Privacy officer"),
                 "channel": channel,
                 "received_at": at},
            )  # fmt: skip
        c.excluded = True
        return event(
            f"exclusion/{receipt_id}", "customer_excluded",
            {"customer_id": customer_id, "receipt_id": receipt_id,
             "by": self._seal(customer_id, "customer_excluded.by", "ops"),
             "reason": self._seal(customer_id, "customer_excluded.reason", "No working contact"),
             "delivery": "undelivered"},
        )  # fmt: skip

    async def _activate(
        self, spec: NoticeSpec, stream: str, customers: dict[str, Sim], start: datetime
    ) -> None:
        """The activation round at the effective date: every customer decided by the rules, 5 ms
        apart, with the events LifecycleService._apply appends."""
        pending: list[eventstore.NewEvent] = []
        now = start
        for customer_id in sorted(customers):
            c = customers[customer_id]
            now += timedelta(milliseconds=5)
            cases = list(c.cases.values())
            verdict = decide(
                now=now, effective_at=spec.effective_at,
                delivery=Delivery.delivered if c.delivered_at else Delivery.undelivered,
                deadline=c.deadline, opt_in_notice=spec.opt_in, opted_in=c.opted_in, cases=cases,
                excluded_by_ops=c.excluded,
            )  # fmt: skip

            def event(key: str, event_type: str, data: dict[str, Any], at: datetime) -> None:
                pending.append(
                    eventstore.NewEvent(eventstore.event_id(stream, key), event_type, data, at)
                )

            if verdict is Verdict.activate:
                if is_deemed_acceptance(spec.opt_in, cases):
                    event(
                        f"deemed/{customer_id}", "deemed_acceptance",
                        {"customer_id": customer_id, "deadline": c.deadline}, c.deadline or now,
                    )  # fmt: skip
                event(
                    f"enable/{customer_id}/{now.isoformat()}", "subprocessor_enabled",
                    {"customer_id": customer_id, "subprocessor": spec.subprocessor,
                     "because": activation_ground(spec.opt_in, cases)}, now,
                )  # fmt: skip
            if is_settled(verdict, cases):
                event(
                    f"settled/{customer_id}/{verdict.value}/{now.isoformat()}", "customer_settled",
                    {"customer_id": customer_id, "verdict": verdict.value}, now,
                )  # fmt: skip
            if len(pending) >= INTAKE_BATCH:
                await self._append(stream, pending)
        await self._append(stream, pending)


def small_plans(count: int, groups: int, now: datetime, rng: random.Random) -> list[Plan]:
    plans = []
    kinds = [kind for kind, _ in SMALL_KINDS]
    weights = [weight for _, weight in SMALL_KINDS]
    for k in range(count):
        kind = rng.choices(kinds, weights)[0]
        subprocessor = SUBPROCESSORS[k % len(SUBPROCESSORS)]
        plan = Plan(
            notice_id=f"n{k:04d}-{subprocessor.split()[0].lower()}",
            kind=kind,
            opt_in=rng.random() < 0.3,
            services=[f"g{k % groups:03d}"],
            subprocessor=subprocessor,
            created=now,
        )
        if kind == "draft":
            plan.created = now - timedelta(days=5 * rng.random())
        elif kind == "notifying":  # approved 10 minutes ago, half mailed so far
            plan.created = now - timedelta(minutes=70)
            plan.send_rate, plan.sent_share = 0.1, 0.5
        elif kind == "cancelled":
            plan.created = now - timedelta(days=5 + 35 * rng.random())
            plan.cancel_at = plan.created + timedelta(days=2 + 2 * rng.random())
        else:  # the window open (up to 18 days ago), awaiting the effective date, or active
            plan.created = now - timedelta(days=rng.choice((1 + 17 * rng.random(),
                                                            47 + 2.5 * rng.random(),
                                                            52 + 313 * rng.random(),
                                                            52 + 313 * rng.random())))  # fmt: skip
        plans.append(plan)
    return plans


def big_plan(customers: int, now: datetime) -> Plan:
    """The large notice: an opt-in notice mailed to every customer 60 days ago at 50 a second,
    active for 10 days: 1% undelivered, 40% opted in (5% of them revoked), 2% objected."""
    return Plan(
        notice_id=f"big-{customers}",
        kind="sent",
        opt_in=True,
        services=["assistant"],
        subprocessor="Bigco Intelligence Ltd",
        created=now - timedelta(days=60),
        send_rate=50.0,
        objected=0.02,
    )


@dataclass
class Seeding:
    big: str
    big_customers: int
    phases: Counter[str]
    small_events: int
    big_events: int
    import_seconds: float
    small_seconds: float
    big_seconds: float
    project_small: tuple[int, float]  # events applied, seconds
    project_big: tuple[int, float]
    vacuum_seconds: float | None
    big_versions: int
    big_phase: str
    miscounted: list[str]  # notices whose counts in rm_notices differ from their rows


async def seed_pages(
    pool: asyncpg.Pool, notices: int, customer_count: int, vacuum: bool, seed: int
) -> Seeding:
    """Customers; the small notices, then the projector; the large notice, then the projector
    again (so its projection is timed alone)."""
    now = datetime.now(UTC)
    rng = random.Random(seed)
    groups = max(1, notices - 1)
    start = time.perf_counter()
    batch = page_customers(customer_count, groups)
    for first in range(0, len(batch), 5000):
        await repository.upsert_customers(pool, batch[first : first + 5000])
    keys = await load_keys(pool, [c.customer_id for c in batch])
    import_seconds = time.perf_counter() - start
    print(f"  {customer_count:,} customers imported in {import_seconds:.1f} s", flush=True)

    seeder = Seeder(pool, now, keys)
    start = time.perf_counter()
    plans = small_plans(notices - 1, groups, now, rng)
    gate = asyncio.Semaphore(4)
    done = 0

    async def one(plan: Plan, k: int) -> None:
        nonlocal done
        async with gate:
            await seeder.notice(plan, random.Random(f"{seed}/{k}"))
        done += 1
        if done % 100 == 0:
            print(f"  ... {done:,} of {len(plans):,} small notices seeded", flush=True)

    await asyncio.gather(*(one(plan, k) for k, plan in enumerate(plans)))
    small_seconds = time.perf_counter() - start
    small_events = seeder.seeded.events
    start = time.perf_counter()
    project_small = await projections.catch_up(pool), time.perf_counter() - start
    print(
        f"  {len(plans):,} small notices ({small_events:,} events) seeded in {small_seconds:.1f} s,"
        f" projected in {project_small[1]:.1f} s",
        flush=True,
    )

    plan = big_plan(customer_count, now)
    start = time.perf_counter()
    await seeder.notice(plan, random.Random(f"{seed}/big"))
    big_seconds = time.perf_counter() - start
    big_events = seeder.seeded.events - small_events
    start = time.perf_counter()
    project_big = await projections.catch_up(pool), time.perf_counter() - start
    print(
        f"  {plan.notice_id} ({big_events:,} events) seeded in {big_seconds:.1f} s,"
        f" projected in {project_big[1]:.1f} s",
        flush=True,
    )
    vacuum_seconds = None
    if vacuum:  # what autovacuum does within a minute of such a write: statistics, visibility map
        start = time.perf_counter()
        await pool.execute(f"VACUUM (ANALYZE) {', '.join(projections.TABLES)}, events")
        vacuum_seconds = time.perf_counter() - start
    # The pages take the filters' totals from these counts: they must equal the rows.
    miscounted = await pool.fetch(
        "SELECT n.notice_id FROM rm_notices n LEFT JOIN (SELECT notice_id, count(*) AS customers,"
        " count(*) FILTER (WHERE delivery = 'delivered') AS delivered,"
        " count(*) FILTER (WHERE delivery = 'undelivered') AS undelivered,"
        " count(*) FILTER (WHERE opted_in) AS opted_in,"
        " count(*) FILTER (WHERE activated) AS activated,"
        " count(*) FILTER (WHERE settled) AS settled, sum(open_objections) AS open_objections"
        " FROM rm_notice_customers GROUP BY notice_id) r USING (notice_id)"
        " WHERE (n.customers, n.delivered, n.undelivered, n.opted_in, n.activated, n.settled,"
        " n.open_objections) IS DISTINCT FROM (coalesce(r.customers, 0), coalesce(r.delivered, 0),"
        " coalesce(r.undelivered, 0), coalesce(r.opted_in, 0), coalesce(r.activated, 0),"
        " coalesce(r.settled, 0), coalesce(r.open_objections, 0)::int)"
    )
    versions = await pool.fetchval(
        "SELECT version FROM event_streams WHERE stream_id = $1",
        eventstore.notice_stream(plan.notice_id),
    )
    return Seeding(
        big=plan.notice_id,
        big_customers=customer_count,
        phases=seeder.seeded.phases,
        small_events=small_events,
        big_events=big_events,
        import_seconds=import_seconds,
        small_seconds=small_seconds,
        big_seconds=big_seconds,
        project_small=project_small,
        project_big=project_big,
        vacuum_seconds=vacuum_seconds,
        big_versions=int(versions),
        miscounted=[row["notice_id"] for row in miscounted],
        big_phase=str(
            await pool.fetchval("SELECT phase FROM rm_notices WHERE notice_id = $1", plan.notice_id)
        ),
    )


# --- the pages, timed -------------------------------------------------------------------------------


@dataclass
class PageKind:
    name: str
    urls: list[str]  # variants, cycled through
    api: bool = False  # read with the bearer token (else: the signed-in session)
    chain: str | None = None  # follow next_cursor from this URL instead of cycling


def page_kinds(s: Seeding, notices: int, small: list[str]) -> list[PageKind]:
    """What is timed: the notice list; the large notice's page (default, sorted by each column
    both ways, deep pages, each filter), its live fragment and timeline pages; small notices'
    pages; the JSON API's notice list, customers and events, following next_cursor."""
    big = f"/notices/{s.big}"
    last = max(1, -(-s.big_customers // 50))
    sorts = list(queries.SORTS)
    directions = ("asc", "desc")
    head = s.big_versions
    return [
        PageKind("list", ["/", "/?page=2", f"/?page={max(1, -(-notices // 50))}"]),
        PageKind("list by phase", [f"/?phase={phase}" for phase in queries.PHASES]),
        PageKind("list search", [f"/?{urlencode({'q': q})}" for q in SEARCHES]),
        PageKind("notice (default)", [big]),
        PageKind(
            "notice sorted, page 1",
            [f"{big}?sort={c}&dir={d}" for c in sorts for d in directions],
        ),
        PageKind(
            "notice sorted, deep pages",
            [
                f"{big}?sort={c}&dir={d}&page={p}"
                for c in sorts
                for d in directions
                for p in sorted({min(500, last), min(1000, last), last})
            ],
        ),
        PageKind(
            "notice filtered",
            [f"{big}?show={show}" for show in queries.SHOWS if show != "all"]
            + [f"{big}?show={show}&sort=deadline&page=2" for show in ("opted_in", "activated")],
        ),
        PageKind(
            "live fragment",
            [f"{big}/live", f"{big}/live?sort=verdict&dir=desc&page=1000"],
        ),
        PageKind(
            "timeline pages",
            [f"{big}?before={v}" for v in (head - 50, head // 2, head // 10, 60, 8)],
        ),
        PageKind("small notice", small),
        PageKind("API notice list", [], api=True, chain="/api/notices"),
        PageKind("API customers", [], api=True, chain=f"/api{big}/customers"),
        PageKind("API events", [], api=True, chain=f"/api{big}/events?limit=100"),
    ]


@dataclass
class Timed:
    seconds: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    failures: Counter[str] = field(default_factory=Counter)

    def add(self, kind: str, url: str, seconds: float) -> None:
        self.seconds.setdefault((kind, url), []).append(seconds)

    def of(self, kind: str) -> list[float]:
        return [s for (k, _), values in self.seconds.items() if k == kind for s in values]

    def all(self) -> list[float]:
        return [s for values in self.seconds.values() for s in values]


async def _sign_in(http: httpx.AsyncClient) -> None:
    page = await http.get("/login")
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    if found is None:
        raise SystemExit(f"no sign-in form at /login ({page.status_code})")
    answer = await http.post(
        "/login",
        data={"name": PAGE_USER, "password": PAGE_PASSWORD, "csrf_token": found.group(1)},
    )
    if answer.status_code != 303:
        raise SystemExit(f"sign-in refused: {answer.status_code}")


async def _chain(http: httpx.AsyncClient, start: str, limit: int) -> list[str]:
    """The URLs of a cursor chain as the API gives it out (next_cursor), at most ``limit``."""
    urls: list[str] = []
    url = start
    while url and len(urls) < limit:
        urls.append(url)
        answer = await http.get(url)
        answer.raise_for_status()
        cursor = answer.json().get("next_cursor")
        joiner = "&" if "?" in start else "?"
        url = f"{start}{joiner}{urlencode({'cursor': cursor})}" if cursor else ""
    return urls


async def time_pages(
    base_url: str, kinds: list[PageKind], requests: int, seed: int
) -> tuple[Timed, int]:
    """Sequential GETs: every variant once to warm up, then ``requests`` a kind, shuffled."""
    session = httpx.AsyncClient(base_url=base_url, timeout=120, trust_env=False)
    api = httpx.AsyncClient(
        base_url=base_url,
        timeout=120,
        trust_env=False,
        headers={"Authorization": f"Bearer {PAGE_TOKEN}"},
    )
    timed = Timed()
    try:
        await _sign_in(session)
        for kind in kinds:
            if kind.chain is not None:
                kind.urls = await _chain(api, kind.chain, requests)
        warm = 0
        for kind in kinds:
            for url in kind.urls:
                answer = await (api if kind.api else session).get(url)
                warm += 1
                if answer.status_code != 200:
                    raise SystemExit(f"warm-up: {url} answered {answer.status_code}")
        plan = [(kind, kind.urls[i % len(kind.urls)]) for kind in kinds for i in range(requests)]
        random.Random(seed).shuffle(plan)
        for n, (kind, url) in enumerate(plan, start=1):
            http = api if kind.api else session
            start = time.perf_counter()
            answer = await http.get(url)
            _ = answer.content
            seconds = time.perf_counter() - start
            if answer.status_code != 200:
                timed.failures[f"{kind.name}: {answer.status_code}"] += 1
            timed.add(kind.name, url, seconds)
            if n % 500 == 0:
                print(f"  ... {n:,} of {len(plan):,} requests", flush=True)
        return timed, warm
    finally:
        await session.aclose()
        await api.aclose()


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:.0f}"


def pages_report(s: Seeding, timed: Timed, kinds: list[PageKind], context: dict[str, Any]) -> str:
    lines = [
        f"pages: {sum(s.phases.values()):,} notices"
        f" ({', '.join(f'{p} {n}' for p, n in sorted(s.phases.items()))}; {s.big} among the"
        f" {s.big_phase}), {s.big}: {s.big_customers:,} customers, {s.big_versions:,} events in"
        " its stream;"
        f" {s.small_events + s.big_events:,} events in all",
        f"  seeding: customers {s.import_seconds:.1f} s; small notices {s.small_seconds:.1f} s"
        f" ({s.small_events:,} events), projected in {s.project_small[1]:.1f} s"
        f" ({s.project_small[0] / s.project_small[1]:,.0f} events/s); {s.big} {s.big_seconds:.1f}"
        f" s ({s.big_events:,} events), projected in {s.project_big[1]:.1f} s"
        f" ({s.project_big[0] / s.project_big[1]:,.0f} events/s)"
        + (f"; VACUUM (ANALYZE) {s.vacuum_seconds:.1f} s" if s.vacuum_seconds is not None else "")
        + (
            f"; COUNTS DIFFER FROM ROWS: {', '.join(s.miscounted[:5])}"
            if s.miscounted
            else "; every notice's counts equal its rows"
        ),
        f"  web indexes (migration 012): {context['indexes']}; commit {context['commit']};"
        f" load average before/after timing {context['load_before']} / {context['load_after']}",
        f"  timed: {len(timed.all()):,} sequential GETs after {context['warm']:,} warm-up ones,"
        f" in {context['seconds']:.1f} s; CPU meanwhile: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in context["cpu"].items() if v > 0.05)
        + (f"; FAILED: {dict(timed.failures)}" if timed.failures else "; every answer 200"),
        "",
        "| page kind | requests (variants) | p50 ms | p95 ms | max ms | slowest variant: p95 ms |",
        "|---|---|---|---|---|---|",
    ]
    for kind in kinds:
        values = timed.of(kind.name)
        if not values:
            continue
        variants = {url: v for (k, url), v in timed.seconds.items() if k == kind.name}
        worst = max(variants, key=lambda url: percentile(variants[url], 0.95))
        lines.append(
            f"| {kind.name} | {len(values):,} ({len(variants)}) | {_ms(percentile(values, 0.5))}"
            f" | {_ms(percentile(values, 0.95))} | {_ms(max(values))}"
            f" | `{worst.split('?cursor=')[0]}`: {_ms(percentile(variants[worst], 0.95))} |"
        )
    every = timed.all()
    over = [
        kind.name for kind in kinds if timed.of(kind.name)
        and percentile(timed.of(kind.name), 0.95) > 0.150
    ]  # fmt: skip
    lines += [
        f"| **overall** | {len(every):,} | {_ms(percentile(every, 0.5))}"
        f" | **{_ms(percentile(every, 0.95))}** | {_ms(max(every))} |"
        f" {'over 150 ms p95: ' + ', '.join(over) if over else 'every kind within 150 ms p95'} |",
        "",
        "slowest variants (p95 ms): "
        + "; ".join(
            f"`{url}` {_ms(percentile(v, 0.95))}"
            for (_, url), v in sorted(
                timed.seconds.items(), key=lambda item: -percentile(item[1], 0.95)
            )[:8]
        ),
        "",
        "row for docs/benchmarks.md:",
        "| notices / customers of the large notice | events | seed / project (large notice)"
        " | list p95 | notice p95 (default / sorted / deep / filtered) | live p95"
        " | timeline p95 | API p95 (list / customers / events) | overall p95 | max |",
        f"| {sum(s.phases.values()):,} / {s.big_customers:,}"
        f" | {s.small_events + s.big_events:,}"
        f" | {s.import_seconds + s.small_seconds + s.big_seconds:.0f} s"
        f" / {s.project_small[1] + s.project_big[1]:.0f} s ({s.project_big[1]:.0f} s)"
        f" | {_p95(timed, 'list', 'list by phase', 'list search')}"
        f" | {_p95(timed, 'notice (default)')} / {_p95(timed, 'notice sorted, page 1')}"
        f" / {_p95(timed, 'notice sorted, deep pages')} / {_p95(timed, 'notice filtered')}"
        f" | {_p95(timed, 'live fragment')} | {_p95(timed, 'timeline pages')}"
        f" | {_p95(timed, 'API notice list')} / {_p95(timed, 'API customers')}"
        f" / {_p95(timed, 'API events')} | {_ms(percentile(every, 0.95))} ms"
        f" | {_ms(max(every))} ms |",
    ]
    return "\n".join(lines)


def _p95(timed: Timed, *kinds: str) -> str:
    values = [s for kind in kinds for s in timed.of(kind)]
    return f"{_ms(percentile(values, 0.95))} ms" if values else "-"


def web_index_names() -> list[str]:
    """The indexes migration 012 creates (dropped again by --no-web-indexes, for comparison)."""
    path = Path(__file__).resolve().parent.parent / "noticeflow/migrations/012_web_indexes.sql"
    if not path.exists():
        return []
    return re.findall(r"CREATE INDEX (?:IF NOT EXISTS )?(\w+)", path.read_text())


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


async def run_pages(
    notices: int,
    customer_count: int,
    requests: int,
    web_indexes: bool,
    vacuum: bool,
    seed: int,
    scratch: Path,
) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    stack = WebStack(scratch / "pages")
    stack.web_port = free_port()
    await stack.start()
    try:
        assert stack.pool is not None
        pool = stack.pool
        dropped = web_index_names()
        if not web_indexes:
            for name in dropped:
                await pool.execute(f"DROP INDEX IF EXISTS {name}")
        await users.add_user(pool, PAGE_USER, Role.approver, PAGE_PASSWORD)
        print(
            f"seeding {notices:,} notices, the largest with {customer_count:,} customers",
            flush=True,
        )
        seeding = await seed_pages(pool, notices, customer_count, vacuum, seed)
        os.environ["NOTICEFLOW_WEB_TOKEN"] = PAGE_TOKEN  # the web's (a child process) only
        await stack.start_web()
        small = [
            f"/notices/{row['notice_id']}"
            for row in await pool.fetch(
                "SELECT notice_id FROM rm_notices WHERE notice_id <> $1 AND customers > 0"
                " ORDER BY notice_id LIMIT 20",
                seeding.big,
            )
        ]
        kinds = page_kinds(seeding, notices, small)
        print(f"timing the pages at {stack.web_url}: {requests} requests a kind", flush=True)
        load_before = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
        cpu = CpuMeter(stack)
        cpu.start()
        start = time.perf_counter()
        timed, warm = await time_pages(stack.web_url, kinds, requests, seed)
        seconds = time.perf_counter() - start
        spent = cpu.stop()
        context = {
            "indexes": (", ".join(dropped) if web_indexes else "dropped for comparison")
            if dropped
            else "none (no migration 012)",
            "commit": _commit(),
            "load_before": load_before,
            "load_after": "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()),
            "warm": warm,
            "seconds": seconds,
            "cpu": spent,
        }
        print(pages_report(seeding, timed, kinds, context), flush=True)
    finally:
        await stack.close()


def pages(arguments: argparse.Namespace) -> None:
    """``--pages``: seed (see ``Seeder``), project, then time the pages (see ``page_kinds``)."""
    with tempfile.TemporaryDirectory(prefix="nf-pages-") as scratch_dir:
        scratch = Path(scratch_dir)
        scratch.chmod(0o755)
        asyncio.run(
            run_pages(
                arguments.notices,
                arguments.customers,
                arguments.requests,
                not arguments.no_web_indexes,
                not arguments.no_vacuum,
                arguments.seed,
                scratch,
            )
        )


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
    mode.add_argument(
        "--pages",
        action="store_true",
        help="page latency of the dashboard and the API with --notices notices, one of them"
        " with --customers customers",
    )
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
        "--backlog",
        action="store_true",
        help="stop the worker while the burst is received (posts do not wait), then measure how"
        " fast the workflow drains the backlog",
    )
    found.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="py-spy the worker and the web over the burst (collapsed stacks into DIR)",
    )
    pages_options = found.add_argument_group("--pages")
    pages_options.add_argument("--notices", type=int, default=1000, help="notices in all")
    pages_options.add_argument(
        "--customers", type=int, default=100_000, help="customers of the large notice"
    )
    pages_options.add_argument(
        "--requests", type=int, default=200, help="timed requests a page kind"
    )
    pages_options.add_argument("--seed", type=int, default=1, help="the random data's seed")
    pages_options.add_argument(
        "--no-web-indexes",
        action="store_true",
        help="drop migration 012's indexes before seeding (to compare)",
    )
    pages_options.add_argument(
        "--no-vacuum",
        action="store_true",
        help="time the pages right after projecting, without VACUUM (ANALYZE)",
    )
    return found


if __name__ == "__main__":
    arguments = parser().parse_args()
    problems = [f"--burst {n}: must be at least 1" for n in arguments.burst or [] if n < 1] + (
        ["--concurrency: must be at least 1"] if arguments.concurrency < 1 else []
    )
    if arguments.signals is not None and arguments.signals < 1:
        problems.append("--signals: must be at least 1")
    problems += [
        f"--{name}: must be at least {low}"
        for name, low in (("notices", 2), ("customers", 1), ("requests", 1))
        if getattr(arguments, name) < low
    ]
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
                arguments.backlog,
            )
        )
