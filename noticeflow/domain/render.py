"""The notice's canonical text, independent of any recipient, and the template context of one
customer's mail about it."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import TYPE_CHECKING, Any

from noticeflow.domain import language as lang
from noticeflow.domain.notice import DEFAULT_HOW_TO_OBJECT
from noticeflow.domain.rules import Authorisation, ChangeKind, consent_required

if TYPE_CHECKING:
    from noticeflow.domain.notice import NoticeSpec


def _window_words(spec: NoticeSpec, language: str | None = None) -> str:
    return lang.window(language, spec.objection_window)


# How the notice text names a field a material change changes (as its own lines do).
FIELD_WORDS = {
    name: lang.MESSAGES[lang.DEFAULT][f"field.{name}"]
    for name in ("subprocessor_location", "purpose", "transfer_mechanism", "data_categories",
                 "services")
}  # fmt: skip
HEADLINES = {kind: lang.MESSAGES[lang.DEFAULT][f"headline.{kind.value}"] for kind in ChangeKind}


def _shown(value: str | list[str]) -> str:
    return ", ".join(value) if isinstance(value, list) else value


def changed_fields(spec: NoticeSpec, language: str | None = None) -> list[tuple[str, str, str]]:
    """A material change's changed fields: (words, previous value, new value), in a fixed order."""
    return [
        (lang.text(language, f"field.{name}"), _shown(spec.previous[name]),
         _shown(getattr(spec, name)))
        for name in FIELD_WORDS
        if name in spec.previous
    ]  # fmt: skip


def _change(spec: NoticeSpec, language: str | None = None) -> tuple[str, list[str]]:
    """The opening sentence, and the lines saying what changes (none for an addition)."""
    who = f"{spec.subprocessor} ({spec.subprocessor_location})"
    names = {"who": who, "subprocessor": spec.subprocessor, "replaces": spec.replaces}
    if spec.kind is ChangeKind.replacement:
        return (
            lang.text(language, "opening.replacement", **names),
            [
                lang.text(language, "change.replacement", **names),
                lang.text(language, "change.replacement_stops", **names),
            ],
        )
    if spec.kind is ChangeKind.removal:
        when = lang.instant(language, spec.effective_at, "UTC")
        return (
            lang.text(language, "opening.removal", **names),
            [lang.text(language, "change.removal", when=when, **names)],
        )
    if spec.kind is ChangeKind.material_change:
        return (
            lang.text(language, "opening.material_change", **names),
            [lang.text(language, "change.material_change")]
            + [f"{words}: {old} → {new}" for words, old, new in changed_fields(spec, language)],
        )
    return lang.text(language, "opening.addition", **names), []


def render_notice_text(spec: NoticeSpec, language: str | None = None) -> str:
    """The canonical text (an addition's is byte for byte what it was before change kinds: the
    hashes of notices already sent stay true), or, for ``language`` other than English, its
    translation: our wording in that language, the vendor's own fields as written. Only the
    English text is the notice's (its hash, ``text_sha256``, is the evidence's)."""
    opening, change = _change(spec, language)

    def line(key: str, value: str) -> str:
        return f"{lang.text(language, key)}: {value}"

    lines = [spec.title, "", opening, ""]
    if change:
        lines += [*change, ""]
    lines += [
        line("field.purpose", spec.purpose),
        line("field.data_categories", ", ".join(spec.data_categories)),
        line("field.services", ", ".join(spec.services)),
        line("field.transfer_mechanism", spec.transfer_mechanism),
        line("field.effective", lang.instant(language, spec.effective_at, "UTC")),
    ]
    if spec.kind is ChangeKind.removal:
        lines += ["", lang.text(language, "notice.removal_info")]
    else:
        lines.append(line("field.window", _window_words(spec, language)))
        if spec.opt_in:
            lines.append(lang.text(language, "notice.opt_in"))
        how = spec.how_to_object
        if how == DEFAULT_HOW_TO_OBJECT:  # our words, not the vendor's: translated
            how = lang.text(language, "notice.how_to_object_default")
        lines += ["", line("field.how_to_object", how)]
    if spec.body.strip():
        lines += ["", spec.body.strip()]
    return "\n".join(lines) + "\n"


def mail_context(
    spec: NoticeSpec,
    timezone: str,
    deadline: datetime | None,
    links: dict[str, str],
    authorisation: str = Authorisation.general,
    language: str | None = None,
) -> dict[str, Any]:
    """Template context for one customer: the notice, its dates in the customer's timezone, the
    customer's signed action links (``object_url``, ``opt_in_url``) and what silence means for
    it under its own contract (``consent``: silence is refusal; ``specific``, ``dora``).

    ``language``: the customer's (a BCP 47 tag; None: English). The mail is rendered from that
    language's templates (``language`` in the context) with our wording and the dates in it;
    ``notice_text`` is then the translation and ``original_text`` the notice's own (English) text,
    the one ``text_sha256`` is the hash of."""
    informational = spec.kind is ChangeKind.removal  # no deadline, no action links
    original = spec.text()
    translated = lang.language_of(language) != lang.DEFAULT
    return {
        **silence_terms(spec.opt_in, authorisation),
        **({} if informational else links),
        "spec": spec,
        "language": language or lang.DEFAULT,
        "headline": f"{lang.text(language, f'headline.{spec.kind.value}')}: {spec.subprocessor}",
        "changes": changed_fields(spec, language),
        "notice_text": render_notice_text(spec, language) if translated else original,
        "original_text": original,
        "text_sha256": hashlib.sha256(original.encode()).hexdigest(),
        "deadline_text": lang.deadline(language, deadline, timezone)
        if deadline
        else lang.text(language, "deadline.not_set"),
        "deadline_at": deadline,
        "informational": informational,
        "effective_text": lang.instant(language, spec.effective_at, timezone),
    }


def silence_terms(opt_in_notice: bool, authorisation: str) -> dict[str, bool]:
    """What silence means for one customer, for its mail and its action page."""
    return {
        "consent": consent_required(opt_in_notice, authorisation),
        "specific": authorisation == Authorisation.specific,
        "dora": authorisation == Authorisation.dora,
    }


def silence_words(
    subprocessor: str, opt_in_notice: bool, authorisation: str, language: str | None = None
) -> str:
    """The same in one sentence."""
    if authorisation == Authorisation.specific:
        return lang.text(language, "silence.specific", subprocessor=subprocessor)
    if opt_in_notice:
        return lang.text(language, "silence.opt_in", subprocessor=subprocessor)
    if authorisation == Authorisation.dora:
        return lang.text(language, "silence.dora")
    return lang.text(language, "silence.general", subprocessor=subprocessor)


def update_context(
    spec: NoticeSpec, headline: str, paragraphs: list[str], language: str | None = None
) -> dict[str, Any]:
    """An update mail's context; ``language`` picks its templates (None: the recipient's, as
    noticeflow.application.deps.mail_update adds it, else English)."""
    context: dict[str, Any] = {"spec": spec, "headline": headline, "paragraphs": paragraphs}
    if language is not None:
        context["language"] = language
    return context
