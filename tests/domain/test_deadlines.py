"""Deadline rules: end of the last local day, business days, max of notice and contract windows."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from noticeflow.domain.deadlines import (
    WindowUnit,
    add_business_days,
    customer_deadline,
    describe_deadline,
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
instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


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
    assert last_day == delivered.astimezone(ZoneInfo(zone)).date() + timedelta(days=days)
    assert deadline - delivered > timedelta(days=days) - timedelta(hours=2)  # whole days, DST aside


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


@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 1, 1)), st.integers(1, 100))
def test_business_day_count_lands_on_a_weekday(start, days):
    end = add_business_days(start, days)
    assert end.weekday() < 5
    weekdays = sum(
        (start + timedelta(days=i)).weekday() < 5 for i in range(1, (end - start).days + 1)
    )
    assert weekdays == days
