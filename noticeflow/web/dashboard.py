"""The ops dashboard: the notice list, a notice's page, its live updates, and ops' actions on it.

Pages read the read models and the event store (noticeflow.web.queries), never a workflow query,
so they work while no worker runs. Every action is a POST form with a CSRF token, recorded through
the intake of record as the CLI's are (``control.receive`` with channel ``web`` and the signed-in
identity as ``by``), then handed over to the notice's workflow; the page says what became of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from noticeflow import control
from noticeflow.contracts import workflow_id
from noticeflow.domain.errors import InputError
from noticeflow.domain.rules import Outcome
from noticeflow.domain.signals import same_person
from noticeflow.intake import Receipt
from noticeflow.replies import store as replies
from noticeflow.users import ACTION_ROLES, Role, User
from noticeflow.web import chart, csrf, queries
from noticeflow.web.auth import may_act, require
from noticeflow.web.context import Web, get_web

log = structlog.get_logger(__name__)
router = APIRouter(include_in_schema=False)

LIST_PAGE = 50
TIMELINE_HEAD = 20
TIMELINE_PAGE = 50
WAIT_SECONDS = 8.0  # how long an action waits for the workflow's judgement before "pending"
POLL_SECONDS = 1.0  # the live stream's look at the change marker
PING_SECONDS = 15.0
STREAM_SECONDS = 30.0  # a stream ends after this (the browser reconnects): a server stopping
# waits for open responses, so none may last long
SENT = {"notifying", "window_open", "awaiting_effective_date", "active"}
POSTPONABLE = {"draft", "notifying", "window_open", "awaiting_effective_date"}
# The dashboard's actions, and the phases in which the page offers each (the workflow judges).
PAGE_ACTIONS: dict[str, set[str]] = {
    "approve": {"draft"},
    "resolve_objection": SENT,
    "exclude": SENT,
    "resend": SENT,
    "postpone": POSTPONABLE,
    "cancel": POSTPONABLE | {"active"},
}
ACTION_WORDS = {
    "approve": "approval",
    "resolve_objection": "resolution of the case",
    "exclude": "exclusion",
    "resend": "resend",
    "postpone": "postponement",
    "cancel": "cancellation",
    # from a reply classified by ops (/replies)
    "object": "objection",
    "opt_in": "opt-in",
}


def _bad(error: InputError) -> HTTPException:
    return HTTPException(400, str(error))


# --- the notice list ------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
async def notice_list(
    request: Request,
    phase: str | None = None,
    q: str | None = None,
    page: str | None = None,
    user: User = Depends(require(Role.viewer)),
    web: Web = Depends(get_web),
) -> Response:
    problems: list[str] = []
    try:
        phase, q = queries.check_notice_filters(phase, q)
    except queries.BadQuery as error:
        problems.append(str(error))
    number = queries._int(page or "1", "page", 1, 1_000_000, problems)
    if problems:
        raise HTTPException(400, "; ".join(problems))
    total = await queries.count_notices(web.pool, phase=phase, q=q)
    pages = max(1, -(-total // LIST_PAGE))
    notices = await queries.list_notices(
        web.pool, phase=phase, q=q, limit=LIST_PAGE, offset=(min(number, pages) - 1) * LIST_PAGE
    )

    def page_url(n: int) -> str:
        params = {k: v for k, v in (("phase", phase), ("q", q)) if v}
        if n > 1:
            params["page"] = str(n)
        return "/" + ("?" + urlencode(params) if params else "")

    return web.render(
        request,
        "notices.html",
        notices=notices,
        phase=phase or "",
        q=q or "",
        total=total,
        page=min(number, pages),
        pages=pages,
        page_url=page_url,
        phase_counts=await queries.phase_counts(web.pool),
        now=datetime.now(UTC),
    )


# --- one notice -----------------------------------------------------------------------------


async def _live_context(
    web: Web, notice_id: str, request: Request, *, before: str | None
) -> dict[str, Any]:
    """What the count cards, the chart, the table page and the timeline need."""
    params = request.query_params
    try:
        view = queries.table_query(
            params.get("sort"),
            params.get("dir"),
            params.get("show"),
            params.get("page"),
            params.get("size"),
        )
    except queries.BadQuery as error:
        raise _bad(error) from None
    older: int | None = None
    if before:
        problems: list[str] = []
        older = queries._int(before, "before", 1, 2**62, problems)
        if problems:
            raise HTTPException(400, "; ".join(problems))
    notice = await queries.notice(web.pool, notice_id)
    rows, total = await queries.customer_page(web.pool, notice_id, view, notice["counts"])
    pages = max(1, -(-total // view.size))
    events = await queries.timeline(
        web.pool,
        notice_id,
        before=older,
        limit=(TIMELINE_PAGE if older else TIMELINE_HEAD) + 1,
    )
    shown = events[:-1] if len(events) > (TIMELINE_PAGE if older else TIMELINE_HEAD) else events
    now = datetime.now(UTC)
    progress = await queries.progress(web.pool, notice_id)
    svg = chart.progress_svg(
        progress,
        customers=notice["customers"],
        now=now,
        marks=[
            ("window closes", notice["window_closes_at"]),
            ("effective", notice["effective_at"]),
        ],
        start=notice["created_at"],
    )

    def table_url(**changes: Any) -> str:
        query = view.params(**changes)
        return f"/notices/{notice_id}" + ("?" + urlencode(query) if query else "")

    def sort_url(column: str) -> str:
        descending = not view.descending if view.sort == column else False
        return table_url(sort=column, dir="desc" if descending else "asc", page=1)

    return {
        "notice": notice,
        "counts": notice["counts"],
        "view": view,
        "rows": rows,
        "total": total,
        "pages": pages,
        "events": shown,
        "older_events": shown[-1]["version"] if len(events) > len(shown) else None,
        "before": older,
        "chart": svg,
        "table_url": table_url,
        "sort_url": sort_url,
        "shows": queries.SHOW_LABELS,
        "sorts": list(queries.SORTS),
        "now": now,
    }


def _workflow_url(web: Web, notice_id: str) -> str | None:
    base = web.settings.temporal_ui_url
    if not base:
        return None
    namespace = web.settings.temporal_namespace
    return f"{base.rstrip('/')}/namespaces/{namespace}/workflows/{workflow_id(notice_id)}"


def _offered(user: User, phase: str, author: str | None = None) -> dict[str, bool]:
    offered = {
        action: user.role.allows(ACTION_ROLES[action])
        and phase in phases
        and may_act(user, action) is None
        for action, phases in PAGE_ACTIONS.items()
    }
    if author is not None and same_person(author, user.name):
        offered["approve"] = False  # four eyes: the author is not offered what would be refused
    return offered


@router.get("/notices/{notice_id}", response_class=HTMLResponse)
async def notice_page(
    request: Request,
    notice_id: str,
    before: str | None = None,
    act: str | None = None,
    user: User = Depends(require(Role.viewer)),
    web: Web = Depends(get_web),
) -> Response:
    context = await _live_context(web, notice_id, request, before=before)
    flash = request.session.pop("flash", None) if "session" in request.scope else None
    offered = _offered(user, context["notice"]["phase"], context["notice"].get("author"))
    return web.render(
        request,
        "notice.html",
        **context,
        flash=flash if isinstance(flash, dict) else None,
        workflow_url=_workflow_url(web, notice_id),
        workflow_id=workflow_id(notice_id),
        offered=offered,
        any_action=any(offered.values()),
        prefill=act if act and queries._ID.fullmatch(act) else "",
        outcomes=[o.value for o in Outcome],
    )


@router.get("/notices/{notice_id}/live", response_class=HTMLResponse)
async def notice_live(
    request: Request,
    notice_id: str,
    before: str | None = None,
    user: User = Depends(require(Role.viewer)),
    web: Web = Depends(get_web),
) -> Response:
    """The part of the notice page that changes (cards, chart, table page, timeline head)."""
    context = await _live_context(web, notice_id, request, before=before)
    response: Response = web.render(request, "notice_live.html", **context)
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/notices/{notice_id}/stream")
async def notice_stream(
    request: Request,
    notice_id: str,
    since: str | None = None,
    user: User = Depends(require(Role.viewer)),
    web: Web = Depends(get_web),
) -> Response:
    """Server-sent events: ``changed`` whenever the notice's read model moves (polled every
    second: one indexed row), a comment every 15 s to keep proxies from closing the stream."""
    marker = await queries.change_marker(web.pool, notice_id)
    if marker is None:
        await queries.notice(web.pool, notice_id)  # the clear error
        raise HTTPException(404, f"no notice {notice_id!r}")
    seen: int | None = None
    for value in (request.headers.get("last-event-id"), since):
        if value and value.isdigit() and len(value) < 19:
            seen = int(value)
            break

    async def events() -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        started = pinged = loop.time()
        last = marker
        yield "retry: 2000\n: connected\n\n"
        if seen is not None and seen != marker[0]:  # it moved since the page was drawn
            yield f"event: changed\nid: {marker[0]}\ndata: {marker[0]}\n\n"
        while loop.time() - started < STREAM_SECONDS:
            await asyncio.sleep(POLL_SECONDS)
            if await request.is_disconnected():
                return
            try:
                current = await queries.change_marker(web.pool, notice_id)
            except Exception as error:  # a database blip: keep the stream, try again
                log.warning("live stream could not read", error_type=type(error).__name__)
                continue
            if current is None:
                return
            if current != last:
                last = current
                pinged = loop.time()
                yield f"event: changed\nid: {current[0]}\ndata: {current[0]}\n\n"
            elif loop.time() - pinged >= PING_SECONDS:
                pinged = loop.time()
                yield ": ping\n\n"

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


# --- actions --------------------------------------------------------------------------------


def _form_payload(
    action: str, form: dict[str, str], user: User
) -> tuple[dict[str, Any], list[str]]:
    """The signal payload of a dashboard form (noticeflow.domain.signals), ``by`` the signed-in
    identity; the intake validates it. Only what a form cannot say as JSON is checked here."""
    problems: list[str] = []
    payload: dict[str, Any] = {"by": user.name}
    customer = form.get("customer_id", "").strip()
    if action in ("resolve_objection", "exclude", "resend"):
        payload["customer_id"] = customer
    if action == "resolve_objection":
        payload["outcome"] = form.get("outcome", "")
        payload["note"] = form.get("note", "")
    elif action in ("exclude", "cancel"):
        payload["reason"] = form.get("reason", "")
    elif action == "postpone":
        when = form.get("effective_at", "").strip()
        zone_name = form.get("timezone", "").strip() or "UTC"
        zone: ZoneInfo | None = None
        try:
            zone = ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(f"timezone: {zone_name[:60]!r} is not a timezone (e.g. Europe/Berlin)")
        try:
            local = datetime.fromisoformat(when) if when else None
        except ValueError:
            local = None
            problems.append(f"new effective date: {when[:40]!r} is not a date and time")
        if not when:
            problems.append("new effective date: missing")
        if local is not None and zone is not None:
            if local.tzinfo is None:
                local = local.replace(tzinfo=zone)
            try:
                payload["effective_at"] = local.astimezone(UTC).isoformat()
            except (OverflowError, ValueError):  # year 1 or 9999 in a far-off zone
                problems.append("new effective date: must be between 2000 and 2100")
    return payload, problems


def _flash_of(action: str, receipt: Receipt, pending_because: str | None) -> dict[str, str]:
    words = ACTION_WORDS.get(action, action)
    who = f" for {receipt.customer_id}" if receipt.customer_id else ""
    if receipt.status == "accepted":
        return {"kind": "ok", "text": f"Accepted: the {words}{who} (receipt {receipt.receipt_id})."}
    if receipt.status == "duplicate":
        return {
            "kind": "ok",
            "text": f"Already recorded: the {words}{who} repeats an earlier one"
            f" ({receipt.reason or 'a repeat'}; receipt {receipt.receipt_id}).",
        }
    if receipt.status == "rejected":
        return {
            "kind": "bad",
            "text": f"Rejected: {receipt.reason} (receipt {receipt.receipt_id}).",
        }
    return {
        "kind": "warn",
        "text": f"Pending: {pending_because or 'not judged yet'}. The {words} is recorded"
        f" (receipt {receipt.receipt_id}, received {receipt.received_at:%H:%M:%S} UTC) and will be"
        " judged by its receipt time.",
    }


def _flash(request: Request, message: dict[str, str]) -> None:
    if "session" in request.scope:
        request.session["flash"] = message


@router.post("/notices/{notice_id}/actions/{action}")
async def notice_action(
    request: Request,
    notice_id: str,
    action: str,
    user: User = Depends(require(Role.viewer)),
    web: Web = Depends(get_web),
) -> Response:
    if action not in PAGE_ACTIONS:
        raise HTTPException(404, f"there is no action {action[:40]!r} on the dashboard")
    raw = await request.form()
    form = {key: value for key, value in raw.items() if isinstance(value, str)}
    if user.via != "token":
        csrf.check(request, form.get(csrf.FIELD))
    needed = ACTION_ROLES[action]
    if not user.role.allows(needed):
        raise HTTPException(
            403, f"{action} needs the {needed.value} role; you are {user.role.value}"
        )
    refusal = may_act(user, action)
    if refusal:
        raise HTTPException(403, refusal)
    await queries.notice(web.pool, notice_id)  # a clear "no notice"
    back = f"/notices/{notice_id}"
    payload, problems = _form_payload(action, form, user)
    if problems:
        _flash(request, {"kind": "bad", "text": "Not recorded: " + "; ".join(problems) + "."})
        return RedirectResponse(back + "#act", status_code=303)
    receipt = await control.receive(web.pool, notice_id, action, payload, channel="web")
    receipt, pending_because = await web.hand_over(receipt, wait_seconds=WAIT_SECONDS)
    log.info(
        "dashboard action",
        notice_id=notice_id,
        action=action,
        user=user.name,
        receipt_id=receipt.receipt_id,
        status=receipt.status,
    )
    _flash(request, _flash_of(action, receipt, pending_because))
    return RedirectResponse(back, status_code=303)


# --- replies (docs/replies.md) --------------------------------------------------------------

REPLY_STATUSES = ("new", "classified", "rejected")
REPLY_WORDS = {"objection": "an objection", "opt_in": "an opt-in", "question": "a question"}


@router.get("/replies", response_class=HTMLResponse)
async def replies_page(
    request: Request,
    notice: str | None = None,
    status: str | None = "new",
    user: User = Depends(require(Role.viewer)),
    web: Web = Depends(get_web),
) -> Response:
    """Replies to notice mails, to classify in one click (objection, opt-in, question)."""
    notice_id = notice if notice and queries._ID.fullmatch(notice) else None
    shown = status if status in REPLY_STATUSES else None
    found = await replies.listing(web.pool, notice_id=notice_id, status=shown, limit=200)
    flash = request.session.pop("flash", None) if "session" in request.scope else None
    return web.render(
        request,
        "replies.html",
        replies=found,
        notice_id=notice_id,
        status=shown,
        statuses=REPLY_STATUSES,
        may_classify=may_act(user, "object") is None,
        flash=flash if isinstance(flash, dict) else None,
    )


@router.post("/replies/{reply_id}/classify")
async def classify_reply(
    request: Request,
    reply_id: str,
    user: User = Depends(require(Role.viewer)),
    web: Web = Depends(get_web),
) -> Response:
    """One click: the reply becomes an objection or an opt-in received at the mail's receipt time
    (through the intake of record, then handed over to the workflow), or a question (handled)."""
    raw = await request.form()
    form = {key: value for key, value in raw.items() if isinstance(value, str)}
    if user.via != "token":
        csrf.check(request, form.get(csrf.FIELD))
    refusal = may_act(user, "object")  # classifying acts for a customer: the operator's role
    if refusal:
        raise HTTPException(403, refusal)
    back = form.get("back", "")
    back = back if back.startswith("/replies") and "//" not in back else "/replies"
    kind = form.get("kind", "")
    try:
        reply, receipt = await replies.classify(web.pool, reply_id, kind, user.name)
    except InputError as error:
        _flash(request, {"kind": "bad", "text": f"Not classified: {error}."})
        return RedirectResponse(back, status_code=303)
    text = f"Reply {reply.reply_id} classified as {REPLY_WORDS[kind]}"
    if receipt is not None:
        receipt, pending_because = await web.hand_over(receipt, wait_seconds=WAIT_SECONDS)
        message = _flash_of(receipt.action, receipt, pending_because)
        message["text"] = (
            f"{text}, received {reply.received_at:%Y-%m-%d %H:%M:%S} UTC. " + message["text"]
        )
        if receipt.status == "rejected":  # it does not bind: the reply is new again
            message["text"] = (
                f"Reply {reply.reply_id} not classified as {REPLY_WORDS[kind]}: the intake"
                f" rejected it ({receipt.reason}; receipt {receipt.receipt_id}). The reply is new"
                " again: classify it as what applies (its mail's receipt time is kept)."
            )
    else:
        message = {"kind": "ok", "text": f"{text}: no action, marked handled."}
    log.info(
        "reply classified",
        reply_id=reply.reply_id,
        notice_id=reply.notice_id,
        classified_as=kind,
        user=user.name,
        receipt_id=receipt.receipt_id if receipt else None,
        status=receipt.status if receipt else None,
    )
    _flash(request, message)
    return RedirectResponse(back, status_code=303)
