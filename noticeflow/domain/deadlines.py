"""Objection-window deadlines: pure functions, no I/O.

Counting rule (documented in docs/deadlines.md):

* A window of whole days follows EU Regulation 1182/71 (periods, dates and time limits): the day on
  which the notice is delivered does not count; the window ends at the **end of its last day** in the
  customer's own timezone. We store that end as an exact UTC instant: the first instant *after* the
  window, i.e. local midnight at the start of the following day. An objection is timely when it is
  received strictly before that instant.
* Business days skip Saturdays and Sundays (public holidays are not counted out).
* A window that is not a whole number of days (``PT2M``, used for trials and tests) is exact: the
  deadline is delivery time plus the duration, with no rounding.
* The customer's deadline is the later of the notice window and its contract window.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

DAY = timedelta(days=1)


class WindowUnit(StrEnum):
    calendar = "calendar"
    business = "business"


def _require_aware(instant: datetime) -> None:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError("instant must be timezone-aware")


def add_business_days(start: date, days: int) -> date:
    """The date that is ``days`` business days (Mon-Fri) after ``start``."""
    current = start
    remaining = days
    while remaining > 0:
        current += DAY
        if current.weekday() < 5:
            remaining -= 1
    return current


def last_day_of_window(delivered_local: date, days: int, unit: WindowUnit) -> date:
    """The last day of a window of ``days`` days that starts the day after delivery."""
    if unit is WindowUnit.business:
        return add_business_days(delivered_local, days)
    return delivered_local + timedelta(days=days)


def end_of_local_day(day: date, zone: ZoneInfo) -> datetime:
    """The first instant after ``day`` ends in ``zone`` (local midnight of the next day), in UTC."""
    next_midnight = datetime.combine(day + DAY, time(0), tzinfo=zone)
    return next_midnight.astimezone(ZoneInfo("UTC"))


def window_end(
    delivered_at: datetime,
    window: timedelta,
    zone: ZoneInfo,
    unit: WindowUnit = WindowUnit.calendar,
) -> datetime:
    """End of one window (exclusive, UTC) for a notice delivered at ``delivered_at``."""
    _require_aware(delivered_at)
    if window <= timedelta(0):
        raise ValueError("window must be positive")
    if window % DAY != timedelta(0):
        return (delivered_at + window).astimezone(ZoneInfo("UTC"))
    local_day = delivered_at.astimezone(zone).date()
    return end_of_local_day(last_day_of_window(local_day, window // DAY, unit), zone)


def customer_deadline(
    delivered_at: datetime,
    notice_window: timedelta,
    timezone: str,
    contract_days: int | None = None,
    contract_unit: WindowUnit = WindowUnit.calendar,
) -> datetime:
    """A customer's deadline: max(notice window, contract window) from its delivery, in UTC."""
    zone = ZoneInfo(timezone)
    deadline = window_end(delivered_at, notice_window, zone)
    if contract_days:
        contract_end = window_end(delivered_at, timedelta(days=contract_days), zone, contract_unit)
        deadline = max(deadline, contract_end)
    return deadline


def describe_deadline(deadline: datetime, timezone: str) -> str:
    """Human wording of a deadline in the customer's timezone (used in mail and CLI)."""
    zone = ZoneInfo(timezone)
    local = deadline.astimezone(zone)
    if local.time() == time(0):
        last_day = (local - DAY).date()
        return f"end of {last_day:%A %d %B %Y} ({timezone})"
    return f"{local:%A %d %B %Y %H:%M:%S %Z} ({timezone})"
