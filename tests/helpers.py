"""Small builders shared by the tests."""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime, timedelta
from typing import Any

from temporalio.client import WorkflowHandle

from noticeflow.domain.customers import parse_customers_csv
from noticeflow.domain.notice import NoticeSpec, parse_notice

CUSTOMERS_CSV = """customer_id,name,region,services,contact_emails,timezone,window_days,window_unit
acme,Acme Corp,US,assistant;goals,privacy@acme.example;dpo@acme.example,America/New_York,,
globex,Globex,US,assistant,legal@globex.example,America/Los_Angeles,30,calendar
initech,Initech,US,assistant,dpo@initech.example,America/Chicago,,
umbrella,Umbrella,US,assistant,nobody@umbrella.invalid,America/Denver,,
hooli,Hooli,EU,assistant,privacy@hooli.example,Europe/Berlin,,
"""


def customers(csv_text: str = CUSTOMERS_CSV):
    return parse_customers_csv(csv_text)


def notice(now: datetime, **overrides: Any) -> NoticeSpec:
    data: dict[str, Any] = {
        "notice_id": "openai-test",
        "title": "Sub-Processor Notification - OpenAI",
        "subprocessor": "OpenAI, LLC",
        "subprocessor_location": "United States",
        "purpose": "Interactive chatbots and virtual assistants for performance management",
        "data_categories": ["user content", "text-based inquiries"],
        "services": ["assistant"],
        "transfer_mechanism": "Not applicable (US customers, US processing)",
        "opt_in": True,
        "objection_window": "P21D",
        # Past any 21-day deadline, even one whose last day rolls over a weekend (Art. 3(4)).
        "effective_at": (now + timedelta(days=26)).isoformat(),
        "audience": {"regions": ["US"]},
    }
    data.update(overrides)
    return parse_notice(data)


def addresses_in(text: str) -> set[str]:
    return set(re.findall(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", text))


def _payloads(node: Any) -> list[dict[str, Any]]:
    """Every payload ({metadata, data}) in a history's JSON form."""
    found = []
    if isinstance(node, dict):
        if "data" in node and isinstance(node.get("metadata"), dict):
            found.append(node)
        for value in node.values():
            found += _payloads(value)
    elif isinstance(node, list):
        for value in node:
            found += _payloads(value)
    return found


async def assert_no_contact_address_in_history(handle: WorkflowHandle, *sources: str) -> None:
    """Rule 13: decode every payload of the workflow's history; no contact address may appear."""
    from temporalio.api.common.v1 import Payload

    from noticeflow import codec, keyring

    # The payloads are encrypted (noticeflow/codec.py): decode each with the codec, then look.
    payload_codec = codec.data_converter(keyring.installed()).payload_codec
    assert payload_codec is not None
    raw = (await handle.fetch_history()).to_json_dict()
    history = json.dumps(raw)
    decoded = []
    for item in _payloads(raw):
        payload = Payload(
            metadata={k: base64.b64decode(v) for k, v in item["metadata"].items()},
            data=base64.b64decode(item.get("data", "")),
        )
        (plain,) = await payload_codec.decode([payload])
        decoded.append(plain.data.decode("utf-8", "replace"))
    assert decoded, "the history has payloads to look into"
    everything = history + "\n".join(decoded)
    contacts = set().union(*(addresses_in(source) for source in sources))
    assert contacts, "the check needs addresses to look for"
    leaked = {address for address in contacts if address in everything}
    assert not leaked, f"contact addresses in workflow history: {leaked}"


async def ledger(pool: Any, where: str = "true") -> list[dict[str, Any]]:
    """The delivery ledger with its sealed addresses opened (they are stored encrypted), and each
    row's reply as one readable line in ``reply`` (code, status and the sealed text opened)."""
    from noticeflow.crypto import Field, load_keys, open_sealed
    from noticeflow.mail import stored_reply

    rows = [dict(r) for r in await pool.fetch(f"SELECT * FROM deliveries WHERE {where}")]
    keys = await load_keys(pool, [r["customer_id"] for r in rows])
    for row in rows:
        row["email"] = open_sealed(keys.get(row["customer_id"]), Field.DELIVERY_EMAIL, row["email"])
        row["reply"] = stored_reply(row, keys.get(row["customer_id"])).readable()
    return rows


async def take_intake(deps: Any, spec: NoticeSpec, phase: Any = None) -> Any:
    """Judge everything pending in a notice's intake with the real activity (no workflow)."""
    from temporalio.testing import ActivityEnvironment

    from activities.intake import IntakeActivities
    from noticeflow.contracts import IntakeRequest
    from noticeflow.domain.rules import Phase

    request = IntakeRequest(
        spec=spec, phase=phase or Phase.window_open, at=datetime.now().astimezone()
    )
    return await ActivityEnvironment().run(IntakeActivities(deps).process_intake, request)


async def notified_with_objection(pool: Any, smtp_url: str, objection: Any) -> NoticeSpec:
    """The seed-like notice snapshotted and mailed by the real activities, and one objection
    received through the intake and judged."""
    from datetime import UTC

    from temporalio.testing import ActivityEnvironment

    from activities.sending import SendingActivities
    from noticeflow import intake, repository
    from noticeflow.contracts import AudienceRequest, SendRequest
    from worker.main import make_deps

    deps = make_deps(pool, smtp_url, "privacy@vendor.example")
    now = datetime.now(UTC)
    spec = notice(now)
    await repository.upsert_customers(pool, customers())
    await repository.create_notice(pool, spec, "alice", now)
    env, sending = ActivityEnvironment(), SendingActivities(deps)
    await env.run(sending.snapshot_audience, AudienceRequest(spec=spec, at=now))
    await env.run(sending.send_notices, SendRequest(spec=spec, at=now))
    await intake.record(
        pool, spec.notice_id, "object", objection.model_dump(exclude_defaults=True), channel="cli"
    )
    await take_intake(deps, spec)
    return spec


async def start_notice_workflow(client: Any, spec: NoticeSpec, task_queue: str) -> WorkflowHandle:
    """Start the notice's workflow as `notice create` would, written by alice."""
    from noticeflow.contracts import NoticeInput, workflow_id
    from workflows.notice import NoticeWorkflow

    return await client.start_workflow(
        NoticeWorkflow.run,
        # As control.start_notice: no name travels through Temporal (alice is in the records).
        NoticeInput(spec=spec, author=""),
        id=workflow_id(spec.notice_id),
        task_queue=task_queue,
    )


RECORD_TABLES = {  # the records projected from events (noticeflow/records.py), in a stable order
    "notices": "notice_id",
    "recipients": "notice_id, customer_id",
    "objections": "notice_id, idempotency_key",
    "subprocessor_enablements": "customer_id, subprocessor",
}


async def records_of(pool: Any) -> dict[str, list[dict[str, Any]]]:
    """Every row of the projected records, to compare live with rebuilt."""
    return {
        table: [dict(row) for row in await pool.fetch(f"SELECT * FROM {table} ORDER BY {order}")]
        for table, order in RECORD_TABLES.items()
    }


def records_diff(
    a: dict[str, list[dict[str, Any]]], b: dict[str, list[dict[str, Any]]]
) -> list[str]:
    """Where two :func:`records_of` differ: table, row and column (for a readable failure)."""
    found = []
    for table, rows in a.items():
        other = b.get(table, [])
        if len(rows) != len(other):
            found.append(f"{table}: {len(rows)} rows != {len(other)} rows")
        for x, y in zip(rows, other, strict=False):
            for column in x:
                if x[column] != y.get(column):
                    key = [x[k] for k in RECORD_TABLES[table].split(", ")]
                    found.append(f"{table} {key} {column}: {x[column]!r} != {y.get(column)!r}")
    return found
