"""What the Temporal Web UI shows about a notice: summaries and details in markdown.

Pure functions of the notice (no I/O, no Temporal client), so the workflow's deterministic code
and the code that starts it share them. Counts, ids, instants and the sub-processor's legal name
only: nothing personal.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from noticeflow.domain.notice import NoticeSpec


def utc(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def md(text: str) -> str:
    """Plain text inside Temporal markdown (a legal name may hold * or _)."""
    return "".join("\\" + ch if ch in "\\`*_[]<>#|" else ch for ch in text)


def _listed(values: list[str], most: int = 12) -> str:
    shown = ", ".join(md(value[:60]) for value in values[:most])
    return shown + (f" and {len(values) - most:,} more" if len(values) > most else "")


def static_summary(spec: NoticeSpec) -> str:
    """One line, set when the workflow starts: the sub-processor, the notice and its date."""
    return (
        f"{spec.subprocessor[:80]} · notice {spec.notice_id} · effective {utc(spec.effective_at)}"
    )


def static_details(spec: NoticeSpec, *, restarted: bool = False) -> str:
    """Markdown, set when the workflow starts: the notice's fixed terms (no text, no people)."""
    from noticeflow.domain.notice import iso_duration

    audience = spec.audience
    filters = [
        *([f"regions {_listed(audience.regions)}"] if audience.regions else []),
        *([f"services {_listed(audience.services)}"] if audience.services else []),
        *([f"{len(audience.customers):,} named customers"] if audience.customers else []),
    ]
    lines = [
        f"- **Sub-processor:** {md(spec.subprocessor)} ({md(spec.subprocessor_location[:200])})",
        f"- **Notice:** `{spec.notice_id}`",
        f"- **Effective:** {utc(spec.effective_at)}",
        f"- **Objection window:** {iso_duration(spec.objection_window)} from each customer's"
        " delivery (or its contract's, if longer)",
        f"- **Opt-in:** {'yes: only customers who opt in are activated' if spec.opt_in else 'no'}",
        f"- **Audience:** selected at approval ({'; '.join(filters) or 'all customers'})",
    ]
    if restarted:
        lines.append(
            "- **This run:** started after the notice completed, to judge an action received"
            " later (a late objection, a revoked opt-in...)"
        )
    lines.append("")
    lines.append("Phase, counts and the next deadline: see *current details*.")
    return "\n".join(lines)
