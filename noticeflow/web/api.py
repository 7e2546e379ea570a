"""The JSON API: notices, a notice (the shape of `noticeflow notice show --json`), its customers and
events page by page, and actions on it.

Every route takes the bearer token (``NOTICEFLOW_WEB_TOKEN``) or a signed-in session; reading needs
the viewer role, an action the role ``noticeflow.users.ACTION_ROLES`` names. An action takes the
same JSON payload as the workflow's signal (``noticeflow.domain.signals``) with ``by`` set to the
caller's identity, is recorded in the intake of record (channel ``api``) and answers its receipt:
200 accepted or duplicate, 202 still pending (with why), 422 rejected (with the reason).

Datetimes are RFC 3339 in UTC (``...Z``). Lists are paged with opaque cursors: pass
``next_cursor`` back as ``cursor`` until it is null.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import structlog
from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request
from fastapi.openapi.models import Example
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from noticeflow import control, repository
from noticeflow.contracts import workflow_id
from noticeflow.domain import signals
from noticeflow.domain.rules import Phase
from noticeflow.users import ACTION_ROLES, Role, User
from noticeflow.web import csrf, queries
from noticeflow.web.auth import may_act, require
from noticeflow.web.context import Web, get_web

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/api", tags=["notices"])
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "A parameter cannot be used (the error says which and why)"},
    401: {"description": "No bearer token or session"},
    404: {"description": "No such notice"},
}
NoticeId = Path(description="The notice id", max_length=64)


# --- response models --------------------------------------------------------------------------


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Error(Model):
    error: str
    problems: list[str] | None = None


class ObjectionState(Model):
    status: str = Field(description="open, withdrawn, excluded or terminated")
    timely: bool | None = Field(description="received before the customer's deadline")
    request: str = Field(
        default="objection",
        description="objection, or changes (a dora customer's request for changes)",
    )


class CustomerState(Model):
    customer_id: str
    delivery: str = Field(description="pending, delivered or undelivered")
    deadline: datetime | None = Field(description="the end of the customer's window (UTC)")
    timezone: str | None = Field(description="the customer's timezone (IANA)")
    authorisation: str = Field(
        default="general",
        description="what its contract asks: general (silence is deemed acceptance), specific"
        " (silence is refusal) or dora (approve, object or request changes)",
    )
    objection: ObjectionState | None = Field(description="the customer's latest case, if any")
    opted_in: bool
    activated: bool
    deemed_accepted_at: datetime | None
    verdict: str | None
    settled: bool


class Counts(Model):
    customers: int
    delivered: int
    undelivered: int
    open_objections: int
    opted_in: int
    activated: int
    settled: int


class NoticeLinks(Model):
    notice: str = Field(description="this notice in the API")
    page: str = Field(description="the notice's dashboard page")
    customers: str = Field(description="its customers, page by page")
    events: str = Field(description="its events, page by page")
    actions: str = Field(description="POST an action here (replace {action})")
    workflow: str | None = Field(description="the workflow in the Temporal Web UI, if configured")


class NoticeDetail(Model):
    """`noticeflow notice show --json`, plus links."""

    notice_id: str
    phase: Phase
    effective_at: datetime
    window_closes_at: datetime | None = Field(description="the latest customer deadline")
    customers: list[CustomerState]
    title: str
    subprocessor: str
    opt_in: bool
    kind: str = Field(
        default="addition", description="addition, replacement, removal or material_change"
    )
    replaces: str | None = Field(default=None, description="a replacement's old sub-processor")
    previous: dict[str, str | list[str]] = Field(
        default_factory=dict, description="a material change's previous values, by field"
    )
    author: str
    approved_by: str | None
    text_sha256: str
    counts: Counts
    links: NoticeLinks


class NoticeItem(Model):
    notice_id: str
    title: str
    phase: Phase
    subprocessor: str
    opt_in: bool
    author: str
    approved_by: str | None
    effective_at: datetime
    window_closes_at: datetime | None
    created_at: datetime
    updated_at: datetime
    counts: Counts
    links: NoticeLinks


class NoticeList(Model):
    notices: list[NoticeItem]
    total: int = Field(description="how many notices match the filter")
    next_cursor: str | None = Field(description="pass as cursor for the next page; null: no more")


class CustomerPage(Model):
    notice_id: str
    customers: list[CustomerState]
    next_cursor: str | None


class EventItem(Model):
    version: int = Field(description="the event's version in the notice's stream")
    event_type: str
    occurred_at: datetime
    recorded_at: datetime
    customer_id: str | None
    receipt_id: str | None
    summary: str = Field(description="ids, counts and times; never personal data")


class EventPage(Model):
    notice_id: str
    events: list[EventItem]
    next_cursor: str | None


class ReceiptOut(Model):
    receipt_id: str
    notice_id: str
    action: str
    customer_id: str | None
    channel: str
    received_at: datetime = Field(description="the legal moment of receipt")
    status: str = Field(description="accepted, duplicate, pending or rejected")
    reason: str | None = Field(description="why rejected, or what it repeats")
    repeat: bool
    pending_because: str | None = Field(description="while pending: why it is not judged yet")


# --- helpers ----------------------------------------------------------------------------------


def links(web: Web, notice_id: str) -> NoticeLinks:
    base = web.settings.temporal_ui_url
    ns = web.settings.temporal_namespace
    return NoticeLinks(
        notice=f"/api/notices/{notice_id}",
        page=f"/notices/{notice_id}",
        customers=f"/api/notices/{notice_id}/customers",
        events=f"/api/notices/{notice_id}/events",
        actions=f"/api/notices/{notice_id}/actions/{{action}}",
        workflow=f"{base.rstrip('/')}/namespaces/{ns}/workflows/{workflow_id(notice_id)}"
        if base
        else None,
    )


def _bad(error: queries.BadQuery) -> HTTPException:
    return HTTPException(400, str(error))


def _json(data: Any, status_code: int = 200) -> Response:
    return Response(
        orjson.dumps(data, option=orjson.OPT_UTC_Z), status_code, media_type="application/json"
    )


# --- routes -----------------------------------------------------------------------------------


@router.get("/notices", response_model=NoticeList, responses=ERRORS)
async def api_notices(
    phase: Phase | None = Query(None, description="only notices in this phase"),
    q: str | None = Query(None, max_length=200, description="notice id, title or sub-processor"),
    cursor: str | None = Query(None, max_length=400),
    limit: int = Query(50, ge=1, le=200),
    user: User = Depends(require(Role.viewer)),
    web: Web = Depends(get_web),
) -> NoticeList:
    """Notices, newest first, with their counts."""
    try:
        phase_name, text = queries.check_notice_filters(phase.value if phase else None, q)
        after = None
        if cursor:
            created, notice_id = queries.decode_cursor(cursor, (datetime, str))
            after = (created, notice_id)
    except queries.BadQuery as error:
        raise _bad(error) from None
    rows = await queries.list_notices(
        web.pool, phase=phase_name, q=text, limit=limit + 1, after=after
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return NoticeList(
        notices=[
            NoticeItem(
                notice_id=row["notice_id"],
                title=row["title"],
                phase=row["phase"],
                subprocessor=row["subprocessor"],
                opt_in=row["opt_in"],
                author=row["author"],
                approved_by=row["approved_by"],
                effective_at=row["effective_at"],
                window_closes_at=row["window_closes_at"],
                created_at=row["created_at"],
                updated_at=row["updated_at"],
                counts=Counts(**queries.counts_of(row)),
                links=links(web, row["notice_id"]),
            )
            for row in rows
        ],
        total=await queries.count_notices(web.pool, phase=phase_name, q=text),
        next_cursor=queries.encode_cursor(rows[-1]["created_at"], rows[-1]["notice_id"])
        if more
        else None,
    )


@router.get("/notices/{notice_id}", response_model=NoticeDetail, responses=ERRORS)
async def api_notice(
    notice_id: str = NoticeId,
    user: User = Depends(require(Role.viewer)),
    web: Web = Depends(get_web),
) -> Response:
    """Exactly `noticeflow notice show --json` (every customer), plus ``links``. For a large
    audience, page through ``/customers`` instead."""
    summary = await repository.notice_summary(web.pool, notice_id)
    summary["links"] = links(web, notice_id).model_dump()
    return _json(summary)


@router.get("/notices/{notice_id}/customers", response_model=CustomerPage, responses=ERRORS)
async def api_customers(
    notice_id: str = NoticeId,
    cursor: str | None = Query(None, max_length=200),
    limit: int = Query(500, ge=1, le=2000),
    show: str = Query("all", description="a filter: " + ", ".join(queries.SHOWS)),
    user: User = Depends(require(Role.viewer)),
    web: Web = Depends(get_web),
) -> Response:
    """The notice's customers in customer id order, ``limit`` at a time."""
    problems = []
    after = None
    if cursor:
        try:
            (after,) = queries.decode_cursor(cursor, (str,))
        except queries.BadQuery as error:
            problems.append(str(error))
    if show not in queries.SHOWS:
        problems.append(f"show: {show[:40]!r} is not a filter (one of {', '.join(queries.SHOWS)})")
    if problems:
        raise HTTPException(400, "; ".join(problems))
    await queries.notice(web.pool, notice_id)  # a clear "no notice"
    rows = await queries.customers_after(web.pool, notice_id, after, limit + 1, show)
    more = len(rows) > limit
    rows = rows[:limit]
    return _json(
        {
            "notice_id": notice_id,
            "customers": [repository.customer_row(row) for row in rows],
            "next_cursor": queries.encode_cursor(rows[-1]["customer_id"]) if more else None,
        }
    )


@router.get("/notices/{notice_id}/events", response_model=EventPage, responses=ERRORS)
async def api_events(
    notice_id: str = NoticeId,
    cursor: str | None = Query(None, max_length=200),
    limit: int = Query(100, ge=1, le=1000),
    user: User = Depends(require(Role.viewer)),
    web: Web = Depends(get_web),
) -> EventPage:
    """The notice's events from the event store, oldest first: type, time and a summary of ids
    and counts (never personal data)."""
    after = 0
    if cursor:
        try:
            (after,) = queries.decode_cursor(cursor, (int,))
        except queries.BadQuery as error:
            raise _bad(error) from None
    await queries.notice(web.pool, notice_id)
    rows = await queries.events_after(web.pool, notice_id, after=after, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return EventPage(
        notice_id=notice_id,
        events=[EventItem(**row) for row in rows],
        next_cursor=queries.encode_cursor(rows[-1]["version"]) if more else None,
    )


ACTION_EXAMPLES: dict[str, Example] = {
    "approve": Example(summary="approve (four eyes: not the author)", value={}),
    "object": Example(
        summary="record an objection for a customer",
        value={"customer_id": "acme", "reason": "We do not agree to this sub-processor."},
    ),
    "request_changes": Example(
        summary="record a dora customer's request for changes (a case holding activation)",
        value={"customer_id": "acme", "reason": "Host it in the EU and we agree."},
    ),
    "resolve_objection": Example(
        summary="resolve a case",
        value={"customer_id": "acme", "outcome": "withdrawn", "note": "Call on 3 May"},
    ),
    "postpone": Example(summary="postpone", value={"effective_at": "2030-01-31T09:00:00Z"}),
}


@router.post(
    "/notices/{notice_id}/actions/{action}",
    response_model=ReceiptOut,
    responses={
        **ERRORS,
        202: {"model": ReceiptOut, "description": "Recorded, not judged yet (pending_because)"},
        403: {"model": Error, "description": "Your role may not take this action"},
        422: {"model": ReceiptOut, "description": "Rejected (reason)"},
    },
)
async def api_action(
    request: Request,
    notice_id: str = NoticeId,
    action: str = Path(description="one of " + ", ".join(ACTION_ROLES)),
    payload: dict[str, Any] = Body(
        default_factory=dict,
        description="the signal's JSON payload (noticeflow/domain/signals.py); `by` is set to"
        " your identity",
        openapi_examples=ACTION_EXAMPLES,
    ),
    wait: float = Query(10.0, ge=0, le=30, description="seconds to wait for the judgement"),
    user: User = Depends(require(Role.viewer)),
    web: Web = Depends(get_web),
) -> JSONResponse | Response:
    """Record an action in the intake of record and hand it to the notice's workflow.

    Scripts send the bearer token. A signed-in browser session must also send its CSRF token in
    the `X-CSRF-Token` header (a cookie alone acts on nothing)."""
    if user.via != "token":
        csrf.check(request, request.headers.get("x-csrf-token"))
    needed = ACTION_ROLES.get(action)
    if needed is None:
        raise HTTPException(404, f"no action {action[:40]!r} (one of {', '.join(ACTION_ROLES)})")
    if not user.role.allows(needed):
        raise HTTPException(
            403, f"{action} needs the {needed.value} role; you are {user.role.value}"
        )
    await repository.notice_row(web.pool, notice_id)  # a clear "no notice" (404) first
    refusal = may_act(user, action)
    if refusal:
        raise HTTPException(403, refusal)
    body = dict(payload)
    body["by"] = user.name
    if "channel" in signals.SIGNAL_PAYLOADS[action].model_fields:
        body["channel"] = "api"
    receipt = await control.receive(web.pool, notice_id, action, body, channel="api")
    receipt, pending_because = await web.hand_over(receipt, wait_seconds=wait)
    log.info(
        "api action",
        notice_id=notice_id,
        action=action,
        user=user.name,
        receipt_id=receipt.receipt_id,
        status=receipt.status,
    )
    status = {"accepted": 200, "duplicate": 200, "pending": 202}.get(receipt.status, 422)
    return _json({**receipt.as_json(), "pending_because": pending_because}, status)
