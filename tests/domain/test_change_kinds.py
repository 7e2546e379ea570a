"""Change kinds, pure (issue 12 item 2): what each kind of notice must and may say, its text
(an addition's byte for byte as before), and the re-derivation of a removal's and a
replacement's switches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from noticeflow.domain.errors import InputError
from noticeflow.domain.notice import NoticeSpec, parse_notice
from noticeflow.domain.rules import ChangeKind
from noticeflow.domain.verdicts import EventRecord, derive
from tests import helpers

NOW = datetime(2026, 1, 5, 12, tzinfo=UTC)


def written(**fields: Any) -> dict[str, Any]:
    """A complete ordinary notice as a person writes it (no window given), plus ``fields``."""
    data = helpers.notice(NOW, opt_in=False).model_dump(
        mode="json",
        exclude={"objection_window", "opt_in", "kind", "replaces", "previous", "reminder_before"},
    )
    return {**data, **fields}


def problems(**fields: Any) -> str:
    with pytest.raises(InputError) as error:
        parse_notice(written(**fields), "notice.toml")
    return str(error.value)


# --- validation per kind --------------------------------------------------------------------------


def test_every_kind_has_a_valid_form_that_survives_serialisation():
    for fields in (
        {},
        {"kind": "replacement", "replaces": "Anthropic, PBC"},
        {"kind": "removal"},
        {"kind": "material_change", "subprocessor_location": "Ireland",
         "previous": {"subprocessor_location": "United States", "services": ["goals"]}},
    ):  # fmt: skip
        spec = parse_notice(written(**fields))
        # as events and workflow inputs carry it: every field, the defaults included
        assert NoticeSpec.model_validate_json(spec.model_dump_json()) == spec
        assert NoticeSpec.model_validate(spec.model_dump(mode="json")) == spec
    assert parse_notice(written()).kind is ChangeKind.addition


def test_a_typo_in_the_kind_names_the_allowed_ones():
    said = problems(kind="removel")
    assert "kind: 'removel' is not a kind of change (did you mean 'removal'?)" in said
    assert "addition, replacement, removal, material_change" in said


def test_an_addition_names_nothing_it_replaces_and_no_previous_values():
    said = problems(replaces="Anthropic", previous={"purpose": "x"})
    assert "(2 problems)" in said
    assert 'replaces: only a replacement (kind = "replacement")' in said
    assert 'previous: only a material change (kind = "material_change")' in said


def test_a_replacement_names_another_sub_processor():
    assert "replaces: missing: a replacement names the sub-processor it replaces" in problems(
        kind="replacement"
    )
    said = problems(kind="replacement", replaces="  openai, llc ")
    assert "replaces: names the new sub-processor itself" in said
    said = problems(kind="replacement", replaces="Anthropic", previous={"purpose": "x"})
    assert "previous: only a material change" in said


def test_a_removal_refuses_every_window_field_given_at_once():
    said = problems(
        kind="removal", opt_in=True, objection_window="P21D", reminder_before="P2D",
        replaces="X", previous={"purpose": "x"},
    )  # fmt: skip
    assert "(5 problems)" in said, said
    for field in ("opt_in", "objection_window", "reminder_before", "replaces", "previous"):
        assert f"\n  {field}: " in said, (field, said)
    assert "a removal is informational: it has no objection window" in said
    parse_notice(written(kind="removal", opt_in=False))  # saying "not opt-in" is fine
    # our own serialised removal with another window is refused too (it cannot have one)
    data = parse_notice(written(kind="removal")).model_dump(mode="json")
    with pytest.raises(ValueError, match="objection_window"):
        NoticeSpec.model_validate({**data, "objection_window": "P10D"})


def test_a_material_change_lists_previous_values_that_differ_typed_as_their_fields():
    said = problems(kind="material_change")
    assert "previous: missing: a material change gives each changed field's previous value" in said
    assert "subprocessor_location, purpose, transfer_mechanism, data_categories, services" in said
    said = problems(
        kind="material_change",
        title="",
        previous={
            "subprocessor": "Someone else",
            "purpose": ["a list"],
            "services": "assistant",
            "subprocessor_location": " united states ",
            "data_categories": [],
            "transfer_mechanism": "two\nlines",
        },
    )
    assert "(7 problems)" in said, said
    for line in (
        "title: must not be empty",
        "previous.subprocessor: not a field a material change can change; give the previous"
        " value of subprocessor_location, purpose",
        "previous.purpose: must be one text (as the notice's purpose)",
        "previous.services: must be a list (as the notice's services)",
        "previous.subprocessor_location: the same as the notice's subprocessor_location; list"
        " only the fields that change",
        "previous.data_categories: must list at least one item",
        "previous.transfer_mechanism: contains a line break",
    ):
        assert line in said, (line, said)


# --- the notice text ------------------------------------------------------------------------------

# SHA-256 of helpers.notice(NOW) and helpers.notice(NOW, opt_in=False, body=...)'s text, computed
# on main at efb2f0d, before change kinds touched the text: an addition's text must not move (the
# hashes of notices already sent are evidence).
ADDITION_HASHES = {
    "opt-in": "0e35a1c29c3e0350a4c678c2cf1f1bf6ad80f1ce607dc55148f84c31b3dd3151",
    "with body": "0e72b4ba228a40ded1acd42be163b6ddf1de94e245336f22d3641499609b3f56",
}


def test_an_additions_text_is_byte_for_byte_what_it_was():
    assert helpers.notice(NOW).text_sha256() == ADDITION_HASHES["opt-in"]
    body = helpers.notice(NOW, opt_in=False, body="Some body\n\nmore")
    assert body.text_sha256() == ADDITION_HASHES["with body"]


def test_each_other_kind_says_what_changes():
    replacement = parse_notice(written(kind="replacement", replaces="Anthropic, PBC")).text()
    assert "replacing Anthropic, PBC." in replacement
    assert "Change: replacement of Anthropic, PBC by OpenAI, LLC\n" in replacement
    removal = parse_notice(written(kind="removal")).text()
    assert "We will stop using OpenAI, LLC (United States) as a sub-processor." in removal
    assert (
        "Change: removal — no objection window; OpenAI, LLC stops processing on Saturday"
        " 31 January 2026, 12:00 UTC\n"
    ) in removal
    assert "Objection window" not in removal and "How to object" not in removal
    changed = parse_notice(written(
        kind="material_change", subprocessor_location="Ireland", services=["assistant", "goals"],
        previous={"subprocessor_location": "United States", "services": ["assistant"]},
    )).text()  # fmt: skip
    assert (
        "Change: material change\nLocation: United States → Ireland\n"
        "Affected services: assistant → assistant, goals\n"
    ) in changed


# --- re-derivation ----------------------------------------------------------------------------------

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
EFFECTIVE = T0 + timedelta(days=30)


class Stream:
    def __init__(self, kind: str, **spec: Any) -> None:
        self.events: list[EventRecord] = []
        self.add(0, "notice_created", spec={"notice_id": "n", "opt_in": False, "kind": kind,
                                            "subprocessor": "New", "effective_at":
                                            EFFECTIVE.isoformat(), **spec})  # fmt: skip
        self.add(0, "audience_snapshotted", customer_ids=["a", "b"])

    def add(self, days: float, event_type: str, **data: Any) -> Stream:
        at = T0 + timedelta(days=days)
        self.events.append(EventRecord(event_type, 1, data, at, len(self.events) + 1))
        return self

    def switch(self, on: bool, customer: str, days: float, name: str, because: str) -> Stream:
        kind = "subprocessor_enabled" if on else "subprocessor_disabled"
        return self.add(days, kind, customer_id=customer, subprocessor=name, because=because)

    def problems(self) -> list[str]:
        return [str(p) for p in derive(self.events).problems]


def removal() -> Stream:
    """a is delivered (no deadline: no window), b bounced; both had it on from another notice."""
    return (
        Stream("removal")
        .add(0, "notice_delivered", customer_id="a", delivered_at=T0.isoformat(), deadline=None,
             clock_started=True)
        .add(0, "notice_undelivered", customer_id="b", delivered_at=None, deadline=None,
             clock_started=False)
    )  # fmt: skip


def test_a_removal_switches_everyone_off_on_its_date_and_settles_them():
    stream = removal()
    for customer in ("a", "b"):
        stream.switch(False, customer, 30, "New", "removed")
        stream.add(30, "customer_settled", customer_id=customer, verdict="removed")
    assert stream.problems() == []
    outcomes = derive(stream.events).customers
    assert {c: (o.verdict, o.activated, o.settled) for c, o in outcomes.items()} == {
        "a": ("removed", False, True),
        "b": ("removed", False, True),
    }


def test_a_removal_switching_off_early_or_switching_on_is_a_problem():
    stream = removal().switch(False, "a", 29, "New", "removed")
    stream.switch(True, "b", 31, "New", "deemed_acceptance")
    found = stream.problems()
    assert any("customer a: switched off" in p and "before the removal's" in p for p in found)
    assert any("customer b: switched on" in p and "removal" in p for p in found), found


def replacement() -> Stream:
    return Stream("replacement", replaces="Old").add(
        0, "notice_delivered", customer_id="a", delivered_at=T0.isoformat(),
        deadline=(T0 + timedelta(days=21)).isoformat(), clock_started=True,
    ).add(21, "deemed_acceptance", customer_id="a",
          deadline=(T0 + timedelta(days=21)).isoformat())  # fmt: skip


def test_a_replacement_switches_the_old_one_off_with_the_new_one_on():
    stream = replacement().switch(True, "a", 30, "New", "deemed_acceptance")
    stream.switch(False, "a", 30, "Old", "replaced")
    stream.add(30, "customer_settled", customer_id="a", verdict="activate")
    assert stream.problems() == []
    assert derive(stream.events).customers["a"].activated  # the old one's switch-off is not this


def test_a_replaced_switch_off_without_the_new_one_on_or_of_another_name_is_a_problem():
    alone = replacement().switch(False, "a", 30, "Old", "replaced")
    assert any(
        "customer a: Old switched off as replaced" in p and "without New switched on" in p
        for p in alone.problems()
    ), alone.problems()
    other = replacement().switch(True, "a", 30, "New", "deemed_acceptance")
    other.switch(False, "a", 30, "Someone", "replaced")
    assert any("names 'Someone', which this notice does not engage" in p
               for p in other.problems())  # fmt: skip
    addition = Stream("addition").switch(False, "a", 30, "Old", "replaced")
    assert any("names 'Old'" in p for p in addition.problems())
