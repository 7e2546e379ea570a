"""Per-customer settlement rules (product rules 4, 6, 7, 8 and 9), as pure functions."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Phase(StrEnum):
    draft = "draft"
    notifying = "notifying"
    window_open = "window_open"
    awaiting_effective_date = "awaiting_effective_date"
    active = "active"
    cancelled = "cancelled"


class Authorisation(StrEnum):
    """What a customer's own contract (its DPA) asks before a sub-processor is used for it."""

    general = "general"  # general written authorisation: silence is deemed acceptance
    specific = "specific"  # specific prior authorisation: silence is refusal (GDPR Art. 28(2))
    dora = "dora"  # DORA (EU 2025/532 Arts. 5-6): approve, object or request changes


class ChangeKind(StrEnum):
    """What a notice changes."""

    addition = "addition"  # a new sub-processor
    replacement = "replacement"  # a new one instead of an old one (switched off per customer)
    removal = "removal"  # informational: no window; switched off for everyone on the date
    material_change = "material_change"  # location, purpose, transfer mechanism... changes


def consent_required(opt_in_notice: bool, authorisation: Authorisation | str | None) -> bool:
    """Whether silence is refusal for this customer: an opt-in notice asks everyone for consent,
    and a contract with specific prior authorisation asks for it on every notice."""
    return opt_in_notice or authorisation == Authorisation.specific


REPLACED = "replaced"  # why a replacement's switch-on of the new one switched the old one off


class Delivery(StrEnum):
    pending = "pending"
    delivered = "delivered"
    undelivered = "undelivered"


class CaseStatus(StrEnum):
    open = "open"
    withdrawn = "withdrawn"
    excluded = "excluded"
    terminated = "terminated"


class Outcome(StrEnum):
    withdrawn = "withdrawn"
    excluded = "excluded"
    terminated = "terminated"


class Verdict(StrEnum):
    """What the activation step does with one customer at a given moment."""

    wait_for_delivery = "wait_for_delivery"  # never activated while undelivered (rule 4)
    wait_for_deadline = "wait_for_deadline"  # never inside its own window (rule 6)
    held = "held"  # a timely objection is still open (rule 9)
    activate = "activate"
    excluded = "excluded"  # ops upheld an objection: stays off
    terminated = "terminated"  # customer terminates the affected service: stays off
    declined = "declined"  # opt-in notice and no opt-in: silence means no (rule 8)
    excluded_by_ops = "excluded_by_ops"  # ops settled it without activation (`notice exclude`)
    removed = "removed"  # a removal notice's effective date: off for everyone, whatever they say


OFF_VERDICTS = {
    Verdict.excluded,
    Verdict.terminated,
    Verdict.declined,
    Verdict.excluded_by_ops,
    Verdict.removed,
}


@dataclass(frozen=True)
class Case:
    status: CaseStatus
    timely: bool


def decide(
    *,
    now: datetime,
    effective_at: datetime,
    delivery: Delivery,
    deadline: datetime | None,
    opt_in_notice: bool,
    opted_in: bool,
    cases: Iterable[Case] = (),
    excluded_by_ops: bool = False,
    kind: ChangeKind = ChangeKind.addition,
) -> Verdict:
    """The verdict for one customer at ``now``, once the effective date has been reached.

    ``opt_in_notice``: whether this customer's consent is required (``consent_required``: an
    opt-in notice, or a contract with specific prior authorisation). A removal needs nobody's
    consent: from its effective date the sub-processor is off for every recipient."""
    if now < effective_at:
        raise ValueError("activation is decided only at or after the effective date")
    if kind is ChangeKind.removal:
        return Verdict.removed
    if excluded_by_ops:
        return Verdict.excluded_by_ops
    statuses = list(cases)
    if any(case.status is CaseStatus.terminated for case in statuses):
        return Verdict.terminated
    if any(case.status is CaseStatus.excluded for case in statuses):
        return Verdict.excluded
    if delivery is not Delivery.delivered or deadline is None:
        return Verdict.wait_for_delivery
    if now < deadline:
        return Verdict.wait_for_deadline
    if any(case.status is CaseStatus.open and case.timely for case in statuses):
        return Verdict.held
    if opt_in_notice and not opted_in:
        return Verdict.declined
    return Verdict.activate


def is_settled(verdict: Verdict, cases: Iterable[Case] = ()) -> bool:
    """Settled: a final verdict and no case left open (a late open case keeps ops' attention)."""
    if any(case.status is CaseStatus.open for case in cases):
        return False
    return verdict is Verdict.activate or verdict in OFF_VERDICTS


def activation_ground(opt_in_notice: bool, cases: Iterable[Case], opted_in: bool = False) -> str:
    """Why a customer is switched on, in the evidence's words (never a reason it did not have).

    ``opt_in_notice``: whether its consent was required (``consent_required``); ``opted_in``:
    whether it opted in, which where no consent is required is a dora contract's approval."""
    statuses = list(cases)
    if opt_in_notice:
        return "opted_in"
    if opted_in:
        return "approved"  # a dora customer approved the change: no silence was needed
    if not any(case.timely for case in statuses):
        return "deemed_acceptance"  # silence until the deadline; a late objection is not upheld
    return "objection_withdrawn"


def is_deemed_acceptance(
    opt_in_notice: bool, cases: Iterable[Case], opted_in: bool = False
) -> bool:
    """Silence until the deadline (rule 8): no timely objection and no approval, where consent
    is not required."""
    return activation_ground(opt_in_notice, cases, opted_in) == "deemed_acceptance"


def is_timely(received_at: datetime, deadline: datetime | None) -> bool:
    """An objection is timely if received before the customer's deadline (or before delivery)."""
    return deadline is None or received_at < deadline


def effective_date_problem(
    effective_at: datetime, latest_deadline: datetime | None, customer_id: str | None
) -> str | None:
    """Rule 6 at approval: why a notice may not be approved when its effective date falls before
    the latest deadline any recipient would get if it went out now (``None``: it may). A date
    exactly at that deadline is fine: a customer is activated at its deadline, not inside it."""
    if latest_deadline is None or effective_at >= latest_deadline:
        return None
    return (
        f"effective date {effective_at.isoformat()} is before the projected "
        f"deadline {latest_deadline.isoformat()} of customer {customer_id} (and any "
        "customer on the same terms); postpone the notice to at least that instant first"
    )
