"""The Temporal Web UI tells the notice's story: a static summary and details when the workflow
starts, a summary on every activity and timer, and current details (phase, counts, next deadline)
kept up to date — counts, ids, instants and the sub-processor's legal name only: no contact, no
person, no customer's words. Read back the way the UI reads them: describe(), the history's
user metadata, and the `__temporal_workflow_metadata` query."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowHandle, WorkflowHistory
from temporalio.worker import Replayer

from noticeflow import codec, control, keyring, repository
from noticeflow.contracts import NoticeStatus, workflow_id
from noticeflow.domain.rules import Phase
from tests import helpers
from worker.main import build_worker, make_deps
from workflows.notice import NoticeWorkflow

HISTORIES = Path(__file__).parent / "histories"
# A customer's free text: it lives sealed in PostgreSQL, never in the workflow or its UI texts.
REASON = "Our counsel Jane Roe (jane.roe@initech.example) objects: no AI on our data"
NAMES = ("Acme Corp", "Initech", "Umbrella", "Globex", "Hooli", "Jane Roe", "alice", "bob")


async def ui_texts(handle: WorkflowHandle[Any, Any]) -> dict[str, Any]:
    """Everything the Temporal Web UI shows about a workflow, as text."""
    description = await handle.describe()
    converter = codec.data_converter(keyring.installed())  # summaries are encrypted too
    activities, timers = [], []
    async for event in handle.fetch_history_events():
        if not event.user_metadata.HasField("summary"):
            continue
        (summary,) = await converter.decode([event.user_metadata.summary], [str])
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            activities.append((name, summary))
        elif event.event_type == EventType.EVENT_TYPE_TIMER_STARTED:
            timers.append(summary)
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return {
        "summary": await description.static_summary(),
        "details": await description.static_details(),
        "activities": activities,
        "timers": timers,
        "current": metadata.current_details,
    }


def assert_nothing_personal(texts: dict[str, Any]) -> None:
    everything = repr(texts)
    assert not helpers.addresses_in(everything), helpers.addresses_in(everything)
    for word in (*NAMES, REASON, "no AI on our data"):
        assert word not in everything, word


async def status_of(handle: WorkflowHandle[Any, Any]) -> NoticeStatus:
    return await handle.query(NoticeWorkflow.status)


async def wait_until(handle: WorkflowHandle[Any, Any], predicate: Any, seconds: float = 60) -> Any:
    loop = asyncio.get_running_loop()
    give_up = loop.time() + seconds
    while True:
        status = await status_of(handle)
        if predicate(status):
            return status
        assert loop.time() < give_up, f"not reached; last status {status}"
        await asyncio.sleep(0.2)


async def test_the_ui_tells_the_story_with_counts_and_ids_only(dev_server_env, pool, smtp_sink):
    client = dev_server_env.client
    task_queue = f"tq-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    # Globex's 30-day contract would outlast the date: this notice goes to the other three.
    spec = helpers.notice(
        now,
        notice_id=f"ui-{uuid.uuid4().hex[:6]}",
        audience={"customers": ["acme", "initech", "umbrella"]},
    )
    await repository.upsert_customers(pool, helpers.customers())
    deps = make_deps(pool, smtp_sink.url, "privacy@vendor.example")
    async with build_worker(client, deps, task_queue):
        await control.start_notice(client, pool, spec, "alice", task_queue)
        handle = client.get_workflow_handle(workflow_id(spec.notice_id))

        await wait_until(handle, lambda s: s.signals_handled == 0 and s.phase is Phase.draft)
        texts = await ui_texts(handle)
        assert texts["summary"] == (
            f"OpenAI, LLC · notice {spec.notice_id} · effective "
            f"{spec.effective_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
        )
        details = texts["details"]
        assert f"`{spec.notice_id}`" in details and "OpenAI, LLC (United States)" in details
        assert "**Audience:** selected at approval (3 named customers)" in details
        assert "**Opt-in:** yes" in details and "P21D" in details
        assert "**Draft: waiting for approval**" in texts["current"]
        assert "selected at approval" in texts["current"]

        receipt, _ = await control.submit(
            client, pool, spec.notice_id, "approve", {"by": "bob"}, task_queue=task_queue
        )
        assert receipt.status == "accepted", receipt
        await wait_until(handle, lambda s: s.phase is Phase.window_open)
        receipt, _ = await control.submit(
            client, pool, spec.notice_id, "object",
            {"customer_id": "initech", "reason": REASON}, channel="link", task_queue=task_queue,
        )  # fmt: skip
        assert receipt.status == "accepted", receipt
        status = await wait_until(
            handle, lambda s: s.open_objections == 1 and not s.pending_signals
        )
        assert (status.audience_size, status.delivered, status.undelivered) == (3, 2, 1)

        texts = await ui_texts(handle)
        activities = dict(texts["activities"])  # the last summary of each activity type
        summaries = [summary for _, summary in texts["activities"]]
        assert activities["send_notices"] == "mail 3 customers"
        assert activities["check_approval"].startswith("check the audience")
        assert activities["snapshot_audience"].startswith("snapshot the audience")
        assert "record phase notifying" in summaries and "record phase window_open" in summaries
        assert "record event notice_approved" in summaries
        assert any(s.startswith("settle approve receipt ") for s in summaries), summaries
        assert activities["process_intake"].startswith("judge pending receipts")
        # The window's timer: until the latest deadline (before the effective date).
        closes = status.window_closes_at
        assert closes is not None
        assert f"window closes {closes.astimezone(UTC):%Y-%m-%d %H:%M} UTC" in texts["timers"]

        current = texts["current"]
        assert "**Window open: customers may object or opt in**" in current
        assert (
            "3 · delivered 2 · undelivered 1 · open cases 1 · opted in 0 · activated 0" in current
        )
        assert f"**Next:** window closes {closes.astimezone(UTC):%Y-%m-%d %H:%M} UTC" in current
        assert "**Actions:**" in current and "0 waiting" in current
        assert_nothing_personal(texts)

        scheduled = await count_scheduled(handle)
        assert scheduled == len(texts["activities"]), "an activity without a summary"
        await helpers.assert_no_contact_address_in_history(handle, helpers.CUSTOMERS_CSV)
        history = await handle.fetch_history()
        await handle.terminate("test over")

    # Summaries are metadata: this run's history replays against the workflow code.
    replayer = Replayer(
        workflows=[NoticeWorkflow], data_converter=codec.data_converter(keyring.installed())
    )
    await replayer.replay_workflow(history)


async def count_scheduled(handle: WorkflowHandle[Any, Any]) -> int:
    return len(
        [
            event
            async for event in handle.fetch_history_events()
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        ]
    )


async def test_a_notice_started_before_the_summaries_replays_unchanged():
    """A notice running when this change is deployed: its history (recorded by the workflow code
    before it had summaries or current details, through approval, objections, a resend,
    postponements and activation to completion) replays with the same commands: no patch needed."""
    history = WorkflowHistory.from_json(
        "notice-openai-test", (HISTORIES / "notice_before_ui_summaries.json").read_text()
    )
    assert len(history.events) > 300
    replayer = Replayer(
        workflows=[NoticeWorkflow], data_converter=codec.data_converter(keyring.installed())
    )
    result = await replayer.replay_workflow(history)
    assert result.replay_failure is None


async def test_a_notice_run_to_completion_says_so(time_skipping_env, pool, smtp_sink):
    """The effective date's timer says what it waits for; a completed notice's current details
    say it is complete, with the final counts."""
    env = time_skipping_env
    task_queue = f"tq-{uuid.uuid4().hex[:8]}"
    now = await env.get_current_time()
    spec = helpers.notice(
        now, notice_id=f"ui-done-{uuid.uuid4().hex[:6]}", audience={"customers": ["acme"]}
    )
    await repository.upsert_customers(pool, helpers.customers())
    deps = make_deps(pool, smtp_sink.url, "privacy@vendor.example")
    async with build_worker(env.client, deps, task_queue):
        await control.start_notice(env.client, pool, spec, "alice", task_queue)
        handle = env.client.get_workflow_handle(workflow_id(spec.notice_id))
        await control.submit(
            env.client, pool, spec.notice_id, "approve", {"by": "bob"}, task_queue=task_queue
        )
        await control.submit(
            env.client, pool, spec.notice_id, "opt_in", {"customer_id": "acme"},
            task_queue=task_queue,
        )  # fmt: skip
        # A handle not made by start_workflow does not skip time by itself: skip past the date.
        await env.sleep(timedelta(days=30))
        done = NoticeStatus.model_validate(await handle.result())
        assert done.phase is Phase.active and done.activated == 1
        texts = await ui_texts(handle)
        assert texts["current"].startswith("**Complete: every customer is settled**")
        assert (
            "1 · delivered 1 · undelivered 0 · open cases 0 · opted in 1 · activated 1 · not settled 0"
            in (texts["current"])
        )
        assert "**Next:**" not in texts["current"]
        effective = f"{spec.effective_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
        assert f"effective date (activation starts) {effective}" in texts["timers"]
        summaries = [summary for _, summary in texts["activities"]]
        assert "activation round: 1 customer not settled yet" in summaries
        assert "record phase active" in summaries
        assert await count_scheduled(handle) == len(texts["activities"])
        assert_nothing_personal(texts)


async def test_a_run_started_after_completion_says_so(dev_server_env, pool, smtp_sink):
    """A late action starts a new run of a completed notice (control.wake, signal-with-start): its
    static details say why it runs. (The time-skipping test server keeps no user metadata of a
    signal-with-start: this runs on the dev server.)"""
    client = dev_server_env.client
    task_queue = f"tq-{uuid.uuid4().hex[:8]}"
    spec = helpers.notice(datetime.now(UTC), notice_id=f"ui-late-{uuid.uuid4().hex[:6]}")
    await repository.upsert_customers(pool, helpers.customers())
    deps = make_deps(pool, smtp_sink.url, "privacy@vendor.example")
    async with build_worker(client, deps, task_queue):
        await control.start_notice(client, pool, spec, "alice", task_queue)
        handle = client.get_workflow_handle(workflow_id(spec.notice_id))
        first_run = (await handle.describe()).run_id
        receipt, _ = await control.submit(
            client, pool, spec.notice_id, "cancel", {"by": "alice", "reason": "wrong vendor"},
            task_queue=task_queue,
        )  # fmt: skip
        assert receipt.status == "accepted", receipt
        await handle.result()
        first = await ui_texts(handle)
        assert first["current"].startswith("**Cancelled**")
        assert "started after the notice completed" not in (first["details"] or "")

        receipt, _ = await control.submit(
            client, pool, spec.notice_id, "object", {"customer_id": "acme", "reason": REASON},
            channel="link", task_queue=task_queue,
        )  # fmt: skip
        assert not receipt.pending, receipt
        latest = client.get_workflow_handle(workflow_id(spec.notice_id))
        await latest.result()
        assert (await latest.describe()).run_id != first_run
        again = await ui_texts(latest)
        assert "started after the notice completed" in again["details"]
        assert again["summary"] == first["summary"]
        assert again["current"].startswith("**Cancelled**")
        assert any(
            summary.startswith("read the notice from the records")
            for _, summary in again["activities"]
        )
        assert_nothing_personal(first)
        assert_nothing_personal(again)
