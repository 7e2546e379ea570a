"""What the dashboard and the JSON API read: the read models (rm_*) and the event store.

Never a workflow query, so every page works while no worker runs. The notice list reads the counts
the projector keeps in ``rm_notices`` (one row per notice, whatever its audience); a notice's
customer table is read one page at a time (offset pages for the dashboard's sortable table, keyset
pages by customer id for the API); the timeline reads the notice's own stream by version.

Nothing here decrypts anything: the timeline's summaries take ids, counts, times and our own words
from an event's data, by event type, and leave everything else (sealed names, reasons, SMTP
replies) where it is.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from noticeflow import eventstore
from noticeflow.domain.errors import InputError
from noticeflow.domain.rules import Phase

PHASES = tuple(p.value for p in Phase)
COUNT_FIELDS = (
    "customers",
    "delivered",
    "undelivered",
    "open_objections",
    "opted_in",
    "activated",
    "settled",
)
NOTICE_COLUMNS = (
    "notice_id, title, subprocessor, opt_in, author, approved_by, text_sha256, phase,"
    " effective_at, window_closes_at, created_at, updated_at, version, last_event_at, "
    + ", ".join(COUNT_FIELDS)
)
_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


class BadQuery(InputError):
    """A query parameter that cannot be used: every problem, in one message."""


def counts_of(row: Any) -> dict[str, int]:
    return {field: int(row[field]) for field in COUNT_FIELDS}


# --- opaque cursors ---------------------------------------------------------------------------


def encode_cursor(*parts: Any) -> str:
    raw = orjson.dumps([p.isoformat() if isinstance(p, datetime) else p for p in parts])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, shape: tuple[type, ...]) -> list[Any]:
    """The cursor's parts, typed as ``shape`` says; a cursor not of ours is a clear error."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parts = orjson.loads(raw)
        if not isinstance(parts, list) or len(parts) != len(shape):
            raise ValueError
        typed: list[Any] = []
        for kind, part in zip(shape, parts, strict=True):
            if kind is datetime:
                typed.append(datetime.fromisoformat(part))
            elif not isinstance(part, kind) or isinstance(part, bool):
                raise ValueError
            else:
                typed.append(part)
        return typed
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise BadQuery(
            "cursor: not a cursor this server gave out (use next_cursor as returned)"
        ) from None


# --- the notice list --------------------------------------------------------------------------


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _notice_filter(phase: str | None, q: str | None) -> tuple[str, list[Any]]:
    where, args = ["true"], []
    if phase:
        args.append(phase)
        where.append(f"phase = ${len(args)}")
    if q:
        args.append(_like(q))
        n = len(args)
        where.append(f"(notice_id ILIKE ${n} OR title ILIKE ${n} OR subprocessor ILIKE ${n})")
    return " AND ".join(where), args


def check_notice_filters(phase: str | None, q: str | None) -> tuple[str | None, str | None]:
    problems = []
    phase = (phase or "").strip() or None
    q = (q or "").strip() or None
    if phase is not None and phase not in PHASES:
        problems.append(f"phase: {phase[:40]!r} is not a phase (one of {', '.join(PHASES)})")
    if q is not None and len(q) > 200:
        problems.append("q: at most 200 characters")
    if problems:
        raise BadQuery("; ".join(problems))
    return phase, q


async def list_notices(
    pool: asyncpg.Pool,
    *,
    phase: str | None = None,
    q: str | None = None,
    limit: int = 50,
    offset: int = 0,
    after: tuple[datetime, str] | None = None,
) -> list[dict[str, Any]]:
    """Notices newest first, with their counts: an offset page, or the page after a cursor."""
    where, args = _notice_filter(phase, q)
    if after is not None:
        args += [after[0], after[1]]
        where += f" AND (created_at, notice_id) < (${len(args) - 1}, ${len(args)})"
    args += [limit, offset]
    rows = await pool.fetch(
        f"SELECT {NOTICE_COLUMNS} FROM rm_notices WHERE {where}"
        f" ORDER BY created_at DESC, notice_id DESC LIMIT ${len(args) - 1} OFFSET ${len(args)}",
        *args,
    )
    return [dict(row) for row in rows]


async def count_notices(pool: asyncpg.Pool, *, phase: str | None, q: str | None) -> int:
    where, args = _notice_filter(phase, q)
    return int(await pool.fetchval(f"SELECT count(*) FROM rm_notices WHERE {where}", *args))


async def phase_counts(pool: asyncpg.Pool) -> dict[str, int]:
    rows = await pool.fetch("SELECT phase, count(*) AS n FROM rm_notices GROUP BY phase")
    found = {row["phase"]: int(row["n"]) for row in rows}
    return {phase: found.get(phase, 0) for phase in PHASES}


# --- one notice -------------------------------------------------------------------------------


async def notice(pool: asyncpg.Pool, notice_id: str) -> dict[str, Any]:
    """The notice's row of the read model, with its counts; a clear error when there is none."""
    row = await pool.fetchrow(
        f"SELECT {NOTICE_COLUMNS} FROM rm_notices WHERE notice_id = $1", notice_id
    )
    if row is None:
        exists = await pool.fetchval("SELECT 1 FROM notices WHERE notice_id = $1", notice_id)
        if not exists:
            raise InputError(f"no notice {notice_id!r}")
        raise InputError(
            f"notice {notice_id!r} is not in the read models yet; try again in a moment"
        )
    found = dict(row)
    found["counts"] = counts_of(row)
    found["pending"] = max(0, row["customers"] - row["delivered"] - row["undelivered"])
    return found


async def change_marker(pool: asyncpg.Pool, notice_id: str) -> tuple[int, datetime] | None:
    """What moves whenever the projector applies an event of this notice (None: no such notice)."""
    row = await pool.fetchrow(
        "SELECT version, updated_at FROM rm_notices WHERE notice_id = $1", notice_id
    )
    return None if row is None else (int(row["version"]), row["updated_at"])


# --- the per-customer table -------------------------------------------------------------------

# Sort keys (NULLs last when ascending, first when descending). Ties are broken by customer id.
# Each has an index (notice_id, key, customer_id) — migration 012 (the deadline's 009, the
# customer's the primary key) — written with the same expression, so any page of any sort is
# read from its index, never by sorting all of a notice's rows.
SORTS: dict[str, str] = {
    "customer": "customer_id",
    "delivery": "delivery",
    "deadline": "deadline",
    "case": "(CASE WHEN open_objections > 0 THEN 0 WHEN objection_status IS NULL THEN 2 ELSE 1"
    " END)",
    "opted_in": "opted_in",
    "activated": "activated",
    "verdict": "verdict",
}
SHOWS: dict[str, str] = {
    "all": "true",
    "open_cases": "open_objections > 0",
    "late": "objection_timely = false",
    "undelivered": "delivery = 'undelivered'",
    "pending": "delivery = 'pending'",
    "unsettled": "NOT settled",
    "opted_in": "opted_in",
    "activated": "activated",
}
SHOW_LABELS = {
    "all": "all customers",
    "open_cases": "open cases",
    "late": "late objections",
    "undelivered": "undelivered",
    "pending": "delivery pending",
    "unsettled": "not settled",
    "opted_in": "opted in",
    "activated": "activated",
}
CUSTOMER_COLUMNS = (
    "customer_id, delivery, delivered_at, deadline, timezone, objection_status, objection_timely,"
    " open_objections, opted_in, activated, activated_at, deemed_accepted_at, verdict, settled,"
    " excluded_at, authorisation, objection_request"
)
MAX_PAGE = 500


@dataclass(frozen=True)
class TableQuery:
    sort: str = "customer"
    descending: bool = False
    show: str = "all"
    page: int = 1
    size: int = 50

    def params(self, **changes: Any) -> dict[str, str]:
        """The query parameters of this view (with ``changes``), defaults left out."""
        values = {
            "sort": self.sort,
            "dir": "desc" if self.descending else "asc",
            "show": self.show,
            "page": str(self.page),
            "size": str(self.size),
        }
        values.update({k: str(v) for k, v in changes.items()})
        defaults = {"sort": "customer", "dir": "asc", "show": "all", "page": "1", "size": "50"}
        return {k: v for k, v in values.items() if defaults.get(k) != v}


def table_query(
    sort: str | None, direction: str | None, show: str | None, page: str | None, size: str | None
) -> TableQuery:
    """The table's view from query parameters; every problem at once."""
    problems = []
    sort = sort or "customer"
    direction = direction or "asc"
    show = show or "all"
    if sort not in SORTS:
        problems.append(f"sort: {sort[:40]!r} is not a column (one of {', '.join(SORTS)})")
    if direction not in ("asc", "desc"):
        problems.append("dir: use asc or desc")
    if show not in SHOWS:
        problems.append(f"show: {show[:40]!r} is not a filter (one of {', '.join(SHOWS)})")
    number = _int(page or "1", "page", 1, 10_000_000, problems)
    rows = _int(size or "50", "size", 1, MAX_PAGE, problems)
    if problems:
        raise BadQuery("; ".join(problems))
    return TableQuery(sort, direction == "desc", show, number, rows)


def _int(text: str, name: str, low: int, high: int, problems: list[str]) -> int:
    try:
        value = int(text)
    except ValueError:
        problems.append(f"{name}: {text[:20]!r} is not a whole number")
        return low
    if not low <= value <= high:
        problems.append(f"{name}: must be between {low} and {high}")
    return value


def filter_total(show: str, counts: dict[str, int]) -> int | None:
    """How many rows a filter holds, from the counts the projector keeps with every change of a
    row (rm_notices); None when only a count of the rows tells (late objections, and customers
    with an open case: ``open_objections`` counts cases, not customers)."""
    if show == "all":
        return counts["customers"]
    if show == "undelivered":
        return counts["undelivered"]
    if show == "pending":
        return max(0, counts["customers"] - counts["delivered"] - counts["undelivered"])
    if show == "unsettled":
        return max(0, counts["customers"] - counts["settled"])
    if show in ("opted_in", "activated"):
        return counts[show]
    if show == "open_cases" and counts["open_objections"] == 0:
        return 0
    return None


async def customer_page(
    pool: asyncpg.Pool, notice_id: str, view: TableQuery, counts: dict[str, int]
) -> tuple[list[dict[str, Any]], int]:
    """One page of the sorted, filtered table, and how many rows the filter holds."""
    condition = SHOWS[view.show]
    total = filter_total(view.show, counts)
    if total is None:  # few rows, each filter with its partial index
        total = int(
            await pool.fetchval(
                f"SELECT count(*) FROM rm_notice_customers WHERE notice_id = $1 AND {condition}",
                notice_id,
            )
        )
    first = (view.page - 1) * view.size
    end = min(first + view.size, total)
    if end <= first:
        return [], total
    # A page in the second half is read from the other end (the order reversed, then the page):
    # an offset into an index costs its length, so the last page costs what the first does.
    backwards = first > total - end
    descending = view.descending != backwards
    order = "DESC" if descending else "ASC"
    nulls = "NULLS FIRST" if descending else "NULLS LAST"
    if view.sort == "customer":  # the primary key
        ordering = f"customer_id {order}"
    else:  # its index: ascending NULLs last; read backwards, descending NULLs first
        ordering = f"{SORTS[view.sort]} {order} {nulls}, customer_id {order}"
    # The page's ids are read from the sort's index (an offset into it: no sort), then their
    # whole rows by primary key.
    rows = await pool.fetch(
        f"SELECT {', '.join('r.' + c.strip() for c in CUSTOMER_COLUMNS.split(','))}"
        " FROM unnest(ARRAY(SELECT customer_id FROM rm_notice_customers"
        f"  WHERE notice_id = $1 AND {condition} ORDER BY {ordering} LIMIT $2 OFFSET $3))"
        "  WITH ORDINALITY AS page (customer_id, n)"
        " JOIN rm_notice_customers r ON r.notice_id = $1 AND r.customer_id = page.customer_id"
        f" ORDER BY page.n {'DESC' if backwards else 'ASC'}",
        notice_id,
        end - first,
        total - end if backwards else first,
    )
    return [dict(row) for row in rows], total


async def customers_after(
    pool: asyncpg.Pool, notice_id: str, after: str | None, limit: int, show: str = "all"
) -> list[dict[str, Any]]:
    """The API's keyset page: customers in id order after ``after``."""
    # Two statements, not one with "$2 IS NULL OR customer_id > $2": a prepared statement's
    # generic plan could not start its index scan at the cursor, and read from the first row.
    where = f"notice_id = $1 AND {SHOWS[show]}"
    args: list[Any] = [notice_id]
    if after is not None:
        args.append(after)
        where += f" AND customer_id > ${len(args)}"
    args.append(limit)
    rows = await pool.fetch(
        f"SELECT {CUSTOMER_COLUMNS} FROM rm_notice_customers WHERE {where}"
        f" ORDER BY customer_id LIMIT ${len(args)}",
        *args,
    )
    return [dict(row) for row in rows]


# --- the timeline -----------------------------------------------------------------------------


def _short(value: Any, limit: int = 160) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _when(value: Any) -> str:
    try:
        at = datetime.fromisoformat(str(value))
    except ValueError:
        return "?"
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _plain_id(value: Any) -> str | None:
    """An id fit to show: our own ids only (a sealed or free-text value is never shown)."""
    return value if isinstance(value, str) and _ID.fullmatch(value) else None


def _receipt(data: dict[str, Any]) -> str:
    receipt = data.get("receipt_id")
    return f" (receipt {receipt})" if isinstance(receipt, str) and receipt.startswith("r-") else ""


def summarize(event_type: str, data: Any) -> str:
    """A one-line summary of an event: ids, counts, times and our own words, nothing personal."""
    d = data if isinstance(data, dict) else {}
    customer = _plain_id(d.get("customer_id"))
    who = f"customer {customer}" if customer else ""
    if event_type == "notice_created":
        sha = str(d.get("text_sha256", ""))[:12]
        return f"created by {_plain_id(d.get('author')) or '?'}; text sha256 {sha}…"
    if event_type == "phase_changed":
        text = f"phase → {_short(d.get('phase'), 40)}"
        if d.get("effective_at"):
            text += f"; effective {_when(d['effective_at'])}"
        if d.get("window_closes_at"):
            text += f"; window closes {_when(d['window_closes_at'])}"
        return text
    if event_type == "notice_approved":
        return f"approved by {_plain_id(d.get('by')) or '?'}; audience {d.get('audience_size')}"
    if event_type == "audience_snapshotted":
        if d.get("part"):
            return (
                f"audience frozen, part {d.get('part')} of {d.get('parts')}:"
                f" {len(d.get('customer_ids') or [])} of {d.get('customers')} customers"
            )
        return f"audience frozen: {d.get('customers')} customers"
    if event_type == "notice_delivered":
        text = f"{who} delivered"
        if d.get("kind") and d.get("kind") != "notice":
            text += f" ({_short(d['kind'], 30)})"
        if d.get("clock_started") and d.get("deadline"):
            text += f"; window closes {_when(d['deadline'])}"
        return text
    if event_type == "notice_undelivered":
        return f"{who} undelivered: no contact accepted the mail"
    if event_type == "objection_received":
        timing = "timely" if d.get("timely") else "late"
        return f"{who} objected ({timing}, via {_plain_id(d.get('channel')) or '?'}){_receipt(d)}"
    if event_type == "objection_resolved":
        return f"{who}: case {_plain_id(d.get('outcome')) or '?'}{_receipt(d)}"
    if event_type in ("opt_in_recorded", "opt_in_revoked"):
        verb = "opted in" if event_type == "opt_in_recorded" else "revoked the opt-in"
        return f"{who} {verb} (via {_plain_id(d.get('channel')) or '?'}){_receipt(d)}"
    if event_type == "deemed_acceptance":
        return f"{who}: silence deemed acceptance at {_when(d.get('deadline'))}"
    if event_type in ("subprocessor_enabled", "subprocessor_disabled"):
        verb = "switched on" if event_type == "subprocessor_enabled" else "switched off"
        because = _plain_id(d.get("because"))
        return f"{who}: sub-processor {verb}" + (f" ({because})" if because else "")
    if event_type == "customer_settled":
        return f"{who} settled: {_plain_id(d.get('verdict')) or '?'}"
    if event_type == "customer_excluded":
        return f"{who} excluded by ops (delivery {_plain_id(d.get('delivery')) or '?'})"
    if event_type == "notice_postponed":
        return f"postponed by {_plain_id(d.get('by')) or '?'} to {_when(d.get('to'))}"
    if event_type == "notice_cancelled":
        return f"cancelled by {_plain_id(d.get('by')) or '?'}"
    if event_type == "reminder_sent":
        return f"{who} reminded"
    if event_type == "action_rejected":
        action = _plain_id(d.get("action")) or "?"
        text = f"{action} rejected" + (f" for {who}" if who else "")
        text += f" (via {_plain_id(d.get('channel')) or '?'}){_receipt(d)}"
        return text + (f": {_short(d['reason'])}" if d.get("reason") else "")
    counted = [f"{k} {v}" for k, v in d.items() if isinstance(v, int) and not isinstance(v, bool)]
    return "; ".join(filter(None, [who, *counted[:4]])) or "—"


def timeline_entry(row: Any) -> dict[str, Any]:
    data = orjson.loads(row["data"])
    if eventstore.UPCASTERS.steps:
        _, data = eventstore.UPCASTERS.upcast(row["event_type"], row["schema_version"], data)
    return {
        "version": int(row["stream_version"]),
        "event_type": row["event_type"],
        "occurred_at": row["occurred_at"],
        "recorded_at": row["recorded_at"],
        "customer_id": _plain_id(data.get("customer_id")) if isinstance(data, dict) else None,
        "receipt_id": data.get("receipt_id")
        if isinstance(data, dict) and str(data.get("receipt_id", "")).startswith("r-")
        else None,
        "summary": summarize(row["event_type"], data),
    }


# An event's data as text; a large one (an audience snapshot of 100,000 ids) only with its scalar
# fields, which are all a summary uses, so a timeline page never parses megabytes.
_EVENT_COLUMNS = (
    "stream_version, event_type, schema_version, occurred_at, recorded_at,"
    " CASE WHEN pg_column_size(data) <= 65536 THEN data::text ELSE (SELECT"
    "  coalesce(json_object_agg(key, value), '{}'::json)::text FROM json_each(data)"
    "  WHERE json_typeof(value) NOT IN ('array', 'object')) END AS data"
)


async def timeline(
    pool: asyncpg.Pool, notice_id: str, *, before: int | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """The notice's events, newest first (those before version ``before``)."""
    stream = eventstore.notice_stream(notice_id)
    if before is None:  # (two statements: see customers_after)
        rows = await pool.fetch(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE stream_id = $1"
            " ORDER BY stream_version DESC LIMIT $2",
            stream,
            limit,
        )
    else:
        rows = await pool.fetch(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE stream_id = $1 AND stream_version < $2"
            " ORDER BY stream_version DESC LIMIT $3",
            stream,
            before,
            limit,
        )
    return [timeline_entry(row) for row in rows]


async def events_after(
    pool: asyncpg.Pool, notice_id: str, *, after: int, limit: int
) -> list[dict[str, Any]]:
    """The notice's events in stream order after version ``after`` (the API's keyset page)."""
    rows = await pool.fetch(
        f"SELECT {_EVENT_COLUMNS} FROM events WHERE stream_id = $1 AND stream_version > $2"
        " ORDER BY stream_version LIMIT $3",
        eventstore.notice_stream(notice_id),
        after,
        limit,
    )
    return [timeline_entry(row) for row in rows]


# --- progress over time (the chart) -----------------------------------------------------------

SERIES = ("delivered", "objections", "opted_in", "activated")
MAX_POINTS = 240


@dataclass(frozen=True)
class Progress:
    """Cumulative counts at each instant where one changed, from the first to the last."""

    points: list[tuple[datetime, dict[str, int]]]

    @property
    def empty(self) -> bool:
        return not self.points


async def progress(pool: asyncpg.Pool, notice_id: str) -> Progress:
    """The notice's progress table, in at most MAX_POINTS steps, as running totals."""
    span = await pool.fetchrow(
        "SELECT min(at) AS first, max(at) AS last, count(*) AS n FROM rm_notice_progress"
        " WHERE notice_id = $1",
        notice_id,
    )
    if not span or not span["n"]:
        return Progress([])
    step = timedelta(minutes=1)
    if span["n"] > MAX_POINTS:
        width = (span["last"] - span["first"]) / MAX_POINTS
        step = max(step, timedelta(minutes=int(width.total_seconds() // 60) + 1))
    rows = await pool.fetch(
        "SELECT date_bin($2::interval, at, $3::timestamptz) AS at,"
        " sum(delivered)::int AS delivered, sum(objections)::int AS objections,"
        " sum(opted_in)::int AS opted_in, sum(activated)::int AS activated"
        " FROM rm_notice_progress WHERE notice_id = $1 GROUP BY 1 ORDER BY 1",
        notice_id,
        step,
        span["first"],
    )
    totals = dict.fromkeys(SERIES, 0)
    points = []
    for row in rows:
        for name in SERIES:
            totals[name] += row[name]
        points.append((row["at"], dict(totals)))
    return Progress(points)
