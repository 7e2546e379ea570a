"""The notice's canonical text, independent of any recipient."""

from __future__ import annotations

from typing import TYPE_CHECKING

from noticeflow.domain.deadlines import describe_instant

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
