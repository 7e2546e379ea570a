"""`noticeflow up --demo`: the seed notice on a timeline compressed to a few minutes.

Demo customers are imported, the OpenAI notice (opt-in, US customers only) is created by alice and
approved by bob, then customers act on a script — opt-ins, an objection inside the window, a bounced
address fixed and resent, a late objection — and ops resolve the cases, so a newcomer watches the
whole lifecycle from draft to active.
"""

from __future__ import annotations

import asyncio
import tomllib
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

from temporalio.client import Client

from noticeflow import db, repository
from noticeflow.config import Settings
from noticeflow.contracts import workflow_id
from noticeflow.control import query_status, start_notice, submit
from noticeflow.domain.customers import parse_customers_csv
from noticeflow.domain.errors import InputError
from noticeflow.domain.notice import NoticeSpec, parse_notice
from noticeflow.projections import catch_up
from noticeflow.temporal import connect

WINDOW = timedelta(minutes=2)
EFFECTIVE_AFTER = timedelta(minutes=3)


def demo_file(name: str) -> str:
    return resources.files("noticeflow.demo").joinpath(name).read_text(encoding="utf-8")


def demo_notice(now: datetime) -> NoticeSpec:
    data = tomllib.loads(demo_file("openai-2023.toml"))
    data.update(
        notice_id=f"openai-demo-{now:%Y%m%d-%H%M%S}",
        objection_window=f"PT{int(WINDOW.total_seconds())}S",
        effective_at=(now + EFFECTIVE_AFTER).isoformat(),
    )
    return parse_notice(data, "demo notice")


def say(message: str) -> None:
    print(f"[demo {datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


async def run_demo(settings: Settings) -> None:
    pool = await db.create_pool(settings.require_database_url(), max_size=3)
    try:
        client = await connect(settings)
        await repository.upsert_customers(
            pool, parse_customers_csv(demo_file("customers.csv"), "demo customers")
        )
        say("imported 9 demo customers (7 in the US, 2 in the EU)")
        spec = demo_notice(datetime.now(UTC))
        await start_notice(client, pool, spec, "alice", settings.task_queue)
        say(
            f"alice created notice {spec.notice_id}: {spec.subprocessor}, opt-in, US customers only"
        )
        say(f"window {WINDOW}, effective at {spec.effective_at:%H:%M:%S} UTC")
        script = asyncio.create_task(_customers_act(client, pool, spec))
        await _watch(client, pool, spec)
        script.cancel()
    finally:
        await pool.close()


async def _signal(
    client: Client, pool: Any, notice_id: str, name: str, payload: dict[str, Any], what: str
) -> None:
    receipt, _ = await submit(client, pool, notice_id, name, payload, channel="demo")
    outcome = f"  -> {receipt.status}: {receipt.reason}" if receipt.reason else ""
    say(f"{what}{outcome}")


async def _customers_act(client: Client, pool: Any, spec: NoticeSpec) -> None:
    notice_id = spec.notice_id
    await _signal(
        client, pool, notice_id, "approve", {"by": "alice"}, "alice tries to approve her own notice"
    )
    await _signal(client, pool, notice_id, "approve", {"by": "bob"}, "bob approves: sending starts")
    await asyncio.sleep(10)
    for customer in ("acme-us", "globex-us", "hooli-us", "stark-us"):
        await _signal(
            client,
            pool,
            notice_id,
            "opt_in",
            {"customer_id": customer, "by": "customer", "channel": "demo"},
            f"{customer} opts in",
        )
    await _signal(
        client,
        pool,
        notice_id,
        "object",
        {
            "customer_id": "initech-us",
            "reason": "We do not allow AI processing of employee data",
            "by": "Initech DPO",
            "channel": "demo",
        },
        "initech-us objects inside its window",
    )
    await asyncio.sleep(10)
    fixed = demo_file("customers.csv").replace(
        "compliance@umbrella.invalid", "compliance@umbrella.example"
    )
    await repository.upsert_customers(pool, parse_customers_csv(fixed, "demo customers"))
    await _signal(
        client,
        pool,
        notice_id,
        "resend",
        {"customer_id": "umbrella-us", "by": "ops"},
        "ops fix umbrella-us's bounced address and resend: its own window starts now",
    )
    await _signal(
        client,
        pool,
        notice_id,
        "opt_in",
        {"customer_id": "umbrella-us", "channel": "demo"},
        "umbrella-us opts in",
    )
    await asyncio.sleep(WINDOW.total_seconds())
    await _signal(
        client,
        pool,
        notice_id,
        "object",
        {
            "customer_id": "stark-us",
            "reason": "Second thoughts",
            "by": "Stark legal",
            "channel": "demo",
        },
        "stark-us objects after its deadline: late, kept, flagged, not blocking",
    )
    await _signal(
        client,
        pool,
        notice_id,
        "resolve_objection",
        {"customer_id": "initech-us", "outcome": "excluded", "by": "carol", "note": "Upheld"},
        "carol upholds initech-us's objection: excluded",
    )
    while (await query_status(client, notice_id)).phase.value != "active":
        await asyncio.sleep(2)
    await asyncio.sleep(5)
    await _signal(
        client,
        pool,
        notice_id,
        "resolve_objection",
        {"customer_id": "stark-us", "outcome": "withdrawn", "by": "carol"},
        "stark-us withdraws its late objection",
    )


async def _watch(client: Client, pool: Any, spec: NoticeSpec) -> None:
    last: tuple[Any, ...] = ()
    handle = client.get_workflow_handle(workflow_id(spec.notice_id))
    while True:
        try:
            status = await query_status(client, spec.notice_id)
        except InputError:
            break
        now = (
            status.phase.value,
            status.delivered,
            status.undelivered,
            status.open_objections,
            status.activated,
        )
        if now != last:
            say(
                f"phase {status.phase.value}: delivered {status.delivered}, undelivered "
                f"{status.undelivered}, open objections {status.open_objections}, "
                f"activated {status.activated}, unsettled {status.unsettled}"
            )
            last = now
        description = await handle.describe()
        if description.status is not None and description.status.name != "RUNNING":
            break
        await asyncio.sleep(2)
    await catch_up(pool)  # the read models, current to the last event
    summary = await repository.notice_summary(pool, spec.notice_id)
    say(f"notice {spec.notice_id} is complete: every customer is settled")
    for row in summary["customers"]:
        objection = row["objection"]
        say(
            f"  {row['customer_id']:<12} delivery={row['delivery']:<11} opted_in={row['opted_in']!s:<5} "
            f"objection={(objection or {}).get('status', '-'):<9} verdict={row['verdict'] or '-':<9} "
            f"activated={row['activated']}"
        )
    say("see every mail in the mail dir, and the history in the Temporal Web UI; Ctrl-C to stop")
