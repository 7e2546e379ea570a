"""OpenTelemetry tracing end to end (issue 13 item 4), on real parts: a notice created by the CLI
(a separate process) with NOTICEFLOW_OTLP_ENDPOINT set, run by a worker whose client was made the
product's way (noticeflow.temporal.connect), against a local OTLP/HTTP receiver. One trace goes
from the CLI's StartWorkflow through the workflow to its activities; spans carry ids, never
personal data; without the setting no interceptor is installed."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from noticeflow import repository, tracing
from noticeflow.config import Settings
from noticeflow.temporal import connect
from tests import helpers
from tests.test_cli_end_to_end import _toml
from worker.main import build_worker, make_deps


class _Receiver(BaseHTTPRequestHandler):
    spans: list[tuple[str, str, dict[str, str], str]] = []  # (service, name, attributes, trace)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            service = next(
                a.value.string_value for a in resource.resource.attributes
                if a.key == "service.name"
            )  # fmt: skip
            for scope in resource.scope_spans:
                for span in scope.spans:
                    attributes = {a.key: str(a.value) for a in span.attributes}
                    _Receiver.spans.append((service, span.name, attributes, span.trace_id.hex()))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    _Receiver.spans = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


async def test_one_trace_from_the_cli_through_the_workflow_to_its_activities(
    receiver, dev_server_env, database_url, pool, smtp_sink, tmp_path: Path
):
    address = dev_server_env.client.service_client.config.target_host
    task_queue = f"tq-{uuid.uuid4().hex[:8]}"
    client = await connect(Settings(temporal_address=address, otlp_endpoint=receiver))
    await repository.upsert_customers(pool, helpers.customers())
    now = datetime.now(UTC)
    spec = helpers.notice(now, notice_id=f"traced-{uuid.uuid4().hex[:6]}",
                          effective_at=(now + timedelta(days=30)).isoformat())  # fmt: skip
    notice_file = tmp_path / "notice.toml"
    notice_file.write_text(_toml(spec.model_dump(mode="json", exclude={"how_to_object", "body"})))
    env = {
        **os.environ,
        "NOTICEFLOW_TEMPORAL_ADDRESS": address,
        "NOTICEFLOW_DATABASE_URL": database_url,
        "NOTICEFLOW_TASK_QUEUE": task_queue,
        "NOTICEFLOW_DATA_DIR": str(tmp_path / "data"),
        "NOTICEFLOW_OTLP_ENDPOINT": receiver,
        "OTEL_SERVICE_NAME": "noticeflow-cli",
    }
    async with build_worker(client, make_deps(pool, smtp_sink.url, "v@vendor.example"), task_queue):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "noticeflow.cli", "notice", "create", str(notice_file),
            "--by", "alice", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await process.communicate()
        assert process.returncode == 0, err.decode()
        handle = client.get_workflow_handle(f"notice-{spec.notice_id}")
        for _ in range(100):  # the draft phase recorded: the workflow ran an activity
            if await pool.fetchval(
                "SELECT phase FROM notices WHERE notice_id = $1", spec.notice_id
            ) == "draft" and await handle.describe():  # fmt: skip
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
    tracing.provider(receiver).force_flush()
    await handle.terminate("test done")

    names = {(service, name) for service, name, _, _ in _Receiver.spans}
    assert ("noticeflow-cli", "StartWorkflow:NoticeWorkflow") in names, names
    assert any(name == "RunWorkflow:NoticeWorkflow" for _, name in names), names
    assert any(name.startswith("StartActivity:") for _, name in names), names
    assert any(name.startswith("RunActivity:") for _, name in names), names
    cli_trace = next(t for s, n, _, t in _Receiver.spans if n == "StartWorkflow:NoticeWorkflow")
    traced = {name for _, name, _, trace in _Receiver.spans if trace == cli_trace}
    assert "RunWorkflow:NoticeWorkflow" in traced and any(
        n.startswith("RunActivity:") for n in traced
    ), traced  # one trace, from the command to the activities
    shown = " ".join(str(a) for _, _, a, _ in _Receiver.spans)
    assert "@" not in shown and "Acme" not in shown  # ids only, never personal data


def test_tracing_is_off_without_an_endpoint():
    assert tracing.interceptors(None) == [] and tracing.interceptors("") == []


def test_error_text_never_leaves_the_process():
    """An error's message or stack trace may quote input (an address, a reason): exported spans
    keep only the exception's type, in their status and in their exception events."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import Status, StatusCode

    kept = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(tracing.ScrubbingExporter(kept)))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span(
        "RunActivity:send_notices", set_status_on_exception=False
    ) as span:
        error = ValueError("mail to jane@acme.example refused: 'No AI on our data'")
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"ValueError: {error}"))
    (exported,) = kept.get_finished_spans()
    assert exported.status.status_code is StatusCode.ERROR
    assert exported.status.description == "ValueError"
    (event,) = exported.events
    assert event.name == "exception" and dict(event.attributes or {}) == {
        "exception.type": "ValueError"
    }
    assert exported.name == "RunActivity:send_notices"
