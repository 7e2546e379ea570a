"""/metrics, /healthz and the worker's metrics port, against real parts: the web stack, a web whose
Temporal is gone, and a `noticeflow worker` process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from noticeflow import control, db, intake, repository
from noticeflow.config import Settings
from noticeflow.contracts import workflow_id
from noticeflow.sink import free_port
from noticeflow.web import ops
from noticeflow.web.app import serve
from tests import helpers
from tests.web.conftest import spec

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def notice_spec(notice_id: str) -> Any:
    # Past globex's 30-day contract window whatever the weekday.
    return spec(notice_id, effective_at=(datetime.now(UTC) + timedelta(days=35)).isoformat())


async def scrape(http: httpx.AsyncClient) -> tuple[str, Samples]:
    answer = await http.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return answer.text, parse(answer.text)


async def test_metrics_count_notices_mails_actions_and_requests(web_stack):
    notice = notice_spec("ops-metrics")
    await web_stack.notice(notice)  # acme (2 contacts), globex, initech delivered; umbrella not
    stack, nid = web_stack, notice.notice_id
    objected, _ = await control.submit(
        stack.client, stack.pool, nid, "object", {"customer_id": "initech", "reason": "No"},
        channel="api", task_queue=stack.task_queue,
    )  # fmt: skip
    unknown, _ = await control.submit(
        stack.client, stack.pool, nid, "object", {"customer_id": "nobody", "reason": "?"},
        channel="api", task_queue=stack.task_queue,
    )  # fmt: skip
    assert (objected.status, unknown.status) == ("accepted", "rejected")
    # A raw signal whose name is an address: recorded (rejected), and never a label.
    await stack.client.get_workflow_handle(workflow_id(nid)).signal(
        "jane.roe@initech.example", {"x": 1}
    )
    link = stack.links("acme", "opt_in")[0]
    token = link.rsplit("/", 1)[1]
    async with stack.http() as http:  # no sign-in: /metrics and /healthz are open
        assert (await http.get(link.removeprefix(stack.url))).status_code == 200
        assert (await http.get("/no-such-page-4711")).status_code == 404

        loop = asyncio.get_running_loop()
        give_up = loop.time() + 60
        while True:  # the raw signal and the acknowledgement mail take a moment
            text, found = await scrape(http)
            settled = (
                value(
                    found, "noticeflow_actions_received_total", action="other", channel="temporal"
                )
                if (
                    "noticeflow_actions_received_total",
                    (("action", "other"), ("channel", "temporal")),
                )
                in found
                else 0
            )
            if (
                settled == 1
                and value(found, "noticeflow_intake_pending") == 0
                and value(found, "noticeflow_mails_sent_total", kind="confirmation") >= 1
            ):
                break
            assert loop.time() < give_up, text
            await asyncio.sleep(0.5)

    assert value(found, "noticeflow_database_up") == 1
    assert value(found, "noticeflow_notices", phase="window_open") == 1
    for phase in ("draft", "notifying", "awaiting_effective_date", "active", "cancelled"):
        assert value(found, "noticeflow_notices", phase=phase) == 0
    assert value(found, "noticeflow_customers", delivery="delivered") == 3
    assert value(found, "noticeflow_customers", delivery="undelivered") == 1
    assert value(found, "noticeflow_customers", delivery="pending") == 0
    assert value(found, "noticeflow_customers_activated") == 0
    assert value(found, "noticeflow_customers_opted_in") == 0
    assert value(found, "noticeflow_customers_unsettled") == 4
    assert value(found, "noticeflow_cases_open", timely="true") == 1
    # The timely case holds a notice effective in 35 days: that many seconds, near enough.
    assert 0 < value(found, "noticeflow_timely_case_oldest_age_seconds") < 600
    effective_in = value(found, "noticeflow_timely_cases_effective_in_seconds")
    assert 34.9 * 86400 < effective_in <= 35 * 86400
    assert value(found, "noticeflow_mails_sent_total", kind="notice") == 4
    assert value(found, "noticeflow_mails_failed_total", kind="notice") == 1
    assert value(found, "noticeflow_mails_deferred", kind="notice") == 0
    assert value(found, "noticeflow_mails_sending", kind="notice") == 0
    received, rejected = "noticeflow_actions_received_total", "noticeflow_actions_rejected_total"
    assert value(found, received, action="approve", channel="cli") == 1
    assert value(found, rejected, action="approve", channel="cli") == 0
    assert value(found, received, action="object", channel="api") == 2
    assert value(found, rejected, action="object", channel="api") == 1
    assert value(found, rejected, action="other", channel="temporal") == 1
    assert value(found, "noticeflow_intake_lag_seconds") == 0
    assert value(found, "noticeflow_intake_confirmations_owed") == 0

    # The web's own requests, by route template: the link page counted, its token nowhere.
    requests = "noticeflow_web_requests_total"
    assert value(found, requests, route="/a/{token}", method="GET", status="200") == 1
    assert value(found, requests, route="unmatched", method="GET", status="404") == 1
    async with stack.http() as http:
        text, again = await scrape(http)
    assert value(again, requests, route="/metrics", method="GET", status="200") >= 1
    assert value(
        found, "noticeflow_web_request_duration_seconds_count", route="/a/{token}", method="GET"
    ) == 1  # fmt: skip
    assert token not in text and "no-such-page" not in text
    assert not helpers.addresses_in(text), helpers.addresses_in(text)
    for word in ("initech", "acme", "Initech", "ops-metrics", "alice", "bob"):
        assert word not in text, word


async def test_intake_lag_is_the_age_of_the_oldest_pending_receipt(pool):
    """No worker here: receipts stay pending, as they do while Temporal or the worker is down."""
    now = datetime.now(UTC)
    notice = helpers.notice(now, notice_id="ops-lag")
    await repository.upsert_customers(pool, helpers.customers())
    await repository.create_notice(pool, notice, "alice", now)
    for seconds in (90, 30):
        await intake.record(
            pool, "ops-lag", "opt_in", {"customer_id": "acme"}, channel="link",
            received_at=now - timedelta(seconds=seconds),
        )  # fmt: skip
    await intake.record(pool, "ops-lag", "object", {"reason": 42}, channel="web")  # malformed
    found: dict[tuple[str, tuple[str, ...]], float] = {}
    for family in await ops.database_families(pool):
        for sample in family.samples:
            found[(sample.name, tuple(sample.labels.values()))] = sample.value
    assert found[("noticeflow_intake_pending", ())] == 2
    assert 90 <= found[("noticeflow_intake_lag_seconds", ())] < 150
    assert found[("noticeflow_actions_received_total", ("opt_in", "link"))] == 2
    assert found[("noticeflow_actions_rejected_total", ("object", "web"))] == 1
    assert found[("noticeflow_notices", ("draft",))] == 0  # no projector ran: the read model
    assert found[("noticeflow_mails_sent_total", ("notice",))] == 0


async def test_healthz_on_the_stack(web_stack):
    async with web_stack.http() as http:
        answer = await http.get("/healthz")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "ok"
    assert body["database"]["ok"] is True and body["database"]["latency_ms"] >= 0
    assert body["temporal"] == {
        "ok": True,
        "latency_ms": body["temporal"]["latency_ms"],
        "namespace": "default",
    }
    assert answer.headers["cache-control"] == "no-store"


async def test_healthz_says_what_is_down(database_url, tmp_path):
    """A web whose Temporal address has nothing listening: 503, and the reason; then its database
    goes away too. /metrics keeps answering with what it can read."""
    dead = f"127.0.0.1:{free_port()}"
    port = free_port()
    settings = Settings(
        data_dir=tmp_path,
        temporal_address=dead,
        database_url=database_url,
        smtp_url="smtp://127.0.0.1:1",
        secret_key="fT58r4debguVICJsn4n6bqPf6cb9-iCNL9Wpsqd6jFs",
        web_host="127.0.0.1",
        web_port=port,
    )
    pool = await db.create_pool(database_url)
    stop = asyncio.Event()
    started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    web = asyncio.create_task(serve(settings, stop, pool=pool, started=started))
    try:
        url = await asyncio.wait_for(started, 30)
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            answer = await http.get("/healthz")
            assert answer.status_code == 503, answer.text
            body = answer.json()
            assert body["status"] == "degraded"
            assert body["database"]["ok"] is True
            assert body["temporal"]["ok"] is False
            assert body["temporal"]["error"].startswith(f"{dead}: ")

            _, found = await scrape(http)
            assert value(found, "noticeflow_database_up") == 1
            assert value(found, "noticeflow_notices", phase="draft") == 0

            await pool.close()
            answer = await http.get("/healthz")
            assert answer.status_code == 503
            body = answer.json()
            assert body["database"]["ok"] is False and "closed" in body["database"]["error"]
            await asyncio.sleep(ops.SCRAPE_REUSE)
            _, found = await scrape(http)
            assert value(found, "noticeflow_database_up") == 0
            assert value(found, "noticeflow_web_requests_total", route="/healthz", method="GET",
                         status="503") == 2  # fmt: skip
    finally:
        stop.set()
        await asyncio.wait_for(web, 30)
        await pool.close()


async def test_the_worker_serves_the_sdk_metrics_on_its_own_port(
    dev_server_env, database_url, pool, smtp_sink, tmp_path: Path
):
    """`noticeflow worker` with NOTICEFLOW_WORKER_METRICS_ADDRESS: the SDK's metrics (pollers,
    task slots, workflow and activity latencies) for Prometheus, labelled by task queue."""
    address = f"127.0.0.1:{free_port()}"
    task_queue = f"tq-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "NOTICEFLOW_DATA_DIR": str(tmp_path),
        "NOTICEFLOW_TEMPORAL_ADDRESS": dev_server_env.client.service_client.config.target_host,
        "NOTICEFLOW_DATABASE_URL": database_url,
        "NOTICEFLOW_SMTP_URL": smtp_sink.url,
        "NOTICEFLOW_TASK_QUEUE": task_queue,
        "NOTICEFLOW_WORKER_METRICS_ADDRESS": address,
    }
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "noticeflow.cli", "worker",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    notice = helpers.notice(datetime.now(UTC), notice_id=f"ops-worker-{uuid.uuid4().hex[:6]}")
    try:
        # A notice for this worker: its first workflow task and activity show in the metrics.
        await control.start_notice(dev_server_env.client, pool, notice, "alice", task_queue)
        # An activity shows in some metrics when its task is received and in others only once it
        # has run (a CI run once read them in between): wait for all of them.
        expected = {
            "temporal_worker_task_slots_available",
            "temporal_num_pollers",
            "temporal_workflow_task_execution_latency_count",
            "temporal_activity_execution_latency_count",
        }
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 60
        text, names = "", set[str]()
        async with httpx.AsyncClient(timeout=5) as http:
            while 'activity_type="record_phase"' not in text or not expected <= names:
                assert worker.returncode is None, await worker.stdout.read()  # type: ignore[union-attr]
                assert loop.time() < give_up, sorted(expected - names) or "nothing served"
                await asyncio.sleep(0.5)
                try:
                    text = (await http.get(f"http://{address}/metrics")).text
                except httpx.TransportError:
                    continue
                names = {name for name, _ in parse(text)}
        assert f'task_queue="{task_queue}"' in text
        assert not helpers.addresses_in(text)
        assert "alice" not in text
    finally:
        with contextlib.suppress(Exception):
            await dev_server_env.client.get_workflow_handle(
                workflow_id(notice.notice_id)
            ).terminate("test over")
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
        output = (await asyncio.wait_for(worker.communicate(), 60))[0].decode()
    assert worker.returncode == 0, output
    assert f"http://{address}/metrics" in output  # the start line names the metrics address
