"""OpenTelemetry tracing, off by default: with NOTICEFLOW_OTLP_ENDPOINT set, every Temporal client
noticeflow makes (CLI, web, worker, `up`) carries temporalio's TracingInterceptor, so one trace
follows an action from the command or page that sent it, through the notice's workflow, to the
activities it ran; spans are exported over OTLP/HTTP (protobuf) in batches and flushed at exit.

Spans carry Temporal's ids and names (workflow id ``notice-<id>``, activity types), never
payloads: no personal data. The service name is OTEL_SERVICE_NAME, else ``noticeflow``."""

from __future__ import annotations

import atexit
import os
from typing import Any

_PROVIDERS: dict[str, Any] = {}  # one tracer provider per endpoint and process


def interceptors(endpoint: str | None) -> list[Any]:
    """The client interceptors tracing needs ([] when no endpoint is configured)."""
    if not endpoint:
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor(provider(endpoint).get_tracer("noticeflow"))]


def provider(endpoint: str) -> Any:
    """This process's tracer provider exporting to ``endpoint`` (created once, flushed at exit)."""
    found = _PROVIDERS.get(endpoint)
    if found is not None:
        return found
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    made = TracerProvider(
        resource=Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME", "noticeflow")})
    )
    exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces", timeout=5)
    made.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000))
    atexit.register(made.shutdown)  # a CLI command's spans are sent before it exits
    _PROVIDERS[endpoint] = made
    return made
