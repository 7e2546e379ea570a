"""The typed events (noticeflow/domain/events.py): the stored form is byte for byte what the product
wrote before the models, every type round-trips, unknown fields and types are refused, every shape
an earlier version stored still parses (upcast), and docs/events.md is current."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter

from noticeflow import eventstore
from noticeflow.contracts import ChangeMailRequest, EventRequest
from noticeflow.domain import events
from noticeflow.domain.rules import Delivery, Outcome, Phase, Verdict
from noticeflow.eventstore import NewEvent, canonical, to_json_value
from tests.helpers import notice

DOCS = Path(__file__).resolve().parents[2] / "docs" / "events.md"
REGENERATE = "python -m noticeflow.domain.events > docs/events.md"

# asyncpg hands timestamptz back in UTC with microseconds; a value with another offset too.
AT = datetime(2026, 11, 29, 12, 30, 1, 123456, tzinfo=UTC)
DEADLINE = datetime(2026, 12, 21, 4, 59, 59, 999999, tzinfo=UTC)
OFFSET = datetime(2026, 12, 1, 9, 0, tzinfo=timezone(timedelta(hours=2)))
SEALED = "enc2:AAAAsealed"
SPEC = notice(AT)


def _through_temporal(model: Any) -> Any:
    """A payload as an activity receives it: JSON through the pydantic data converter."""
    converter = pydantic_data_converter.payload_converter
    (payload,) = converter.to_payloads([model])
    return converter.from_payloads([payload], [type(model)])[0]


def _wire(data: dict[str, Any]) -> dict[str, Any]:
    """A dict the workflow sends in EventRequest.data, as the activity receives it."""
    return _through_temporal(
        EventRequest(notice_id="n", key="k", event_type="x", data=data, at=AT)
    ).data


# (the dict the code appended before the models, the model the code appends now): one per way
# each type is written. Every event type the product appends has at least one.
CASES: list[tuple[str, dict[str, Any], events.Event]] = [
    (
        "repository.create_notice",
        {"spec": SPEC.model_dump(mode="json"), "author": "ann", "text_sha256": SPEC.text_sha256()},
        events.NoticeCreated(spec=SPEC, author="ann", text_sha256=SPEC.text_sha256()),
    ),
    (
        "lifecycle.record_phase (draft)",
        {"phase": Phase.draft.value, "effective_at": OFFSET, "window_closes_at": None},
        events.PhaseChanged(phase=Phase.draft, effective_at=OFFSET, window_closes_at=None),
    ),
    (
        "lifecycle.record_phase (window open)",
        {"phase": "window_open", "effective_at": AT, "window_closes_at": DEADLINE},
        events.PhaseChanged(phase=Phase.window_open, effective_at=AT, window_closes_at=DEADLINE),
    ),
    (
        "append_event notice_approved (signal)",
        _wire({"by": "bob", "audience_size": 4}),
        events.build("notice_approved", _wire({"by": "bob", "audience_size": 4})),
    ),
    (
        "append_event notice_approved (receipt)",
        {**_wire({"audience_size": 4}), "by": "bob", "receipt_id": "r-1"},
        events.NoticeApproved(by="bob", audience_size=4, receipt_id="r-1"),
    ),
    (
        "append_event notice_postponed (draft, receipt)",
        {**_wire({"from": AT, "to": OFFSET}), "by": "ann", "receipt_id": "r-2"},
        events.NoticePostponed(by="ann", from_=AT, to=OFFSET, receipt_id="r-2"),
    ),
    (
        "append_event notice_postponed (draft, signal)",
        _wire({"by": "ann", "from": AT, "to": OFFSET}),
        events.build("notice_postponed", _wire({"by": "ann", "from": AT, "to": OFFSET})),
    ),
    (
        "append_event notice_cancelled (draft, receipt)",
        {**_wire({"phase": "draft"}), "by": "ann", "reason": "wrong\nvendor", "receipt_id": "r-3"},
        events.NoticeCancelled(by="ann", reason="wrong\nvendor", phase="draft", receipt_id="r-3"),
    ),
    (
        "mail_change postponement",
        {
            **_through_temporal(
                ChangeMailRequest(
                    spec=SPEC,
                    kind="postponement",
                    key="k",
                    at=AT,
                    detail={"from": AT, "to": OFFSET},
                )
            ).detail,
            "by": "ann",
            "receipt_id": "r-4",
            "text_sha256": SPEC.text_sha256(),
        },
        events.NoticePostponed(
            from_=AT, to=OFFSET, by="ann", receipt_id="r-4", text_sha256=SPEC.text_sha256()
        ),
    ),
    (
        "mail_change cancellation (signal)",
        {"by": "ann", "reason": "no", "phase": "window_open", "text_sha256": "ab"},
        events.NoticeCancelled(by="ann", reason="no", phase="window_open", text_sha256="ab"),
    ),
    (
        "sending.snapshot_audience",
        {
            "customers": 2,
            "snapshot_sha256": "00ff",
            "customer_ids": ["acme", "globex"],
            "timezones": {"acme": "America/New_York", "globex": "Europe/Berlin"},
        },
        events.AudienceSnapshotted(
            customers=2,
            snapshot_sha256="00ff",
            customer_ids=["acme", "globex"],
            timezones={"acme": "America/New_York", "globex": "Europe/Berlin"},
        ),
    ),
    (
        "sending._record delivered",
        {
            "customer_id": "acme",
            "kind": "notice",
            "delivered_at": AT,
            "deadline": DEADLINE,
            "clock_started": True,
            "text_sha256": "ab",
            "contacts": [
                {
                    "position": 0,
                    "message_id": "<m@x>",
                    "status": "accepted",
                    "smtp_code": 250,
                    "smtp_status": "2.0.0",
                    "smtp_text": SEALED,
                    "at": AT,
                    "text_sha256": "ab",
                },
                {
                    "position": 1,
                    "message_id": "<n@x>",
                    "status": "failed",
                    "smtp_code": None,
                    "smtp_status": None,
                    "smtp_text": None,
                    "at": OFFSET,
                    "text_sha256": None,
                },
            ],
        },
        events.NoticeDelivered(
            customer_id="acme",
            kind="notice",
            delivered_at=AT,
            deadline=DEADLINE,
            clock_started=True,
            text_sha256="ab",
            contacts=[
                events.ContactAttempt(
                    position=0,
                    message_id="<m@x>",
                    status="accepted",
                    smtp_code=250,
                    smtp_status="2.0.0",
                    smtp_text=SEALED,
                    at=AT,
                    text_sha256="ab",
                ),
                events.ContactAttempt(
                    position=1,
                    message_id="<n@x>",
                    status="failed",
                    smtp_code=None,
                    smtp_status=None,
                    smtp_text=None,
                    at=OFFSET,
                    text_sha256=None,
                ),
            ],
        ),
    ),
    (
        "sending._record undelivered (resend)",
        {
            "customer_id": "acme",
            "kind": "resend-r-9",
            "delivered_at": None,
            "deadline": None,
            "clock_started": False,
            "text_sha256": None,
            "contacts": [],
        },
        events.NoticeUndelivered(
            customer_id="acme",
            kind="resend-r-9",
            delivered_at=None,
            deadline=None,
            clock_started=False,
            text_sha256=None,
            contacts=[],
        ),
    ),
    (
        "reminders._remind",
        {"customer_id": "acme", "deadline": DEADLINE},
        events.ReminderSent(customer_id="acme", deadline=DEADLINE),
    ),
    (
        "intake._object",
        {
            "customer_id": "acme",
            "idempotency_key": "r-5",
            "receipt_id": "r-5",
            "timely": True,
            "channel": "reply",
            "by": SEALED,
            "reason": SEALED,
            "received_at": AT,
            "deadline": None,
        },
        events.ObjectionReceived(
            customer_id="acme",
            idempotency_key="r-5",
            receipt_id="r-5",
            timely=True,
            channel="reply",
            by=SEALED,
            reason=SEALED,
            received_at=AT,
            deadline=None,
        ),
    ),
    (
        "intake._resolve",
        {
            "customer_id": "acme",
            "receipt_id": "r-6",
            "outcome": "withdrawn",
            "by": SEALED,
            "note": "",
            "objections": ["r-5"],
        },
        events.ObjectionResolved(
            customer_id="acme",
            receipt_id="r-6",
            outcome=Outcome.withdrawn,
            by=SEALED,
            note="",
            objections=["r-5"],
        ),
    ),
    (
        "intake._exclude closes cases",
        {
            "customer_id": "acme",
            "receipt_id": "r-7",
            "outcome": "excluded",
            "by": "[erased]",
            "note": SEALED,
            "objections": ["r-5", "r-6"],
        },
        events.ObjectionResolved(
            customer_id="acme",
            receipt_id="r-7",
            outcome=Outcome.excluded,
            by="[erased]",
            note=SEALED,
            objections=["r-5", "r-6"],
        ),
    ),
    (
        "intake._opt_in",
        {
            "customer_id": "acme",
            "receipt_id": "r-8",
            "by": SEALED,
            "channel": "link",
            "received_at": AT,
        },
        events.OptInRecorded(
            customer_id="acme", receipt_id="r-8", by=SEALED, channel="link", received_at=AT
        ),
    ),
    (
        "intake._opt_in (revoke)",
        {
            "customer_id": "acme",
            "receipt_id": "r-8",
            "by": SEALED,
            "channel": "web",
            "received_at": AT,
        },
        events.OptInRevoked(
            customer_id="acme", receipt_id="r-8", by=SEALED, channel="web", received_at=AT
        ),
    ),
    (
        "intake._exclude",
        {
            "customer_id": "acme",
            "receipt_id": "r-9",
            "by": SEALED,
            "reason": SEALED,
            "delivery": "undelivered",
        },
        events.CustomerExcluded(
            customer_id="acme",
            receipt_id="r-9",
            by=SEALED,
            reason=SEALED,
            delivery=Delivery.undelivered,
        ),
    ),
    (
        "intake.append_rejection",
        {
            "receipt_id": "r-10",
            "action": "object",
            "customer_id": None,
            "channel": "api",
            "reason": "too late",
            "received_at": OFFSET,
        },
        events.ActionRejected(
            receipt_id="r-10",
            action="object",
            customer_id=None,
            channel="api",
            reason="too late",
            received_at=OFFSET,
        ),
    ),
    (
        "lifecycle._apply deemed",
        {"customer_id": "acme", "deadline": DEADLINE},
        events.DeemedAcceptance(customer_id="acme", deadline=DEADLINE),
    ),
    (
        "records.switch_subprocessor on",
        {"customer_id": "acme", "subprocessor": "OpenAI, LLC", "because": "deemed_acceptance"},
        events.SubprocessorEnabled(
            customer_id="acme", subprocessor="OpenAI, LLC", because="deemed_acceptance"
        ),
    ),
    (
        "records.switch_subprocessor off",
        {"customer_id": "acme", "subprocessor": "OpenAI, LLC", "because": "opt_in_revoked"},
        events.SubprocessorDisabled(
            customer_id="acme", subprocessor="OpenAI, LLC", because="opt_in_revoked"
        ),
    ),
    (
        "lifecycle._apply settled",
        {"customer_id": "acme", "verdict": "excluded_by_ops"},
        events.CustomerSettled(customer_id="acme", verdict=Verdict.excluded_by_ops),
    ),
    (
        "repository.erase_customer",
        {
            "customer_id": "acme",
            "method": "crypto-shredding: key deleted; records blanked; erased for good",
        },
        events.CustomerErased(
            customer_id="acme",
            method="crypto-shredding: key deleted; records blanked; erased for good",
        ),
    ),
    (
        "public_list.record_baseline",
        {
            "subprocessors": [
                {
                    "subprocessor": "Anthropic, PBC",
                    "subprocessor_location": "United States",
                    "purpose": "Assistant",
                    "data_categories": ["Prompts"],
                    "services": ["assistant"],
                    "transfer_mechanism": "SCCs 2021",
                    "in_use_since": "2024-06-01",
                }
            ],
            "content_sha256": "ab" * 32,
            "by": "alice",
        },
        events.SubprocessorsBaselined(
            subprocessors=[
                events.BaselineEntry(
                    subprocessor="Anthropic, PBC",
                    subprocessor_location="United States",
                    purpose="Assistant",
                    data_categories=["Prompts"],
                    services=["assistant"],
                    transfer_mechanism="SCCs 2021",
                    in_use_since=date(2024, 6, 1),
                )
            ],
            content_sha256="ab" * 32,
            by="alice",
        ),
    ),
]


@pytest.mark.parametrize(("site", "old", "event"), CASES, ids=[case[0] for case in CASES])
def test_the_stored_form_is_byte_for_byte_what_the_code_wrote_before(site, old, event):
    assert event.data() == to_json_value(old)
    assert canonical(event.data()) == canonical(to_json_value(old))


def test_every_type_the_product_appends_is_covered_and_every_model_is_registered():
    appended = {event.type for _, _, event in CASES}
    assert appended == {model.type for model in events.EVENTS if not model.legacy}
    assert {model.type: model for model in events.EVENTS} == events.EVENT_TYPES
    assert len(events.EVENT_TYPES) == len(events.EVENTS)


@pytest.mark.parametrize(("site", "old", "event"), CASES, ids=[case[0] for case in CASES])
def test_every_type_round_trips(site, old, event):
    stored = to_json_value(event.data())  # as it comes back from the events table
    again = events.parse(event.type, event.version, stored)
    assert again == event
    assert again.data() == stored


def test_new_event_takes_type_and_schema_version_from_the_model():
    delivered = next(e for _, _, e in CASES if isinstance(e, events.NoticeDelivered))
    new = NewEvent.of("notice-n", "notice/acme", delivered, AT)
    assert (new.event_type, new.schema_version) == ("notice_delivered", 2)
    assert new.data == delivered.data()
    phase = NewEvent.of("notice-n", "phase-1", CASES[1][2], AT)
    assert (phase.event_type, phase.schema_version) == ("phase_changed", 1)


def test_an_unknown_field_or_type_or_version_is_refused_naming_it():
    with pytest.raises(
        events.InvalidEvent, match=r"notice_approved event: surprise: unknown field"
    ):
        events.build("notice_approved", {"audience_size": 1, "surprise": True})
    with pytest.raises(events.UnknownEventType, match="'notice_exploded'"):
        events.build("notice_exploded", {})
    with pytest.raises(events.InvalidEvent, match="schema version 3"):
        events.parse("notice_delivered", 3, {})
    with pytest.raises(events.InvalidEvent, match=r"\(2 problems\)"):
        events.build("reminder_sent", {"customer_id": 1})
    with pytest.raises(events.InvalidEvent, match=r"contacts item 1\.at: missing"):
        data = CASES[11][2].data()
        del data["contacts"][0]["at"]
        events.build("notice_delivered", data)


def test_sealed_fields_are_those_the_product_seals():
    sealed = {model.type: model.sealed_fields() for model in events.EVENTS if model.sealed_fields()}
    assert sealed == {
        "notice_delivered": ("contacts[].smtp_text",),
        "notice_undelivered": ("contacts[].smtp_text",),
        "objection_received": ("by", "reason"),
        "objection_resolved": ("by", "note"),
        "opt_in_recorded": ("by",),
        "opt_in_revoked": ("by",),
        "customer_excluded": ("by", "reason"),
    }


# --- what earlier versions stored -----------------------------------------------------------------

V1_CONTACT = {
    "position": 0,
    "message_id": "<m@x>",
    "status": "failed",
    "reply": "550 5.1.1 <a@b.example>: mailbox unavailable",
    "at": "2026-11-29T07:00:00+00:00",
}


def test_delivery_events_of_version_1_are_upcast_to_version_2():
    early = {  # before the intake of record: no text_sha256 anywhere
        "customer_id": "acme",
        "kind": "notice",
        "delivered_at": None,
        "deadline": None,
        "clock_started": False,
        "contacts": [V1_CONTACT],
    }
    event = events.parse("notice_undelivered", 1, early)
    assert isinstance(event, events.NoticeUndelivered) and event.text_sha256 is None
    (contact,) = event.contacts
    assert (contact.smtp_code, contact.smtp_status) == (550, "5.1.1")
    assert contact.smtp_text == "<a@b.example>: mailbox unavailable"
    later = {**early, "text_sha256": "ab", "contacts": [{**V1_CONTACT, "text_sha256": "ab"}]}
    delivered = events.parse("notice_delivered", 1, later)
    assert isinstance(delivered, events.NoticeDelivered)
    assert delivered.contacts[0].text_sha256 == "ab"
    # the event store applies the same upcasters on read
    assert eventstore.UPCASTERS is events.UPCASTERS
    assert eventstore.UPCASTERS.upcast("notice_delivered", 1, later)[0] == 2


@pytest.mark.parametrize(
    "reply",
    [
        "250 2.0.0 Ok: queued as 4F",
        "550-5.1.1 first line\r\n550 5.1.1 last line",
        "421 try later",
        "gave up after 5 attempts over 2h: last reply 451 4.7.1",
        "",
        "999 not a code",
    ],
)
def test_a_version_1_reply_is_split_as_the_mail_module_splits_a_raw_reply(reply):
    from noticeflow.mail import parse_reply

    parsed = parse_reply(reply)
    assert events.split_reply(reply) == (parsed.code, parsed.status, parsed.text)


# Shapes of version 1 found in the history of the code (git log -p): fields added without a
# version bump are optional, so every one of them still parses.
LEGACY: list[tuple[str, dict[str, Any]]] = [
    ("subprocessor_enabled", {"customer_id": "acme", "subprocessor": "X"}),
    ("opt_in_recorded", {"customer_id": "acme", "by": "customer", "channel": "temporal"}),
    ("opt_in_revoked", {"customer_id": "acme", "by": "customer", "channel": "link"}),
    (
        "objection_received",
        {
            "customer_id": "acme",
            "idempotency_key": "k",
            "timely": True,
            "channel": "link",
            "by": "customer",
            "reason": "no",
            "received_at": "2026-11-29T07:00:00+00:00",
            "deadline": "2026-12-20T07:00:00+00:00",
        },
    ),
    (
        "objection_resolved",
        {
            "customer_id": "acme",
            "outcome": "terminated",
            "by": "ops",
            "note": "",
            "objections": ["k"],
        },
    ),
    ("audience_snapshotted", {"customers": 1, "snapshot_sha256": "ff", "customer_ids": ["acme"]}),
    ("customer_erased", {"customer_id": "acme", "erased_records": 3}),
    ("notice_approved", {"by": "bob", "audience_size": 4}),
    (
        "notice_postponed",
        {"by": "a", "from": "2026-12-25T22:29:39.963000Z", "to": "2027-01-03T22:29:39Z"},
    ),
    ("notice_cancelled", {"by": "a", "reason": "r", "phase": "notifying"}),
    (
        "signal_rejected",
        {
            "signal": "object",
            "reason": "bad",
            "payload": {"x": [1]},
            "received_at": "2026-11-29T07:00:00.500000Z",
        },
    ),
    (
        "objection_rejected",
        {
            "customer_id": "nobody",
            "idempotency_key": "k",
            "reason": "unknown",
            "channel": "link",
            "by": "customer",
            "received_at": "2026-11-29T07:00:00+00:00",
        },
    ),
    (
        "objection_rejected",
        {
            "customer_id": "nobody",
            "idempotency_key": "k",
            "reason": "unknown",
            "channel": "link",
            "received_at": "2026-11-29T07:00:00+00:00",
        },
    ),
]


@pytest.mark.parametrize(("event_type", "data"), LEGACY, ids=[t for t, _ in LEGACY])
def test_every_shape_an_earlier_version_stored_still_parses(event_type, data):
    event = events.parse(event_type, 1, data)
    assert event.data() == data  # nothing added to it, nothing lost


# --- the generated docs -------------------------------------------------------------------------


def test_docs_events_md_is_generated_from_the_models():
    assert DOCS.read_text(encoding="utf-8") == events.events_markdown(), (
        f"docs/events.md is not current: regenerate it with `{REGENERATE}`"
    )


def test_the_docs_name_every_event_and_every_field():
    text = events.events_markdown()
    for model in events.EVENTS:
        assert f"### `{model.type}`" in text
        assert f"Schema version {model.version}" in text
        for name, info in model.model_fields.items():
            assert f"`{info.alias or name}`" in text
            assert info.description, f"{model.type}.{name} has no description"
