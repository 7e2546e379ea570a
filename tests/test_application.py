"""The application layer's typed dispatch: every customer action the intake can receive has its
judge, keyed by ``CustomerActionKind`` (no name strings, no ``getattr``). Pure: no server, no
database."""

from __future__ import annotations

from typing import Any

from noticeflow.application.deps import Deps
from noticeflow.application.intake import IntakeService
from noticeflow.contracts import CustomerActionKind
from noticeflow.domain import signals


def _service() -> IntakeService:
    none: Any = None  # the service only keeps its dependencies until it runs
    return IntakeService(Deps(pool=none, mailer=none, links=none))


def test_the_customer_action_kinds_are_the_intakes_customer_actions():
    customer_actions = set(signals.SIGNAL_PAYLOADS) - signals.NOTICE_ACTIONS - {"resend"}
    assert {kind.value for kind in CustomerActionKind} == customer_actions


def test_every_customer_action_kind_has_its_judge():
    judges = _service().judges
    assert set(judges) == set(CustomerActionKind)
    assert all(isinstance(kind, CustomerActionKind) for kind in judges)
    # Opting in and revoking are one judgement (the receipt's action says which).
    assert judges[CustomerActionKind.opt_in] == judges[CustomerActionKind.revoke_opt_in]
