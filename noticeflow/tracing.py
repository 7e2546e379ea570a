"""OpenTelemetry tracing, off by default: with NOTICEFLOW_OTLP_ENDPOINT set, every Temporal client
noticeflow makes (CLI, web, worker, `up`) carries temporalio's TracingInterceptor, so one trace
follows an action from the command or page that sent it, through the notice's workflow, to the
activities it ran; spans are exported over OTLP/HTTP (protobuf) in batches and flushed at exit.

Spans carry Temporal's ids and names (workflow id ``notice-<id>``, activity types), never
payloads. An error's message and stack trace may quote input (Temporal itself only ever holds
them encrypted: noticeflow/codec.py), so before export every span's error status is cut to the
exception's type and its exception events to the type alone (:class:`ScrubbingExporter`). The
service name is OTEL_SERVICE_NAME, else ``noticeflow``."""

from __future__ import annotations

import atexit
import os
from typing import Any

from opentelemetry.sdk.trace.export import SpanExporter

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
    made.add_span_processor(
        BatchSpanProcessor(ScrubbingExporter(exporter), schedule_delay_millis=1000)
    )
    atexit.register(made.shutdown)  # a CLI command's spans are sent before it exits
    _PROVIDERS[endpoint] = made
    return made


def scrubbed(span: Any) -> Any:
    """``span`` (a finished ReadableSpan) without error text: the status description cut to the
    exception's type, and each exception event keeping only ``exception.type``."""
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import Status

    description = span.status.description
    status = span.status
    if description:
        status = Status(span.status.status_code, description.split(":", 1)[0][:100])
    events = [
        Event(
            event.name,
            {k: v for k, v in (event.attributes or {}).items() if k == "exception.type"},
            event.timestamp,
        )
        if event.name == "exception"
        else event
        for event in span.events
    ]
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=span.attributes,
        events=events,
        links=span.links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class ScrubbingExporter(SpanExporter):
    """A span exporter that hands the wrapped one only :func:`scrubbed` spans."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def export(self, spans: Any) -> Any:
        return self.inner.export([scrubbed(span) for span in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self.inner.force_flush(timeout_millis))
