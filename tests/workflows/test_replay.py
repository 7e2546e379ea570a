"""Running notices survive a deploy: every history recorded in histories/ replays against today's
workflow code with the same commands, through the production data converter (noticeflow/codec.py).
A change to workflows/notice.py that would break a running notice fails here: the second half of
this file proves it, with variants of the workflow that change its commands and must not replay.

The histories (a new file in histories/ is replayed without touching this test):

- recorded by tests/workflows/record_histories.py with today's code, on the real activities,
  PostgreSQL and SMTP, every payload encrypted under the TEST codec key beside them
  (histories/TEST_ONLY_codec_key.txt): every_phase, staggered_activation,
  postponed_then_cancelled_in_window, cancelled_when_active, opt_in_excluded_then_revoked_run1/2
  (a revoke after completion: a new run by signal-with-start), removal_cancel_refused_run1/2 (a
  cancel refused after the removal took effect: the ``removal-keeps-effect`` patch),
  dora_request_for_changes, continue_as_new_run1/2 (the dev server suggested it),
  webhook_delivery (a webhook's WebhookDelivery workflow: a delivery answered 500 and retried,
  a second round, removal);
- recorded by earlier workflow code (plain payloads: the codec passes them through):
  notice_before_ui_summaries.json (a real worker's notice, judged the old way, names in the
  payloads) and notice_before_typed_events.json (the stubbed notice-actions story of
  test_notice_stubbed, events by the generic ``append_event``).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from noticeflow.activity_interfaces import NoticeEvents, Sending
from noticeflow.contracts import (
    AudienceRequest,
    NoticeEvent,
    NoticeEventRequest,
    NoticeInput,
    NoticeStatus,
    SendRequest,
)
from noticeflow.domain.rules import Phase
from workflows.notice import (
    MAILING,
    REMOVAL_KEEPS_EFFECT,
    SEND_IN_SHARDS,
    TYPED_NOTICE_EVENTS,
    NoticeWorkflow,
    Repeated,
)
from workflows.webhooks import WebhookWorkflow

HISTORIES = Path(__file__).parent / "histories"
ALL = sorted(HISTORIES.glob("*.json"))
BEFORE = ["notice_before_ui_summaries.json", "notice_before_typed_events.json"]
RECORDED = [p for p in ALL if p.name not in BEFORE]  # by record_histories.py, encrypted
# Payloads Temporal itself must read, never passed through a codec: search attributes (ids,
# phases, instants, counts and the sub-processor, a company) and the SDK's patch markers.
PLAIN_BY_DESIGN = ("/searchAttributes/", "/patch-data/")


def _converter() -> Any:
    # (imported here: this module defines workflows, which the sandbox imports again, and the
    # codec's cryptography may not be imported inside a workflow)
    from tests.workflows.record_histories import replay_converter

    return replay_converter()


def _history(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text())


def _events(path: Path) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = json.loads(path.read_text())["events"]
    return events


def _activity_types(path: Path) -> list[str]:
    return [
        e["activityTaskScheduledEventAttributes"]["activityType"]["name"]
        for e in _events(path)
        if "activityTaskScheduledEventAttributes" in e
    ]


def _patches(path: Path) -> list[str]:
    return [
        json.loads(base64.b64decode(payload["data"]))["id"]
        for e in _events(path)
        if "markerRecordedEventAttributes" in e
        for payload in e["markerRecordedEventAttributes"]["details"]["patch-data"]["payloads"]
    ]


async def _replay(path: Path, *workflows: type) -> None:
    replayer = Replayer(workflows=list(workflows) or [NoticeWorkflow], data_converter=_converter())
    await replayer.replay_workflow(_history(path))  # raises on any nondeterminism


# --- every recorded history replays ------------------------------------------------------------


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
async def test_a_recorded_notice_replays(path: Path) -> None:
    # With the interceptors a production worker runs: its own log context, and tracing (which a
    # worker inherits from its client when NOTICEFLOW_OTLP_ENDPOINT is set; nothing listens here).
    from noticeflow import tracing
    from worker.main import LogContextInterceptor

    replayer = Replayer(
        workflows=[NoticeWorkflow, WebhookWorkflow],
        data_converter=_converter(),
        interceptors=[LogContextInterceptor(), *tracing.interceptors("http://127.0.0.1:9")],
    )
    result = await replayer.replay_workflow(_history(path), raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure


@pytest.mark.parametrize("name", BEFORE)
def test_histories_of_earlier_code_took_the_old_path(name: str) -> None:
    """Their replay above takes the pre-patch branch again: the generic ``append_event``."""
    path = HISTORIES / name
    assert "append_event" in _activity_types(path)
    assert TYPED_NOTICE_EVENTS not in _patches(path)


def test_the_recordings_cover_every_scenario_of_the_script() -> None:
    """Every scenario record_histories.py runs has its file(s) here (re-record, then commit), and
    the recordings show what they claim: the typed-events patch taken, a continue-as-new, a run
    after completion, a cancel refused by the removal patch."""
    from tests.workflows.record_histories import DEV_SERVER, TIME_SKIPPING

    names = {p.stem.rsplit("_run", 1)[0] for p in ALL}
    assert set(TIME_SKIPPING) | set(DEV_SERVER) <= names
    last = {p.stem: _events(p)[-1]["eventType"] for p in ALL}
    assert last["continue_as_new_run1"] == "EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW"
    assert last["every_phase"] == "EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED"
    assert last["webhook_delivery"] == "EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED"
    webhook = _events(HISTORIES / "webhook_delivery.json")
    assert _activity_types(HISTORIES / "webhook_delivery.json") == ["deliver_webhooks"] * 3
    retried = [
        e["activityTaskStartedEventAttributes"]["attempt"]
        for e in webhook
        if "activityTaskStartedEventAttributes" in e
    ]
    assert max(retried) >= 2, retried  # the 500, retried by Temporal
    assert TYPED_NOTICE_EVENTS in _patches(HISTORIES / "every_phase.json")
    assert REMOVAL_KEEPS_EFFECT in _patches(HISTORIES / "removal_cancel_refused_run2.json")
    revoked = _activity_types(HISTORIES / "opt_in_excluded_then_revoked_run2.json")
    assert revoked[0] == "load_notice_record"  # a run after completion reads the records first
    # The mailing in shards (three for 1,200 customers) on the send queue; every recording made
    # before the shards has one send_notices on the workflow's own queue.
    shards = HISTORIES / "sent_in_shards.json"
    assert SEND_IN_SHARDS in _patches(shards)
    queues = [
        e["activityTaskScheduledEventAttributes"]["taskQueue"]["name"]
        for e in _events(shards)
        if e.get("activityTaskScheduledEventAttributes", {}).get("activityType", {}).get("name")
        == "send_notices"
    ]
    assert len(queues) == 3 and all(queue.endswith(".send") for queue in queues), queues
    for path in ALL:
        if path != shards:
            assert SEND_IN_SHARDS not in _patches(path), path.name
            assert _activity_types(path).count("send_notices") <= 1, path.name


@pytest.mark.parametrize("path", [p for p in ALL if p.name not in BEFORE], ids=lambda p: p.stem)
def test_recorded_payloads_are_encrypted(path: Path) -> None:
    """Nothing a customer or an operator wrote is in a recording in clear: every payload but the
    ones Temporal must read itself is ciphertext under the TEST codec key."""
    clear: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            encoding = node.get("metadata", {}).get("encoding") if "metadata" in node else None
            if isinstance(encoding, str):
                if base64.b64decode(encoding) != b"binary/encrypted" and not any(
                    part in where for part in PLAIN_BY_DESIGN
                ):
                    clear.append(where)
                return
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for value in node:
                walk(value, where)

    walk(_events(path), "")
    assert clear == []


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: p.stem)
async def test_recordings_carry_ids_only_even_decrypted(path: Path) -> None:
    """Decrypted with the TEST key, a recording still names no one: no contact address, no
    approver or author, no customer's words (they stay in the intake, in PostgreSQL)."""
    from temporalio.api.common.v1 import Payload

    from tests.helpers import _payloads, addresses_in

    payload_codec = _converter().payload_codec
    raw = json.loads(path.read_text())
    texts = []
    for item in _payloads(raw):
        payload = Payload(
            metadata={k: base64.b64decode(v) for k, v in item["metadata"].items()},
            data=base64.b64decode(item.get("data", "")),
        )
        (plain,) = await payload_codec.decode([payload])
        texts.append(plain.data.decode("utf-8", "replace"))
    text = "\n".join(texts)
    assert addresses_in(text) == set()
    words = ("alice", "bob", "carol", "DPO", "No AI", "Too late", "EU hosting", "Vendor withdrew")
    assert [word for word in words if word in text] == []


def test_the_test_codec_key_is_refused_as_a_real_key() -> None:
    """The recordings' key is public: a deployment that set it would be refused at start."""
    from noticeflow import keyring
    from tests.workflows.record_histories import codec_test_key

    problem = keyring.key_problem("codec_key", codec_test_key())
    assert problem is not None and "public" in problem


# --- the net catches a breaking change --------------------------------------------------------


@workflow.defn(name="NoticeWorkflow", sandboxed=False)
class CountsBeforeMailing(NoticeWorkflow):
    """A careless refactoring: the counts are read back before the mailing instead of after it
    (two activities swapped), without a patch."""

    @workflow.run
    async def run(self, notice: NoticeInput) -> NoticeStatus:
        return await super().run(notice)

    async def _send_all(self) -> bool:
        request = AudienceRequest(spec=self.spec, at=workflow.now())
        await self._activity(Sending.snapshot_audience, request)
        await self._refresh_totals()
        at = workflow.now()
        await self._activity(
            Sending.send_notices, SendRequest(spec=self.spec, at=at), timeout=MAILING
        )
        return True


@workflow.defn(name="NoticeWorkflow", sandboxed=False)
class ForgetsTheRemovalPatch(NoticeWorkflow):
    """The ``removal-keeps-effect`` branch deleted while runs that took it are still open: a
    cancel of a removal in effect would be carried out (a cancellation mail) instead of refused."""

    @workflow.run
    async def run(self, notice: NoticeInput) -> NoticeStatus:
        return await super().run(notice)

    def _check_cancellable(self) -> None:
        if self.state.phase is Phase.cancelled:
            raise Repeated("the notice is already cancelled")


async def _typed_event(wf: NoticeWorkflow, event: NoticeEvent, receipt_id: str | None) -> None:
    """NoticeWorkflow._event's new branch alone."""
    wf.state.event_seq += 1
    request = NoticeEventRequest.of(
        wf.spec.notice_id, wf._step_key(event.type), workflow.now(), event, receipt_id=receipt_id
    )
    await wf._activity(NoticeEvents.record_notice_event, request)


@workflow.defn(name="NoticeWorkflow", sandboxed=False)
class DropsTheOldEventsBranch(NoticeWorkflow):
    """The ``typed-notice-events`` patch removed too early: its old branch (the generic
    ``append_event``) deleted while runs started before the patch are still open."""

    @workflow.run
    async def run(self, notice: NoticeInput) -> NoticeStatus:
        return await super().run(notice)

    async def _event(self, event: NoticeEvent, receipt_id: str | None = None) -> None:
        await _typed_event(self, event, receipt_id)


@workflow.defn(name="NoticeWorkflow", sandboxed=False)
class DeprecatesTheEventsPatch(NoticeWorkflow):
    """The policy's second step for ``typed-notice-events``: ``deprecate_patch`` and the new
    branch only. Safe once no run started before the patch is open (it replays the runs recorded
    since), and not before (a run of the old code needs the old branch)."""

    @workflow.run
    async def run(self, notice: NoticeInput) -> NoticeStatus:
        return await super().run(notice)

    async def _event(self, event: NoticeEvent, receipt_id: str | None = None) -> None:
        workflow.deprecate_patch(TYPED_NOTICE_EVENTS)
        await _typed_event(self, event, receipt_id)


@workflow.defn(name="NoticeWorkflow", sandboxed=False)
class SkipsTheTotals(NoticeWorkflow):
    """One activity dropped: the counts are no longer read back after the mailing."""

    @workflow.run
    async def run(self, notice: NoticeInput) -> NoticeStatus:
        return await super().run(notice)

    async def _refresh_totals(self) -> None:
        return None


@workflow.defn(name="NoticeWorkflow", sandboxed=False)
class DropsTheShards(NoticeWorkflow):
    """The ``send-in-shards`` branch reverted while a notice mailed in shards is open: one
    activity for the whole audience again."""

    @workflow.run
    async def run(self, notice: NoticeInput) -> NoticeStatus:
        return await super().run(notice)

    async def _send_all(self) -> bool:
        await self._activity(
            Sending.snapshot_audience, AudienceRequest(spec=self.spec, at=workflow.now())
        )
        at = workflow.now()
        await self._activity(
            Sending.send_notices, SendRequest(spec=self.spec, at=at), timeout=MAILING
        )
        await self._refresh_totals()
        return True


@pytest.mark.parametrize(
    ("variant", "history"),
    [
        (DropsTheShards, "sent_in_shards.json"),
        (CountsBeforeMailing, "every_phase.json"),
        (CountsBeforeMailing, "dora_request_for_changes.json"),
        (ForgetsTheRemovalPatch, "removal_cancel_refused_run2.json"),
        (DropsTheOldEventsBranch, "notice_before_typed_events.json"),
        # A patch marker without its patched() call: deprecate_patch must come first.
        (DropsTheOldEventsBranch, "every_phase.json"),
        (DeprecatesTheEventsPatch, "notice_before_typed_events.json"),
        (SkipsTheTotals, "staggered_activation.json"),
        (SkipsTheTotals, "continue_as_new_run1.json"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else v,
)
async def test_a_breaking_change_fails_the_replay(variant: type, history: str) -> None:
    with pytest.raises(workflow.NondeterminismError):
        await _replay(HISTORIES / history, variant)


@pytest.mark.parametrize(
    ("variant", "history"),
    [
        (DropsTheShards, "every_phase.json"),  # mailed before the shards: one activity
        (ForgetsTheRemovalPatch, "every_phase.json"),
        (DeprecatesTheEventsPatch, "every_phase.json"),
        (DeprecatesTheEventsPatch, "postponed_then_cancelled_in_window.json"),
        (DropsTheOldEventsBranch, "removal_cancel_refused_run2.json"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else v,
)
async def test_the_variants_replay_where_their_change_is_not_reached(
    variant: type, history: str
) -> None:
    """The failures above are the changes themselves, not the way the variants are built: a
    history that never reaches the changed code replays (the removal patch on an addition; a
    run that recorded no event about the notice without the events patch), and the policy's
    ``deprecate_patch`` step replays every run started since the patch."""
    await _replay(HISTORIES / history, variant)


@workflow.defn(name="NoticeWorkflow", sandboxed=False)
class Unsandboxed(NoticeWorkflow):
    """Today's workflow outside the sandbox, so that a test may change a module global of
    workflows/notice.py for it."""

    @workflow.run
    async def run(self, notice: NoticeInput) -> NoticeStatus:
        return await super().run(notice)


@pytest.mark.parametrize("count", [1, 2, 4, 32])
async def test_a_changed_shard_count_fails_the_replay(monkeypatch, count: int) -> None:
    """The number of shards is part of a notice's commands: a notice mailed in three shards
    does not replay with any other count (contracts.send_shards may change only behind a new
    patch), and replays with its own."""
    import workflows.notice

    await _replay(HISTORIES / "sent_in_shards.json", Unsandboxed)
    monkeypatch.setattr(workflows.notice, "send_shards", lambda audience: count)
    with pytest.raises(workflow.NondeterminismError):
        await _replay(HISTORIES / "sent_in_shards.json", Unsandboxed)
