"""Operations surfaces: `/metrics` (Prometheus text format) and `/healthz`, and the per-route
request metrics (`instrument(app)` adds the middleware).

Nothing personal is ever a metric or a label: counts by phase, kind, status, channel and route
*template* only (`/a/{token}`, never a token). The database-derived metrics are read at every
scrape with a few GROUP BY counts, into a fresh registry (see docs/operations.md for each name).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg
import structlog
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from noticeflow.domain.rules import Delivery, Phase
from noticeflow.domain.signals import SIGNAL_PAYLOADS
from noticeflow.intake import CHANNELS
from noticeflow.web.context import Web, get_web

log = structlog.get_logger(__name__)

router = APIRouter(include_in_schema=False)

DATABASE_TIMEOUT = 2.0  # /healthz: seconds the database has to answer SELECT 1
TEMPORAL_TIMEOUT = 3.0  # /healthz: seconds Temporal has to answer GetSystemInfo
SCRAPE_TIMEOUT_MS = 5000  # /metrics: statement timeout of each count
SCRAPE_REUSE = 1.0  # /metrics: scrapes this close together share one set of counts

METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10)
ACTIONS = sorted(SIGNAL_PAYLOADS)
# The delivery ledger's kinds, as labels: the ledger's own kind carries ids (a receipt, a run).
MAIL_KINDS = (
    "notice",
    "reminder",
    "activation",
    "resend",
    "confirmation",
    "postponement",
    "cancellation",
    "other",
)
MAIL_KIND_SQL = (
    "CASE WHEN kind IN ('notice', 'reminder', 'activation') THEN kind"
    " WHEN kind LIKE 'resend-%' THEN 'resend'"
    " WHEN kind LIKE 'confirmation/%' THEN 'confirmation'"
    " WHEN kind LIKE '%/postponement-%' THEN 'postponement'"
    " WHEN kind LIKE '%/cancellation-%' THEN 'cancellation'"
    " ELSE 'other' END"
)
# Ledger status -> metric. `accepted`: the mail server took the message (sent).
MAIL_STATUSES = {
    "accepted": "sent",
    "failed": "failed",
    "deferred": "deferred",
    "sending": "sending",
}


# --- request metrics -------------------------------------------------------------------------


@dataclass
class Ops:
    """Per app: the web's own metrics, and the last database scrape (shared by close scrapes)."""

    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry())
    requests: Counter = field(init=False)
    durations: Histogram = field(init=False)
    scrape_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_scrape: tuple[float, bytes] | None = None

    def __post_init__(self) -> None:
        self.requests = Counter(
            "noticeflow_web_requests",
            "HTTP requests answered, by route template, method and status code",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.durations = Histogram(
            "noticeflow_web_request_duration_seconds",
            "Time to answer an HTTP request, by route template and method (event streams:"
            " time to the response headers)",
            ["route", "method"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)


def route_template(scope: Scope) -> str:
    """The matched route's template (`/a/{token}`), never the path a client sent."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) and path else "unmatched"


class RequestMetrics:
    """ASGI middleware: counts and times every HTTP request by route template, method, status."""

    def __init__(self, app: ASGIApp, ops: Ops) -> None:
        self.app = app
        self.ops = ops

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before any response becomes the error handler's 500
        headers_at: float | None = None
        stream = False

        async def watch(message: Message) -> None:
            nonlocal status, headers_at, stream
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers_at = time.perf_counter()
                stream = any(
                    key.lower() == b"content-type" and value.startswith(b"text/event-stream")
                    for key, value in message.get("headers", ())
                )
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            route = route_template(scope)
            method = scope.get("method", "")
            method = method if method in METHODS else "other"
            ended = headers_at if stream and headers_at is not None else time.perf_counter()
            self.ops.requests.labels(route, method, str(status)).inc()
            self.ops.durations.labels(route, method).observe(ended - started)


def instrument(app: FastAPI) -> None:
    """Count and time the app's requests (for /metrics); call before the app starts."""
    ops = Ops()
    app.state.ops = ops
    app.add_middleware(RequestMetrics, ops=ops)


def _ops(request: Request) -> Ops:
    ops: Ops | None = getattr(request.app.state, "ops", None)
    if ops is None:  # not instrumented: /metrics still serves the database's counts
        ops = request.app.state.ops = Ops()
    return ops


# --- /metrics --------------------------------------------------------------------------------


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


async def database_families(pool: asyncpg.Pool) -> list[Metric]:
    """Counts from the records and read models: cheap GROUP BYs, each with a statement timeout."""
    notices = _gauge("noticeflow_notices", "Notices by phase (read model rm_notices)", ["phase"])
    customers = _gauge(
        "noticeflow_customers",
        "Customers in notice audiences (one per notice and customer), by delivery state",
        ["delivery"],
    )
    opted_in = _gauge("noticeflow_customers_opted_in", "Audience customers who opted in")
    activated = _gauge(
        "noticeflow_customers_activated",
        "Audience customers for whom the sub-processor was switched on (activations)",
    )
    unsettled = _gauge(
        "noticeflow_customers_unsettled", "Audience customers not settled yet (neither way)"
    )
    cases = _gauge("noticeflow_cases_open", "Open objection cases, timely or late", ["timely"])
    oldest = _gauge(
        "noticeflow_timely_case_oldest_age_seconds",
        "Age of the oldest open timely case (0 when none is open)",
    )
    held = _gauge(
        "noticeflow_timely_cases_effective_in_seconds",
        "Seconds until the nearest effective date of a notice with a timely open case (negative:"
        " passed; no sample when none is open)",
    )
    sent = CounterMetricFamily(
        "noticeflow_mails_sent",
        "Mails the mail server accepted (delivery ledger), by kind",
        labels=["kind"],
    )
    failed = CounterMetricFamily(
        "noticeflow_mails_failed",
        "Mails that failed for good (5xx, or 4xx past the give-up time), by kind",
        labels=["kind"],
    )
    deferred = _gauge(
        "noticeflow_mails_deferred",
        "Mails whose last attempt got a 4xx reply and wait for another try, by kind",
        ["kind"],
    )
    sending = _gauge(
        "noticeflow_mails_sending",
        "Mails being sent now, or whose outcome a crash left unknown (sent again), by kind",
        ["kind"],
    )
    received = CounterMetricFamily(
        "noticeflow_actions_received",
        "Actions written to the intake of record, by kind and channel",
        labels=["action", "channel"],
    )
    rejected = CounterMetricFamily(
        "noticeflow_actions_rejected",
        "Actions recorded as rejected (with their reason), by kind and channel",
        labels=["action", "channel"],
    )
    pending = _gauge("noticeflow_intake_pending", "Receipts not judged yet")
    lag = _gauge(
        "noticeflow_intake_lag_seconds",
        "Age of the oldest receipt not judged yet (0 when none waits)",
    )
    owed = _gauge(
        "noticeflow_intake_confirmations_owed", "Judged receipts whose confirmation mail is owed"
    )
    async with pool.acquire() as connection, connection.transaction(readonly=True):
        await connection.execute(f"SET LOCAL statement_timeout = {SCRAPE_TIMEOUT_MS}")
        phases = dict.fromkeys((p.value for p in Phase), 0)
        for row in await connection.fetch(
            "SELECT phase, count(*) AS n FROM rm_notices GROUP BY phase"
        ):
            key = row["phase"] if row["phase"] in phases else "other"
            phases[key] = phases.get(key, 0) + row["n"]
        for phase, count in phases.items():
            notices.add_metric([phase], count)

        states = dict.fromkeys((d.value for d in Delivery), 0)
        totals = [0, 0, 0]
        for row in await connection.fetch(
            "SELECT delivery, count(*) AS n, count(*) FILTER (WHERE opted_in) AS opted_in,"
            " count(*) FILTER (WHERE activated) AS activated,"
            " count(*) FILTER (WHERE NOT settled) AS unsettled"
            " FROM recipients GROUP BY delivery"
        ):
            key = row["delivery"] if row["delivery"] in states else "other"
            states[key] = states.get(key, 0) + row["n"]
            for index, column in enumerate(("opted_in", "activated", "unsettled")):
                totals[index] += row[column]
        for state, count in states.items():
            customers.add_metric([state], count)
        opted_in.add_metric([], totals[0])
        activated.add_metric([], totals[1])
        unsettled.add_metric([], totals[2])

        timely = {"true": 0, "false": 0}
        for row in await connection.fetch(
            "SELECT timely, count(*) AS n FROM objections WHERE status = 'open' GROUP BY timely"
        ):
            timely["true" if row["timely"] else "false"] += row["n"]
        for flag, count in timely.items():
            cases.add_metric([flag], count)
        soonest = await connection.fetchval(
            # The nearest effective date of a notice that a timely open case still holds (the
            # customers it holds are not activated on that date until ops resolve the case).
            "SELECT extract(epoch FROM min(n.effective_at) - now()) FROM notices n"
            " WHERE n.phase IN ('window_open', 'awaiting_effective_date', 'active')"
            " AND EXISTS (SELECT 1 FROM objections o WHERE o.notice_id = n.notice_id"
            "   AND o.status = 'open' AND o.timely)"
        )
        if soonest is not None:  # no series when no timely case is open
            held.add_metric([], float(soonest))
        oldest_case = await connection.fetchval(
            "SELECT extract(epoch FROM now() - min(received_at)) FROM objections"
            " WHERE status = 'open' AND timely"
        )
        oldest.add_metric([], max(0.0, float(oldest_case or 0)))

        mails = {(kind, status): 0 for kind in MAIL_KINDS for status in MAIL_STATUSES.values()}
        for row in await connection.fetch(
            f"SELECT {MAIL_KIND_SQL} AS kind, status, count(*) AS n FROM deliveries GROUP BY 1, 2"
        ):
            status = MAIL_STATUSES.get(row["status"])
            if status is not None:
                mails[(row["kind"], status)] += row["n"]
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
            "sent": sent, "failed": failed, "deferred": deferred, "sending": sending,
        }  # fmt: skip
        for (kind, status), count in mails.items():
            families[status].add_metric([kind], count)

        for row in await connection.fetch(
            "SELECT CASE WHEN action = ANY($1::text[]) THEN action ELSE 'other' END AS action,"
            " CASE WHEN channel = ANY($2::text[]) THEN channel ELSE 'other' END AS channel,"
            " count(*) AS n, count(*) FILTER (WHERE status = 'rejected') AS rejected"
            " FROM intake GROUP BY 1, 2 ORDER BY 1, 2",
            ACTIONS,
            sorted(CHANNELS),
        ):
            received.add_metric([row["action"], row["channel"]], row["n"])
            rejected.add_metric([row["action"], row["channel"]], row["rejected"])

        # The partial index intake_pending holds exactly these rows.
        row = await connection.fetchrow(
            "SELECT count(*) FILTER (WHERE status = 'pending') AS pending,"
            " coalesce(extract(epoch FROM clock_timestamp()"
            "   - min(received_at) FILTER (WHERE status = 'pending')), 0)::float8 AS lag,"
            " count(*) FILTER (WHERE mail_due IS NOT NULL) AS owed"
            " FROM intake WHERE status = 'pending' OR mail_due IS NOT NULL"
        )
        assert row is not None
        pending.add_metric([], row["pending"])
        lag.add_metric([], max(0.0, row["lag"]))
        owed.add_metric([], row["owed"])
    return [
        notices, customers, opted_in, activated, unsettled, cases, held, oldest,
        sent, failed, deferred, sending, received, rejected, pending, lag, owed,
    ]  # fmt: skip


async def _scrape(web: Web, ops: Ops) -> bytes:
    async with ops.scrape_lock:
        now = time.monotonic()
        if ops.last_scrape is not None and now - ops.last_scrape[0] < SCRAPE_REUSE:
            return ops.last_scrape[1]
        started = time.perf_counter()
        try:
            families = await asyncio.wait_for(database_families(web.pool), SCRAPE_TIMEOUT_MS / 500)
            up = 1.0
        except Exception as error:  # the web's own metrics are served whatever the database does
            log.warning("metrics: database counts failed", error_type=type(error).__name__)
            families, up = [], 0.0
        database_up = _gauge(
            "noticeflow_database_up", "1 when this scrape could read the database's counts"
        )
        database_up.add_metric([], up)
        took = _gauge(
            "noticeflow_metrics_scrape_seconds", "Time the database counts of this scrape took"
        )
        took.add_metric([], time.perf_counter() - started)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families([*families, database_up, took]))
        body = generate_latest(registry)
        ops.last_scrape = (time.monotonic(), body)
        return body


@router.get("/metrics")
async def metrics(request: Request, web: Web = Depends(get_web)) -> Response:
    """Prometheus text format: the database's counts (read now) and the web's own metrics."""
    ops = _ops(request)
    body = await _scrape(web, ops) + generate_latest(ops.registry)
    return Response(
        body, media_type=CONTENT_TYPE_PLAIN_0_0_4, headers={"Cache-Control": "no-store"}
    )


# --- /healthz --------------------------------------------------------------------------------


def _problem(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return " ".join(text.split())[:300]


async def check_database(pool: asyncpg.Pool) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(DATABASE_TIMEOUT):
            async with pool.acquire() as connection:
                await connection.fetchval("SELECT 1")
    except TimeoutError:
        return {"ok": False, "error": f"no answer within {DATABASE_TIMEOUT:g} s"}
    except Exception as error:
        return {"ok": False, "error": f"{type(error).__name__}: {_problem(error)}"}
    return {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 1)}


async def check_temporal(web: Web) -> dict[str, Any]:
    from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

    address = web.settings.temporal_address
    started = time.perf_counter()
    try:
        # Shielded: a slow connect goes on in the background; this answer does not wait for it.
        client, error = await asyncio.wait_for(asyncio.shield(web.temporal()), TEMPORAL_TIMEOUT)
    except TimeoutError:
        return {"ok": False, "error": f"{address}: still connecting after {TEMPORAL_TIMEOUT:g} s"}
    if client is None:
        return {"ok": False, "error": error or f"{address}: not connected"}
    try:
        async with asyncio.timeout(TEMPORAL_TIMEOUT):
            await client.workflow_service.get_system_info(
                GetSystemInfoRequest(), timeout=timedelta(seconds=TEMPORAL_TIMEOUT)
            )
    except TimeoutError:
        return {"ok": False, "error": f"{address}: no answer within {TEMPORAL_TIMEOUT:g} s"}
    except Exception as error:
        return {"ok": False, "error": f"{address}: {_problem(error)}"}
    return {
        "ok": True,
        "latency_ms": round((time.perf_counter() - started) * 1000, 1),
        "namespace": client.namespace,
    }


@router.get("/healthz")
async def healthz(web: Web = Depends(get_web)) -> JSONResponse:
    """200 when the database and Temporal both answer, 503 (status "degraded") otherwise."""
    database, temporal = await asyncio.gather(check_database(web.pool), check_temporal(web))
    ok = bool(database["ok"] and temporal["ok"])
    return JSONResponse(
        {"status": "ok" if ok else "degraded", "database": database, "temporal": temporal},
        status_code=200 if ok else 503,
        headers={"Cache-Control": "no-store"},
    )
