"""The notice's canonical text, independent of any recipient, and the template context of one
customer's mail about it."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from noticeflow.domain.deadlines import describe_deadline, describe_instant
from noticeflow.domain.rules import Authorisation, consent_required

if TYPE_CHECKING:
    from noticeflow.domain.notice import NoticeSpec


def _window_words(spec: NoticeSpec) -> str:
    days, rest = divmod(spec.objection_window.total_seconds(), 86400)
    if not rest:
        return f"{int(days)} days from the day after delivery of this notice"
    return f"{spec.objection_window} from delivery of this notice"


def render_notice_text(spec: NoticeSpec) -> str:
    lines = [
        spec.title,
        "",
        f"We intend to engage {spec.subprocessor} ({spec.subprocessor_location}) as a new "
        "sub-processor.",
        "",
        f"Purpose: {spec.purpose}",
        f"Categories of personal data: {', '.join(spec.data_categories)}",
        f"Affected services: {', '.join(spec.services)}",
        f"Transfer mechanism: {spec.transfer_mechanism}",
        f"Effective date: {describe_instant(spec.effective_at, 'UTC')}",
        f"Objection window: {_window_words(spec)}",
    ]
    if spec.opt_in:
        lines.append(
            "These services are opt-in: the sub-processor is used for your organisation only if "
            "you opt in. Not opting in is an objection."
        )
    lines += ["", f"How to object: {spec.how_to_object}"]
    if spec.body.strip():
        lines += ["", spec.body.strip()]
    return "\n".join(lines) + "\n"


def mail_context(
    spec: NoticeSpec,
    timezone: str,
    deadline: datetime | None,
    links: dict[str, str],
    authorisation: str = Authorisation.general,
) -> dict[str, Any]:
    """Template context for one customer: the notice, its dates in the customer's timezone, the
    customer's signed action links (``object_url``, ``opt_in_url``) and what silence means for
    it under its own contract (``consent``: silence is refusal; ``specific``, ``dora``)."""
    return {
        **silence_terms(spec.opt_in, authorisation),
        **links,
        "spec": spec,
        "notice_text": spec.text(),
        "text_sha256": spec.text_sha256(),
        "deadline_text": describe_deadline(deadline, timezone) if deadline else "not yet set",
        "effective_text": describe_instant(spec.effective_at, timezone),
    }


def silence_terms(opt_in_notice: bool, authorisation: str) -> dict[str, bool]:
    """What silence means for one customer, for its mail and its action page."""
    return {
        "consent": consent_required(opt_in_notice, authorisation),
        "specific": authorisation == Authorisation.specific,
        "dora": authorisation == Authorisation.dora,
    }


def silence_words(subprocessor: str, opt_in_notice: bool, authorisation: str) -> str:
    """The same in one sentence."""
    if authorisation == Authorisation.specific:
        return (
            f"Your contract requires your specific authorisation: unless you authorise (opt in),"
            f" {subprocessor} will not be used for your organisation."
        )
    if opt_in_notice:
        return (
            f"This is an opt-in notice: unless you opt in, {subprocessor} will not be used for"
            " your organisation."
        )
    if authorisation == Authorisation.dora:
        return (
            "Under your contract (DORA) you may approve, object or request changes; if you"
            " neither object nor request changes by your deadline, the change goes ahead."
        )
    return (
        "If you do not object by your deadline, the change is deemed accepted and"
        f" {subprocessor} will be used for your organisation from the effective date."
    )


def update_context(spec: NoticeSpec, headline: str, paragraphs: list[str]) -> dict[str, Any]:
    return {"spec": spec, "headline": headline, "paragraphs": paragraphs}
