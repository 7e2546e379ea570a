"""Template filters: instants in a named timezone, in words, and countdowns."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def local(value: datetime | None, tz: str | None = None, missing: str = "—") -> str:
    """``Mon 14 Dec 2026, 23:59 EST`` in ``tz`` (UTC when none)."""
    if value is None:
        return missing
    shown = value.astimezone(zone(tz))
    return shown.strftime("%a %-d %b %Y, %H:%M ") + (shown.tzname() or "")


def iso(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else ""


def countdown(value: datetime | None, now: datetime | None = None) -> str:
    """``in 3 d 4 h``, ``in 25 min``, ``2 d ago``."""
    if value is None:
        return "—"
    now = now or datetime.now(UTC)
    seconds = (value - now).total_seconds()
    ahead = seconds >= 0
    seconds = abs(seconds)
    days, rest = divmod(int(seconds), 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes = rest // 60
    if days:
        text = f"{days} d {hours} h" if days < 10 and hours else f"{days} d"
    elif hours:
        text = f"{hours} h {minutes} min" if minutes else f"{hours} h"
    else:
        text = f"{max(minutes, 1)} min" if seconds >= 60 else "< 1 min"
    return f"in {text}" if ahead else f"{text} ago"


def yesno(value: Any) -> str:
    return "yes" if value else "no"


FILTERS = {"local": local, "iso": iso, "countdown": countdown, "yesno": yesno}
