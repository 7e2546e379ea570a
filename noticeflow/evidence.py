"""Evidence packs (rule 12): everything an auditor needs about one notice, checkable offline.

A pack is a directory: the notice's events as JSON lines (with their hash chain), the exact notice
text, the audience snapshot, a per-customer CSV, the delivery ledger, a readable HTML report, and a
manifest with the SHA-256 of every file. `verify_pack` re-checks all of it without a database.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from jinja2 import Environment, PackageLoader

from noticeflow import eventstore as es
from noticeflow import repository
from noticeflow.crypto import Field, load_keys, open_sealed
from noticeflow.domain.errors import InputError
from noticeflow.mail import stored_reply

MANIFEST = "manifest.json"
CUSTOMER_COLUMNS = [
    "customer_id", "delivery", "delivered_at", "message_ids", "smtp_replies", "deadline", "timezone",
    "objection_status", "objection_timely", "objection_received_at", "resolution", "resolved_by",
    "opted_in", "opted_in_at", "deemed_accepted_at", "activated", "activated_at", "verdict",
]  # fmt: skip


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in columns})
    return buffer.getvalue()


def _cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    return "" if value is None else value


async def export_pack(pool: asyncpg.Pool, notice_id: str, out: Path) -> dict[str, Any]:
    notice = await repository.notice_row(pool, notice_id)
    events = [
        e.as_json() for e in await es.read_stream(pool, es.notice_stream(notice_id), upcast=False)
    ]
    problem = es.verify_chain(events)
    if problem:
        raise InputError(f"the stored events of {notice_id} fail verification: {problem}")
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}

    def write(name: str, text: str) -> None:
        (out / name).write_text(text, encoding="utf-8")
        files[name] = sha256_file(out / name)

    write("events.jsonl", "".join(json.dumps(e, sort_keys=True) + "\n" for e in events))
    write("notice.txt", notice["notice_text"])
    audience = await _audience(pool, notice_id)
    write("audience.json", json.dumps(audience, indent=2, default=_cell) + "\n")
    customers = await _customer_rows(pool, notice_id)
    write("customers.csv", _csv(customers, CUSTOMER_COLUMNS))
    ledger = [
        dict(r)
        for r in await pool.fetch(
            "SELECT customer_id, email, kind, message_id, status, smtp_code, smtp_status, smtp_text,"
            " smtp_reply, attempts, first_attempt_at, finished_at FROM deliveries"
            " WHERE notice_id = $1 ORDER BY customer_id, kind, email",
            notice_id,
        )
    ]
    keys = await load_keys(pool, [row["customer_id"] for row in ledger])
    for row in ledger:
        row["email"] = open_sealed(keys.get(row["customer_id"]), Field.DELIVERY_EMAIL, row["email"])
        # The reply as code, enhanced status and its text opened ([erased] once the key is gone;
        # rows from before migration 014: their unsealed reply, read the same way).
        reply = stored_reply(row, keys.get(row["customer_id"]))
        row.pop("smtp_reply")
        row.update(smtp_code=reply.code, smtp_status=reply.status, smtp_text=reply.text)
    write("deliveries.csv", _csv(ledger, list(ledger[0].keys()) if ledger else ["customer_id"]))
    spec = json.loads(notice["spec"])
    summary = {**spec, **dict(notice), "notice_id": notice_id}
    env = Environment(loader=PackageLoader("noticeflow", "templates/evidence"), autoescape=True)
    write(
        "report.html",
        env.get_template("report.html.j2").render(
            summary=summary,
            customers=customers,
            events=events,
            text_sha256=notice["text_sha256"],
            exported_at=datetime.now(UTC).isoformat(),
        ),
    )
    manifest = {
        "notice_id": notice_id,
        "exported_at": datetime.now(UTC).isoformat(),
        "text_sha256": notice["text_sha256"],
        "events": len(events),
        "chain_head": events[-1]["hash"] if events else None,
        "files": files,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


async def _audience(pool: asyncpg.Pool, notice_id: str) -> list[dict[str, Any]]:
    recipients = await pool.fetch(
        "SELECT customer_id, name, region, services, timezone, window_days, window_unit, snapshot_at"
        " FROM recipients WHERE notice_id = $1 ORDER BY customer_id",
        notice_id,
    )
    contacts = await pool.fetch(
        "SELECT customer_id, generation, position, email, snapshot_at FROM recipient_contacts"
        " WHERE notice_id = $1 ORDER BY customer_id, generation, position",
        notice_id,
    )
    by_customer: dict[str, list[dict[str, Any]]] = {}
    for row in contacts:
        by_customer.setdefault(row["customer_id"], []).append(
            {k: row[k] for k in ("generation", "position", "email", "snapshot_at")}
        )
    keys = await load_keys(pool, [r["customer_id"] for r in recipients])

    def shown(customer_id: str, field: str, value: str) -> str:
        return open_sealed(keys.get(customer_id), field, value)

    return [
        {
            **dict(r),
            "name": shown(r["customer_id"], Field.CUSTOMER_NAME, r["name"]),
            "contacts": [
                {**c, "email": shown(r["customer_id"], Field.CONTACT_EMAIL, c["email"])}
                for c in by_customer.get(r["customer_id"], [])
            ],
        }
        for r in recipients
    ]


async def _customer_rows(pool: asyncpg.Pool, notice_id: str) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT r.*, o.status AS objection_status, o.timely AS objection_timely,"
        " o.received_at AS objection_received_at, o.status AS resolution, o.resolved_by,"
        " (SELECT array_agg(d.message_id ORDER BY d.email) FROM deliveries d WHERE d.notice_id ="
        "   r.notice_id AND d.customer_id = r.customer_id AND d.kind = 'notice') AS message_ids,"
        # status and reply code per contact (the reply's text, which may echo the address, is in
        # deliveries.csv, opened only while the customer's key exists)
        " (SELECT array_agg(d.status || ': ' || concat_ws(' ', d.smtp_code, d.smtp_status)"
        "   ORDER BY d.email)"
        "   FROM deliveries d WHERE d.notice_id = r.notice_id AND d.customer_id = r.customer_id"
        "   AND d.kind = 'notice') AS smtp_replies"
        " FROM recipients r LEFT JOIN LATERAL (SELECT * FROM objections o WHERE o.notice_id ="
        "   r.notice_id AND o.customer_id = r.customer_id ORDER BY o.received_at DESC LIMIT 1) o"
        "   ON true WHERE r.notice_id = $1 ORDER BY r.customer_id",
        notice_id,
    )
    return [dict(row) for row in rows]


@dataclass(frozen=True)
class Verification:
    ok: bool
    problem: str | None
    events: int

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "problem": self.problem, "events": self.events}


def verify_pack(directory: Path) -> Verification:
    """Check a pack offline: file hashes, the notice text hash, and every event's chain link."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (FileNotFoundError, json.JSONDecodeError) as error:
        return Verification(False, f"{MANIFEST}: {error}", 0)
    for name, digest in sorted(manifest.get("files", {}).items()):
        path = directory / name
        if not path.exists():
            return Verification(False, f"{name}: missing from the pack", 0)
        if sha256_file(path) != digest:
            return Verification(False, f"{name}: does not match the manifest (altered)", 0)
    text = (directory / "notice.txt").read_bytes()
    if hashlib.sha256(text).hexdigest() != manifest.get("text_sha256"):
        return Verification(False, "notice.txt: does not match the notice text hash", 0)
    events = [
        json.loads(line) for line in (directory / "events.jsonl").read_text().splitlines() if line
    ]
    return _verify_events(events, manifest.get("text_sha256"), manifest.get("chain_head"))


def _verify_events(
    events: list[dict[str, Any]], text_sha256: str | None, head: str | None
) -> Verification:
    problem = es.verify_chain(events)
    if problem:
        return Verification(False, f"first bad event: {problem}", len(events))
    created = next((e for e in events if e["event_type"] == "notice_created"), None)
    if created is None or created["data"].get("text_sha256") != text_sha256:
        return Verification(
            False, "the notice_created event does not carry the notice text hash", len(events)
        )
    if head is not None and (not events or events[-1]["hash"] != head):
        return Verification(
            False,
            "the last event is not the recorded chain head (events removed at the end)",
            len(events),
        )
    return Verification(True, None, len(events))


async def verify_database(pool: asyncpg.Pool, notice_id: str) -> Verification:
    notice = await repository.notice_row(pool, notice_id)
    stream = es.notice_stream(notice_id)
    problem = await es.verify_stream(pool, stream)
    events = [e.as_json() for e in await es.read_stream(pool, stream, upcast=False)]
    if problem:
        return Verification(False, f"first bad event: {problem}", len(events))
    return _verify_events(events, notice["text_sha256"], None)
