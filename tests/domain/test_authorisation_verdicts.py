"""Authorisation modes in the re-derivation, pure: a stream whose customers' contracts are frozen
with the audience (general, specific, dora) derives clean when each was treated as its contract
asks, and every decision its contract forbids is a problem naming the customer — in noticeflow's
own verifier (noticeflow/domain/verdicts.py) and in the auditor's independent script
(docs/verify_pack.py), which must agree."""

from __future__ import annotations

import importlib.util
from datetime import timedelta
from pathlib import Path
from types import ModuleType

import pytest

from tests.domain.test_verdicts import T0, WINDOW, Stream

MODES = {"gen": None, "spec": "specific", "dora": "dora"}
ROOT = Path(__file__).resolve().parents[2]


def _auditor() -> ModuleType:
    spec = importlib.util.spec_from_file_location("verify_pack", ROOT / "docs" / "verify_pack.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


AUDITOR = _auditor()


class ModeStream(Stream):
    """A stream of an ordinary (or opt-in) notice to gen (general), spec (specific) and dora."""

    def __init__(self, opt_in: bool = False) -> None:
        super().__init__(opt_in=opt_in, customers=())
        terms = {
            customer: {"region": "EU", "services": ["x"], "window_days": None,
                       "window_unit": None, "country": None,
                       **({"authorisation": mode} if mode else {})}
            for customer, mode in MODES.items()
        }  # fmt: skip
        created, snapshot = self.events
        self.events = [
            created._replace(data={"spec": {**created.data["spec"], "subprocessor": "S"}}),
            snapshot._replace(data={"customer_ids": list(MODES), "terms": terms}),
        ]
        for customer in MODES:
            self.delivered(customer)

    def opt_in(self, customer: str, days: float) -> ModeStream:
        at = (T0 + timedelta(days=days)).isoformat()
        self.add(days, "opt_in_recorded", customer_id=customer, received_at=at)
        return self

    def changes(self, customer: str, days: float, key: str) -> ModeStream:
        at = T0 + timedelta(days=days)
        self.add(days, "objection_received", customer_id=customer, idempotency_key=key,
                 timely=at < T0 + WINDOW, received_at=at.isoformat(), request="changes")  # fmt: skip
        return self


def both(s: Stream) -> tuple[set[tuple[str | None, str]], list[str]]:
    """The problems of noticeflow's verifier (customer, field) and of the auditor's script."""
    ours = {(p.customer_id, p.field) for p in s.derive().problems}
    events = [
        {"event_type": e.event_type, "data": e.data, "occurred_at": e.occurred_at.isoformat(),
         "version": e.version}
        for e in s.events
    ]  # fmt: skip
    _, theirs = AUDITOR.derive(events, None)
    return ours, theirs


def test_each_customer_treated_as_its_contract_asks_derives_clean():
    s = ModeStream()
    s.opt_in("spec", 3).opt_in("dora", 4)
    s.deemed("gen").on("gen", 30, "deemed_acceptance").settled("gen", 30, "activate")
    s.on("spec", 30, "opted_in").settled("spec", 30, "activate")
    s.on("dora", 30, "approved").settled("dora", 30, "activate")
    ours, theirs = both(s)
    assert ours == set() and theirs == []
    derived = s.derive().customers
    assert [derived[c].ground for c in MODES] == ["deemed_acceptance", "opted_in", "approved"]


def test_a_specific_customer_never_authorised_is_declined_not_deemed():
    s = ModeStream()
    s.settled("spec", 30, "declined")
    assert both(s) == (set(), [])
    forged = ModeStream()
    forged.deemed("spec").on("spec", 30, "deemed_acceptance").settled("spec", 30, "activate")
    ours, theirs = both(forged)
    assert ("spec", "activated") in ours and ("spec", "deemed_accepted_at") in ours
    assert any("customer spec: switched on" in p and "declined" in p for p in theirs), theirs
    assert any("customer spec: deemed_acceptance where silence is not acceptance" in p
               for p in theirs), theirs  # fmt: skip


def test_an_approved_dora_customer_is_not_a_deemed_acceptance():
    s = ModeStream()
    s.opt_in("dora", 4).deemed("dora").on("dora", 30, "deemed_acceptance")
    ours, theirs = both(s)
    assert ("dora", "deemed_accepted_at") in ours and ("dora", "ground") in ours
    assert any("customer dora: deemed_acceptance" in p for p in theirs), theirs
    assert any("customer dora: switched on because deemed_acceptance" in p for p in theirs)


def test_a_general_customer_cannot_opt_in_nor_request_changes_on_an_ordinary_notice():
    s = ModeStream()
    s.opt_in("gen", 3).on("gen", 30, "approved")
    s.changes("spec", 5, "k1")
    ours, theirs = both(s)
    assert ("gen", "opted_in") in ours and ("spec", "request") in ours
    assert any("customer gen: opt_in_recorded on an ordinary notice" in p for p in theirs)
    assert any("customer spec: a request for changes from a customer with specific" in p
               for p in theirs), theirs  # fmt: skip


@pytest.mark.parametrize("resolved", [False, True], ids=["open", "withdrawn"])
def test_a_timely_request_for_changes_holds_a_dora_customer_until_resolved(resolved: bool):
    s = ModeStream()
    s.changes("dora", 5, "k1")
    if resolved:
        s.resolved("dora", 29, "withdrawn", "k1")
    s.on("dora", 30, "objection_withdrawn" if resolved else "deemed_acceptance")
    ours, theirs = both(s)
    if resolved:
        assert ours == set() and theirs == []
    else:
        assert ("dora", "activated") in ours
        assert any("customer dora: switched on" in p and "held" in p for p in theirs), theirs


def test_a_late_request_for_changes_does_not_hold():
    s = ModeStream()
    s.changes("dora", 25, "late").deemed("dora").on("dora", 30, "deemed_acceptance")
    assert both(s) == (set(), [])
    assert not s.derive().customers["dora"].cases[0].timely


def test_on_an_opt_in_notice_every_mode_needs_the_opt_in():
    s = ModeStream(opt_in=True)
    for customer in MODES:
        s.settled(customer, 30, "declined")
    assert both(s) == (set(), [])
    forged = ModeStream(opt_in=True)
    forged.on("dora", 30, "deemed_acceptance")
    ours, _ = both(forged)
    assert ("dora", "activated") in ours
