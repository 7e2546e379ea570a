"""Deadline rules: end of the last local day, weekends and public holidays roll forward (EU
Regulation 1182/71 Art. 3(4)), business days, max of notice and contract windows, wording."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from noticeflow.domain.deadlines import (
    WindowUnit,
    add_business_days,
    customer_deadline,
    describe_deadline,
    describe_instant,
    has_holiday_calendar,
    is_working_day,
    next_working_day,
    public_holidays,
)

ZONES = [
    "UTC",
    "America/New_York",
    "America/Los_Angeles",
    "Pacific/Honolulu",
    "Europe/Berlin",
    "Asia/Tokyo",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
]
DAY = timedelta(days=1)
# (timezone, country) pairs as customers have them; None: weekends only
ZONED_COUNTRIES = [
    ("UTC", None),
    ("America/New_York", "US"),
    ("Pacific/Honolulu", "US"),
    ("Europe/Berlin", "DE"),
    ("Asia/Tokyo", "JP"),
    ("Australia/Lord_Howe", "AU"),
    ("Asia/Kathmandu", "NP"),
]
instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
dates = st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 1, 1))


def test_seed_notice_window_ends_at_end_of_18_october_local():
    delivered = datetime(2023, 9, 27, 16, 0, tzinfo=UTC)  # 27 Sept, daytime in the US
    deadline = customer_deadline(delivered, timedelta(days=21), "America/Los_Angeles")
    assert deadline == datetime(2023, 10, 19, 0, 0, tzinfo=ZoneInfo("America/Los_Angeles"))
    assert describe_deadline(deadline, "America/Los_Angeles") == (
        "end of Wednesday 18 October 2023 (America/Los_Angeles)"
    )


def test_sub_day_windows_are_exact():
    delivered = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)
    assert customer_deadline(
        delivered, timedelta(minutes=2), "Asia/Tokyo"
    ) == delivered + timedelta(minutes=2)


def test_business_days_skip_weekends():
    friday = date(2026, 11, 27)
    assert add_business_days(friday, 1) == date(2026, 11, 30)  # Monday
    assert add_business_days(friday, 5) == date(2026, 12, 4)


def test_contract_window_wins_when_longer():
    delivered = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    notice_only = customer_deadline(delivered, timedelta(days=21), "Europe/Berlin")
    with_contract = customer_deadline(
        delivered, timedelta(days=21), "Europe/Berlin", 30, WindowUnit.business
    )
    assert with_contract > notice_only
    assert with_contract.astimezone(ZoneInfo("Europe/Berlin")).date() == date(2026, 2, 17)


@given(instants, st.integers(1, 120), st.sampled_from(ZONES))
def test_day_windows_end_at_local_midnight_after_the_last_day(delivered, days, zone):
    deadline = customer_deadline(delivered, timedelta(days=days), zone)
    local = deadline.astimezone(ZoneInfo(zone))
    assert deadline.tzinfo is not None and deadline.utcoffset() == timedelta(0)
    assert local.hour == 0 and local.minute == 0  # end of a local day
    last_day = (local - timedelta(days=1)).date()
    nominal = delivered.astimezone(ZoneInfo(zone)).date() + timedelta(days=days)
    # Art. 3(4): a nominal last day on a Saturday or Sunday moves to the Monday after it
    if nominal.weekday() < 5:
        assert last_day == nominal
    else:
        assert last_day.weekday() == 0 and timedelta(0) < last_day - nominal <= timedelta(days=2)
    assert deadline - delivered > timedelta(days=days) - timedelta(hours=2)  # whole days, DST aside


@given(instants, st.integers(1, 120), st.sampled_from(ZONED_COUNTRIES))
def test_with_a_country_the_last_day_is_the_first_working_day_on_or_after_the_nominal_one(
    delivered, days, zoned
):
    zone, country = zoned
    deadline = customer_deadline(delivered, timedelta(days=days), zone, country=country)
    last_day = (deadline.astimezone(ZoneInfo(zone)) - timedelta(days=1)).date()
    nominal = delivered.astimezone(ZoneInfo(zone)).date() + timedelta(days=days)
    assert is_working_day(last_day, country)
    assert last_day >= nominal
    skipped = [nominal + timedelta(days=i) for i in range((last_day - nominal).days)]
    assert not any(is_working_day(day, country) for day in skipped)
    # holidays only ever lengthen a window
    assert deadline >= customer_deadline(delivered, timedelta(days=days), zone)


@given(
    instants,
    st.integers(1, 60),
    st.integers(0, 60),
    st.sampled_from(ZONES),
    st.sampled_from(list(WindowUnit)),
)
def test_deadline_is_never_before_either_window(delivered, notice_days, contract_days, zone, unit):
    deadline = customer_deadline(
        delivered, timedelta(days=notice_days), zone, contract_days or None, unit
    )
    assert deadline >= customer_deadline(delivered, timedelta(days=notice_days), zone)
    if contract_days:
        only_contract = (
            customer_deadline(delivered, timedelta(days=contract_days), zone)
            if unit == "calendar"
            else None
        )
        if only_contract is not None:
            assert deadline >= only_contract


@given(instants, st.integers(1, 40), st.sampled_from(ZONES))
def test_later_delivery_never_gives_an_earlier_deadline(delivered, days, zone):
    earlier = customer_deadline(delivered, timedelta(days=days), zone)
    later = customer_deadline(delivered + timedelta(hours=7), timedelta(days=days), zone)
    assert later >= earlier


@given(dates, st.integers(1, 100))
def test_business_day_count_lands_on_a_weekday(start, days):
    end = add_business_days(start, days)
    assert end.weekday() < 5
    weekdays = sum(
        (start + timedelta(days=i)).weekday() < 5 for i in range(1, (end - start).days + 1)
    )
    assert weekdays == days


@given(dates, st.integers(1, 100), st.sampled_from(["US", "DE", "JP", "NP"]))
def test_business_days_count_only_working_days_of_the_country(start, days, country):
    end = add_business_days(start, days, country)
    assert is_working_day(end, country)
    counted = [start + timedelta(days=i) for i in range(1, (end - start).days + 1)]
    assert sum(is_working_day(day, country) for day in counted) == days
    assert end >= add_business_days(start, days)  # holidays only ever lengthen


def test_a_last_day_on_a_weekend_moves_to_monday():
    # Saturday 30 Sept 2023 + 21 days = Saturday 21 Oct: the window runs to the end of Monday 23
    delivered = datetime(2023, 9, 30, 18, 0, tzinfo=UTC)
    deadline = customer_deadline(delivered, timedelta(days=21), "America/Los_Angeles")
    assert deadline == datetime(2023, 10, 24, 0, 0, tzinfo=ZoneInfo("America/Los_Angeles"))
    assert describe_deadline(deadline, "America/Los_Angeles") == (
        "end of Monday 23 October 2023 (America/Los_Angeles)"
    )
    # a Sunday too (delivered Sunday 1 Oct -> Sunday 22 Oct -> Monday 23 Oct)
    sunday = customer_deadline(delivered + DAY, timedelta(days=21), "America/Los_Angeles")
    assert sunday == deadline


def test_a_last_day_on_a_public_holiday_moves_to_the_next_working_day():
    new_york = ZoneInfo("America/New_York")
    # Thursday 2 Nov 2023 + 21 = Thanksgiving (Thursday 23 Nov) -> end of Friday 24 Nov
    delivered = datetime(2023, 11, 2, 15, 0, tzinfo=UTC)
    assert customer_deadline(
        delivered, timedelta(days=21), "America/New_York", country="US"
    ) == datetime(2023, 11, 25, tzinfo=new_york)
    assert customer_deadline(delivered, timedelta(days=21), "America/New_York") == datetime(
        2023, 11, 24, tzinfo=new_york
    )  # without a country, Thanksgiving is an ordinary Thursday
    # Friday 12 June 2026 + 21 = Friday 3 July (Independence Day observed), then the weekend
    assert customer_deadline(
        datetime(2026, 6, 12, 13, 0, tzinfo=UTC), timedelta(days=21), "America/New_York",
        country="US",
    ) == datetime(2026, 7, 7, tzinfo=new_york)  # fmt: skip
    # German Unity Day, Tuesday 3 Oct 2023 -> end of Wednesday 4 Oct, Berlin time
    berlin = ZoneInfo("Europe/Berlin")
    assert customer_deadline(
        datetime(2023, 9, 12, 8, 0, tzinfo=UTC), timedelta(days=21), "Europe/Berlin", country="DE"
    ) == datetime(2023, 10, 5, tzinfo=berlin)
    # Sunday 24 Dec 2023, then Christmas Day and the Second Day of Christmas -> Wednesday 27 Dec
    assert customer_deadline(
        datetime(2023, 12, 3, 9, 0, tzinfo=UTC), timedelta(days=21), "Europe/Berlin", country="DE"
    ) == datetime(2023, 12, 28, tzinfo=berlin)


def test_holidays_are_the_customers_country_not_its_timezone():
    # 3 Oct is a holiday in Germany, not in the US: a Berlin-timezone customer in the US is not
    # moved, a New York-timezone customer in Germany is.
    delivered = datetime(2023, 9, 12, 12, 0, tzinfo=UTC)
    berlin_us = customer_deadline(delivered, timedelta(days=21), "Europe/Berlin", country="US")
    new_york_de = customer_deadline(delivered, timedelta(days=21), "America/New_York", country="DE")
    assert berlin_us == datetime(2023, 10, 4, tzinfo=ZoneInfo("Europe/Berlin"))
    assert new_york_de == datetime(2023, 10, 5, tzinfo=ZoneInfo("America/New_York"))


def test_contract_windows_roll_forward_and_business_days_skip_holidays():
    berlin = ZoneInfo("Europe/Berlin")
    delivered = datetime(2023, 9, 29, 8, 0, tzinfo=UTC)  # Friday
    # 5 business days: Mon 2, (Tue 3 Oct holiday), Wed 4, Thu 5, Fri 6, Mon 9
    assert add_business_days(date(2023, 9, 29), 5, "DE") == date(2023, 10, 9)
    assert add_business_days(date(2023, 9, 29), 5) == date(2023, 10, 6)
    assert customer_deadline(
        delivered, timedelta(days=7), "Europe/Berlin", 5, WindowUnit.business, country="DE"
    ) == datetime(2023, 10, 10, tzinfo=berlin)
    # a calendar contract window whose last day is a holiday rolls forward too:
    # Friday 29 Sept + 4 = Tuesday 3 Oct -> Wednesday 4 Oct
    assert customer_deadline(
        delivered, timedelta(days=1), "Europe/Berlin", 4, WindowUnit.calendar, country="DE"
    ) == datetime(2023, 10, 5, tzinfo=berlin)


def test_sub_day_windows_never_roll_forward():
    # two minutes from 23:59:30 on Friday 6 Oct (Berlin) end on Saturday, exactly
    delivered = datetime(2023, 10, 6, 21, 59, 30, tzinfo=UTC)
    deadline = customer_deadline(delivered, timedelta(minutes=2), "Europe/Berlin", country="DE")
    assert deadline == delivered + timedelta(minutes=2)
    # 3 Oct 2023 12:00 Berlin, a holiday: still exact
    on_holiday = datetime(2023, 10, 3, 10, 0, tzinfo=UTC)
    assert customer_deadline(
        on_holiday, timedelta(hours=36), "Europe/Berlin", country="DE"
    ) == on_holiday + timedelta(hours=36)


def test_working_days_and_holiday_calendars():
    assert date(2023, 10, 3) in public_holidays("DE", 2023)
    assert date(2023, 11, 23) in public_holidays("US", 2023)
    assert not is_working_day(date(2023, 10, 3), "DE")
    assert is_working_day(date(2023, 10, 3), "US")
    assert is_working_day(date(2023, 10, 3), None)
    assert not is_working_day(date(2023, 10, 7))  # Saturday
    assert is_working_day(date(2023, 10, 3), "de") is False  # the code is case-insensitive
    assert next_working_day(date(2023, 12, 24), "DE") == date(2023, 12, 27)
    assert next_working_day(date(2023, 12, 27), "DE") == date(2023, 12, 27)
    # holidays of the next year count for a roll-forward across New Year
    assert next_working_day(date(2022, 12, 31), "DE") == date(2023, 1, 2)
    assert next_working_day(date(2023, 12, 30), "US") == date(2024, 1, 2)


def test_holiday_calendars_are_cached_per_country_and_year():
    public_holidays.cache_clear()
    for _ in range(3):
        customer_deadline(
            datetime(2023, 9, 12, 8, 0, tzinfo=UTC), timedelta(days=21), "Europe/Berlin",
            country="DE",
        )  # fmt: skip
    info = public_holidays.cache_info()
    assert info.misses == 1 and info.hits >= 2


def test_unknown_countries_are_refused():
    assert has_holiday_calendar("DE") and has_holiday_calendar("us")
    assert not has_holiday_calendar("XX")
    assert not has_holiday_calendar("USA")  # alpha-2 only
    assert not has_holiday_calendar("")
    with pytest.raises(ValueError, match="no public holiday calendar"):
        customer_deadline(
            datetime(2023, 9, 12, 8, 0, tzinfo=UTC), timedelta(days=21), "UTC", country="XX"
        )
    # blank is no country at all
    assert customer_deadline(
        datetime(2023, 9, 12, 8, 0, tzinfo=UTC), timedelta(days=21), "UTC", country=" "
    ) == customer_deadline(datetime(2023, 9, 12, 8, 0, tzinfo=UTC), timedelta(days=21), "UTC")


def test_describe_instant_in_words():
    instant = datetime(2023, 10, 17, 22, 0, tzinfo=UTC)
    assert describe_instant(instant, "Europe/Berlin") == (
        "Wednesday 18 October 2023, 00:00 CEST (Europe/Berlin)"
    )
    assert describe_instant(instant, "UTC") == "Tuesday 17 October 2023, 22:00 UTC"
    assert describe_instant(instant, "America/New_York") == (
        "Tuesday 17 October 2023, 18:00 EDT (America/New_York)"
    )
    # no microseconds; seconds only when there are some; no zero-padded day
    issue = datetime.fromisoformat("2026-11-29T17:47:52.730433+00:00")
    assert describe_instant(issue, "UTC") == "Sunday 29 November 2026, 17:47:52 UTC"
    assert describe_instant(datetime(2023, 10, 3, 7, 5, tzinfo=UTC), "Europe/London") == (
        "Tuesday 3 October 2023, 08:05 BST (Europe/London)"
    )
    assert describe_instant(instant, "Asia/Kathmandu") == (
        "Wednesday 18 October 2023, 03:45 +0545 (Asia/Kathmandu)"
    )
    with pytest.raises(ValueError):
        describe_instant(datetime(2023, 10, 17, 22, 0), "UTC")


def test_describe_deadline():
    new_york = ZoneInfo("America/New_York")
    assert describe_deadline(datetime(2023, 10, 18, tzinfo=new_york), "America/New_York") == (
        "end of Tuesday 17 October 2023 (America/New_York)"
    )
    # a sub-day deadline is the exact instant
    assert describe_deadline(datetime(2023, 10, 6, 22, 1, 30, tzinfo=UTC), "Europe/Berlin") == (
        "Saturday 7 October 2023, 00:01:30 CEST (Europe/Berlin)"
    )
    # where midnight does not exist (DST starts at 00:00 in Santiago), the day still ends
    santiago = ZoneInfo("America/Santiago")
    deadline = customer_deadline(
        datetime(2023, 8, 12, 15, 0, tzinfo=UTC), timedelta(days=21), "America/Santiago"
    )  # Saturday 12 Aug + 21 = Saturday 2 Sept -> Monday 4 Sept
    assert deadline == datetime(2023, 9, 5, tzinfo=santiago)
    assert (
        describe_deadline(datetime(2023, 9, 3, tzinfo=santiago).astimezone(UTC), "America/Santiago")
        == "end of Saturday 2 September 2023 (America/Santiago)"
    )
