"""The notice's canonical text, independent of any recipient, and the template context of one
customer's mail about it."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from noticeflow.domain.deadlines import describe_deadline, describe_instant
from noticeflow.domain.rules import Authorisation, ChangeKind, consent_required

if TYPE_CHECKING:
    from noticeflow.domain.notice import NoticeSpec


def _window_words(spec: NoticeSpec) -> str:
    days, rest = divmod(spec.objection_window.total_seconds(), 86400)
    if not rest:
        return f"{int(days)} days from the day after delivery of this notice"
    return f"{spec.objection_window} from delivery of this notice"


# How the notice text names a field a material change changes (as its own lines do).
FIELD_WORDS = {
    "subprocessor_location": "Location",
    "purpose": "Purpose",
    "transfer_mechanism": "Transfer mechanism",
    "data_categories": "Categories of personal data",
    "services": "Affected services",
}
HEADLINES = {
    ChangeKind.addition: "Notice of a new sub-processor",
    ChangeKind.replacement: "Notice of a sub-processor replacement",
    ChangeKind.removal: "Notice of a sub-processor removal",
    ChangeKind.material_change: "Notice of a material change to a sub-processor",
}


def _shown(value: str | list[str]) -> str:
    return ", ".join(value) if isinstance(value, list) else value


def changed_fields(spec: NoticeSpec) -> list[tuple[str, str, str]]:
    """A material change's changed fields: (words, previous value, new value), in a fixed order."""
    return [
        (words, _shown(spec.previous[name]), _shown(getattr(spec, name)))
        for name, words in FIELD_WORDS.items()
        if name in spec.previous
    ]


def _change(spec: NoticeSpec) -> tuple[str, list[str]]:
    """The opening sentence, and the lines saying what changes (none for an addition)."""
    who = f"{spec.subprocessor} ({spec.subprocessor_location})"
    if spec.kind is ChangeKind.replacement:
        return (
            f"We intend to engage {who} as a new sub-processor, replacing {spec.replaces}.",
            [
                f"Change: replacement of {spec.replaces} by {spec.subprocessor}",
                f"{spec.replaces} stops processing personal data for your organisation when"
                f" {spec.subprocessor} starts.",
            ],
        )
    if spec.kind is ChangeKind.removal:
        when = describe_instant(spec.effective_at, "UTC")
        return (
            f"We will stop using {who} as a sub-processor.",
            [
                f"Change: removal — no objection window; {spec.subprocessor} stops processing on {when}"
            ],
        )
    if spec.kind is ChangeKind.material_change:
        return (
            f"We intend to change how {who} processes personal data as our sub-processor.",
            ["Change: material change"]
            + [f"{words}: {old} → {new}" for words, old, new in changed_fields(spec)],
        )
    return f"We intend to engage {who} as a new sub-processor.", []


def render_notice_text(spec: NoticeSpec) -> str:
    """The canonical text (an addition's is byte for byte what it was before change kinds: the
    hashes of notices already sent stay true)."""
    opening, change = _change(spec)
    lines = [spec.title, "", opening, ""]
    if change:
        lines += [*change, ""]
    lines += [
        f"Purpose: {spec.purpose}",
        f"Categories of personal data: {', '.join(spec.data_categories)}",
        f"Affected services: {', '.join(spec.services)}",
        f"Transfer mechanism: {spec.transfer_mechanism}",
        f"Effective date: {describe_instant(spec.effective_at, 'UTC')}",
    ]
    if spec.kind is ChangeKind.removal:
        lines += [
            "",
            "This notice is for your information: there is nothing to object to or opt in to.",
        ]
    else:
        lines.append(f"Objection window: {_window_words(spec)}")
        if spec.opt_in:
            lines.append(
                "These services are opt-in: the sub-processor is used for your organisation only"
                " if you opt in. Not opting in is an objection."
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
    informational = spec.kind is ChangeKind.removal  # no deadline, no action links
    return {
        **silence_terms(spec.opt_in, authorisation),
        **({} if informational else links),
        "spec": spec,
        "headline": f"{HEADLINES[spec.kind]}: {spec.subprocessor}",
        "changes": changed_fields(spec),
        "notice_text": spec.text(),
        "text_sha256": spec.text_sha256(),
        "deadline_text": describe_deadline(deadline, timezone) if deadline else "not yet set",
        "informational": informational,
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
