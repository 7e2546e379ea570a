"""Objection-window deadlines: pure functions, no I/O.

Counting rule (documented, with worked examples that the tests check, in docs/deadlines.md):

* A window of whole days follows EU Regulation 1182/71 (periods, dates and time limits): the day on
  which the notice is delivered does not count (Art. 3(1)); the window ends at the **end of its last
  day** in the customer's own timezone (Art. 3(2)(b)). We store that end as an exact UTC instant:
  the first instant *after* the window, i.e. local midnight at the start of the following day. An
  objection is timely when it is received strictly before that instant.
* If the last day of a calendar-day window is a Saturday, a Sunday or a public holiday of the
  customer's country, the window ends at the end of the next working day instead (Art. 3(4)).
  Public holidays come from the ``holidays`` package, by ISO 3166 alpha-2 country code (national
  holidays, including "observed" days); without a country only Saturdays and Sundays count.
* Business-day windows count working days only: they skip Saturdays, Sundays and the country's
  public holidays (Art. 3(3)), so they always end on a working day.
* A window that is not a whole number of days (``PT2M``, used for trials and tests) is exact: the
  deadline is delivery time plus the duration, with no rounding and no roll-forward.
* The customer's deadline is the later of the notice window and its contract window.
"""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

DAY = timedelta(days=1)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip


class WindowUnit(StrEnum):
    calendar = "calendar"
    business = "business"


def _require_aware(instant: datetime) -> None:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError("instant must be timezone-aware")


def _country_code(country: str | None) -> str | None:
    """``None`` or blank: no country (weekends only); otherwise the upper-case alpha-2 code."""
    if country is None or not country.strip():
        return None
    return country.strip().upper()


@functools.lru_cache(maxsize=4096)
def public_holidays(country: str, year: int) -> frozenset[date]:
    """The national public holidays of ``country`` (ISO 3166 alpha-2) in ``year``.

    Cached per (country, year): a calendar is built once per process. Raises ``ValueError`` for
    a country the ``holidays`` package has no calendar for.
    """
    import holidays  # imported on first use: most processes that import this module never need it

    try:
        calendar = holidays.country_holidays(country, years=year)
    except NotImplementedError:
        raise ValueError(f"no public holiday calendar for country {country!r}") from None
    return frozenset(day for day in calendar if day.year == year)


@functools.cache
def _holiday_countries() -> frozenset[str]:
    import holidays

    return frozenset(code for code in holidays.list_supported_countries() if len(code) == 2)


def has_holiday_calendar(country: str) -> bool:
    """Whether ``country`` is an ISO 3166 alpha-2 code with a public holiday calendar."""
    code = _country_code(country)
    return code is not None and code in _holiday_countries()


def is_working_day(day: date, country: str | None = None) -> bool:
    """Not a Saturday, a Sunday, or (with a country) one of its public holidays."""
    if day.weekday() >= 5:
        return False
    code = _country_code(country)
    return code is None or day not in public_holidays(code, day.year)


def next_working_day(day: date, country: str | None = None) -> date:
    """``day`` itself if it is a working day, else the first working day after it (Art. 3(4))."""
    while not is_working_day(day, country):
        day += DAY
    return day


def add_business_days(start: date, days: int, country: str | None = None) -> date:
    """The date that is ``days`` working days after ``start`` (skipping weekends and, with a
    country, its public holidays)."""
    current = start
    remaining = days
    while remaining > 0:
        current += DAY
        if is_working_day(current, country):
            remaining -= 1
    return current


def last_day_of_window(
    delivered_local: date, days: int, unit: WindowUnit, country: str | None = None
) -> date:
    """The last day of a window of ``days`` days that starts the day after delivery, after the
    Art. 3(4) roll-forward to a working day."""
    if unit is WindowUnit.business:
        return add_business_days(delivered_local, days, country)
    return next_working_day(delivered_local + timedelta(days=days), country)


def end_of_local_day(day: date, zone: ZoneInfo) -> datetime:
    """The first instant after ``day`` ends in ``zone`` (local midnight of the next day), in UTC."""
    next_midnight = datetime.combine(day + DAY, time(0), tzinfo=zone)
    return next_midnight.astimezone(UTC)


def window_end(
    delivered_at: datetime,
    window: timedelta,
    zone: ZoneInfo,
    unit: WindowUnit = WindowUnit.calendar,
    country: str | None = None,
) -> datetime:
    """End of one window (exclusive, UTC) for a notice delivered at ``delivered_at``."""
    _require_aware(delivered_at)
    if window <= timedelta(0):
        raise ValueError("window must be positive")
    if window % DAY != timedelta(0):
        return (delivered_at + window).astimezone(UTC)
    local_day = delivered_at.astimezone(zone).date()
    return end_of_local_day(last_day_of_window(local_day, window // DAY, unit, country), zone)


def customer_deadline(
    delivered_at: datetime,
    notice_window: timedelta,
    timezone: str,
    contract_days: int | None = None,
    contract_unit: WindowUnit = WindowUnit.calendar,
    *,
    country: str | None = None,
) -> datetime:
    """A customer's deadline: max(notice window, contract window) from its delivery, in UTC.

    ``country`` (ISO 3166 alpha-2, optional) names the public holidays that, like weekends, move
    the end of a whole-day window to the next working day and are skipped by business days.
    """
    zone = ZoneInfo(timezone)
    deadline = window_end(delivered_at, notice_window, zone, country=country)
    if contract_days:
        contract_end = window_end(
            delivered_at, timedelta(days=contract_days), zone, contract_unit, country
        )
        deadline = max(deadline, contract_end)
    return deadline


def _day_words(day: date) -> str:
    return f"{WEEKDAYS[day.weekday()]} {day.day} {MONTHS[day.month - 1]} {day.year}"


def describe_instant(instant: datetime, timezone: str) -> str:
    """An instant in words, in ``timezone``, for people (mail, CLI).

    E.g. ``"Wednesday 18 October 2023, 00:00 CEST (Europe/Berlin)"`` or, in UTC,
    ``"Wednesday 18 October 2023, 00:00 UTC"``. Seconds are shown only when not zero;
    fractions of a second never.
    """
    _require_aware(instant)
    local = instant.astimezone(ZoneInfo(timezone))
    clock = f"{local.hour:02d}:{local.minute:02d}"
    if local.second:
        clock += f":{local.second:02d}"
    abbreviation = local.tzname() or ""
    text = f"{_day_words(local.date())}, {clock} {abbreviation}".rstrip()
    return text if abbreviation == timezone else f"{text} ({timezone})"


def describe_deadline(deadline: datetime, timezone: str) -> str:
    """Human wording of a deadline in the customer's timezone (used in mail and CLI).

    A deadline at the start of a local day (the usual case for whole-day windows) is the end of
    the day before: ``"end of Tuesday 17 October 2023 (America/New_York)"``. Any other deadline
    (sub-day windows) is described as the exact instant.
    """
    _require_aware(deadline)
    zone = ZoneInfo(timezone)
    previous_day = deadline.astimezone(zone).date() - DAY
    if deadline == end_of_local_day(previous_day, zone):
        return f"end of {_day_words(previous_day)} ({timezone})"
    return describe_instant(deadline, timezone)
