"""Running notices survive a deploy: histories recorded by earlier workflow code replay against
today's with the same commands. Recorded histories in histories/ (plain JSON payloads: the codec
passes unencrypted payloads through):

- notice_before_ui_summaries.json: a real worker's notice through approval, objections, a resend,
  postponements and activation to completion, judged the old way (names in the payloads);
- notice_before_typed_events.json: the stubbed notice-actions story
  (test_notice_stubbed.notice_actions_story) — postponed in draft, four-eyes refusal, approval,
  postponed in the window, cancelled — from receipts with facts, its events appended by the
  generic ``append_event``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from noticeflow import codec, keyring
from workflows.notice import NoticeWorkflow

HISTORIES = Path(__file__).parent / "histories"


def _activity_types(path: Path) -> list[str]:
    events = json.loads(path.read_text())["events"]
    return [
        e["activityTaskScheduledEventAttributes"]["activityType"]["name"]
        for e in events
        if "activityTaskScheduledEventAttributes" in e
    ]


@pytest.mark.parametrize(
    "name", ["notice_before_ui_summaries.json", "notice_before_typed_events.json"]
)
async def test_a_recorded_notice_replays(name):
    path = HISTORIES / name
    history = WorkflowHistory.from_json("notice-recorded", path.read_text())
    replayer = Replayer(
        workflows=[NoticeWorkflow], data_converter=codec.data_converter(keyring.installed())
    )
    result = await replayer.replay_workflow(history)
    assert result.replay_failure is None
    assert "append_event" in _activity_types(path)  # the old path, taken again on replay
