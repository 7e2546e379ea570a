"""The progress chart of a notice, drawn on the server as inline SVG: no script, no library, no
external asset (and no style attribute: the CSP forbids those; SVG presentation attributes are
not styles).

Cumulative step lines of customers delivered, objections received, customers opted in and
customers activated, over the notice's time, with the window close, the effective date and now
marked.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from markupsafe import Markup, escape

from noticeflow.web.queries import Progress

WIDTH, HEIGHT = 760, 260
LEFT, RIGHT, TOP, BOTTOM = 52, 16, 30, 34
SERIES = (  # (key, label, colour)
    ("delivered", "delivered", "#1f5fbf"),
    ("objections", "objections", "#b3261e"),
    ("opted_in", "opted in", "#b07800"),
    ("activated", "activated", "#1e7a3c"),
)


def _ticks(top: int) -> list[int]:
    if top <= 4:
        return list(range(top + 1))
    raw = top / 4
    magnitude = 10 ** (len(str(int(raw))) - 1)
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    step = max(1, int(step))
    return list(range(0, top + 1, step))


def _label(at: datetime, span: timedelta) -> str:
    if span <= timedelta(hours=6):
        return at.strftime("%H:%M")
    if span <= timedelta(days=3):
        return at.strftime("%-d %b %H:%M")
    return at.strftime("%-d %b")


def progress_svg(
    progress: Progress,
    *,
    customers: int,
    now: datetime,
    marks: list[tuple[str, datetime | None]] | None = None,
    start: datetime | None = None,
) -> Markup:
    """The chart as an ``<svg>`` element (instants are shown in UTC)."""
    shown: list[tuple[str, datetime]] = [(label, at) for label, at in marks or [] if at]
    instants = [at for at, _ in progress.points] + [at for _, at in shown]
    if start is not None:
        instants.append(start)
    if not progress.points:
        return Markup(
            '<svg class="progress" role="img" viewBox="0 0 {w} 60" width="{w}" height="60"'
            ' xmlns="http://www.w3.org/2000/svg" aria-label="no progress yet">'
            '<text x="{x}" y="34" fill="#5b6473" font-size="13">Nothing delivered,'
            " objected, opted in or activated yet.</text></svg>"
        ).format(w=WIDTH, x=LEFT)
    t0 = min(instants)
    last_point = progress.points[-1][0]
    t1 = max(instants)
    if now > t1 and now - t1 < max(t1 - t0, timedelta(minutes=5)):
        t1 = now  # recent: show up to now (long after the end, "now" would squash the chart)
    if t1 <= t0:
        t1 = t0 + timedelta(minutes=1)
    span = t1 - t0
    top = max([customers, 1] + [v for _, totals in progress.points for v in totals.values()])
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM

    def x(at: datetime) -> float:
        return LEFT + plot_w * ((at - t0) / span)

    def y(value: int) -> float:
        return TOP + plot_h * (1 - value / top)

    parts: list[str] = []
    # Grid and axes.
    for tick in _ticks(top):
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(tick):.1f}" y2="{y(tick):.1f}"'
            ' stroke="#e3e7ee" stroke-width="1"/>'
            f'<text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" font-size="11"'
            f' fill="#5b6473">{tick}</text>'
        )
    for i in range(5):
        at = t0 + span * (i / 4)
        anchor = "start" if i == 0 else "end" if i == 4 else "middle"
        parts.append(
            f'<text x="{x(at):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="{anchor}"'
            f' font-size="11" fill="#5b6473">{escape(_label(at, span))}</text>'
        )
    parts.append(
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" y2="{TOP + plot_h}"'
        ' stroke="#8a94a3" stroke-width="1"/>'
    )
    parts.append(
        f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 4}" text-anchor="end" font-size="10"'
        ' fill="#5b6473">UTC</text>'
    )
    # Marks: window close, effective date, now.
    for label, at in [*shown, ("now", now)]:
        if not t0 <= at <= t1:
            continue
        left = x(at) - LEFT < 80  # near the left edge: the label goes right of its line
        parts.append(
            f'<line x1="{x(at):.1f}" x2="{x(at):.1f}" y1="{TOP}" y2="{TOP + plot_h}"'
            ' stroke="#8a94a3" stroke-width="1" stroke-dasharray="4 3"/>'
            f'<text x="{x(at) + (3 if left else -3):.1f}" y="{TOP + 10}"'
            f' text-anchor="{"start" if left else "end"}" font-size="10"'
            f' fill="#5b6473">{escape(label)}</text>'
        )
    # The lines: a step at each change, held until now (or the chart's end).
    hold = min(max(now, last_point), t1)
    for key, label, colour in SERIES:
        value = 0
        path = [f"M{x(t0):.1f},{y(0):.1f}"]
        for at, totals in progress.points:
            path.append(f"H{x(at):.1f}V{y(totals[key]):.1f}")
            value = totals[key]
        path.append(f"H{x(hold):.1f}")
        parts.append(
            f'<path d="{"".join(path)}" fill="none" stroke="{colour}" stroke-width="2">'
            f"<title>{escape(label)}: {value}</title></path>"
        )
    # Legend.
    legend_x = LEFT
    for key, label, colour in SERIES:
        value = progress.points[-1][1][key]
        text = f"{label} {value}"
        parts.append(
            f'<rect x="{legend_x}" y="8" width="12" height="4" fill="{colour}"/>'
            f'<text x="{legend_x + 16}" y="14" font-size="12" fill="#1d2430">{escape(text)}</text>'
        )
        legend_x += 24 + 7 * len(text)
    described = ", ".join(f"{label} {progress.points[-1][1][key]}" for key, label, _ in SERIES)
    return Markup(
        f'<svg class="progress" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}"'
        f' height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg"'
        f' aria-label="{escape("Progress over time: " + described)}">' + "".join(parts) + "</svg>"
    )
