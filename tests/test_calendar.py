"""The notice mail's deadline as an iCalendar event (noticeflow/calendar.py): parsed back with
``icalendar``, an all-day event for the end of a day and a timed one otherwise, a UID per notice
and customer, the summary in the customer's language, nothing personal; and the message that
carries it, parsed back by the email package (both ways build_message writes one)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from email import message_from_bytes, policy
from typing import Any
from zoneinfo import ZoneInfo

import icalendar

from noticeflow.calendar import deadline_calendar, event_uid
from noticeflow.crypto import CustomerKey
from noticeflow.mail import build_message

STAMP = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
KEYS = {name: CustomerKey(name, bytes([n + 1]) * 32) for n, name in enumerate(
    ("hooli", "acme", "initech", "c")
)}  # fmt: skip
BERLIN = ZoneInfo("Europe/Berlin")
# The end of Thursday 31 December 2026 in Berlin: local midnight at the start of 1 January.
END_OF_YEAR = datetime(2027, 1, 1, tzinfo=BERLIN).astimezone(UTC)


def event_of(data: bytes) -> Any:
    calendar = icalendar.Calendar.from_ical(data)
    events = list(calendar.walk("VEVENT"))
    assert len(events) == 1
    return events[0]


def calendar_for(deadline: datetime, timezone: str, language: str | None):
    return deadline_calendar(
        notice_id="openai-2026",
        subprocessor="OpenAI, LLC",
        deadline=deadline,
        timezone=timezone,
        language=language,
        stamp=STAMP,
    )


def test_an_end_of_day_deadline_is_an_all_day_event_on_its_last_day():
    part = calendar_for(END_OF_YEAR, "Europe/Berlin", "de").for_customer(
        "openai-2026", KEYS["hooli"]
    )
    event = event_of(part.data)
    assert event.decoded("dtstart") == date(2026, 12, 31)  # the last day to answer
    # DTEND (exclusive) at local midnight is the recorded deadline itself.
    end = event.decoded("dtend")
    assert datetime(end.year, end.month, end.day, tzinfo=BERLIN) == END_OF_YEAR
    assert str(event["summary"]) == (
        "Frist: Mitteilung openai-2026 zum Unterauftragsverarbeiter OpenAI, LLC"
    )
    assert "31. Dezember 2026" in str(event["description"])
    assert event.decoded("dtstamp") == STAMP
    assert part.filename == "frist.ics"


def test_a_timed_deadline_starts_at_the_deadline_in_the_customers_timezone():
    deadline = datetime(2026, 12, 21, 14, 30, tzinfo=UTC)
    part = calendar_for(deadline, "America/New_York", None).for_customer(
        "openai-2026", KEYS["acme"]
    )
    event = event_of(part.data)
    start = event.decoded("dtstart")
    assert start == deadline  # the same instant ...
    assert str(start.tzinfo) == "America/New_York"  # ... in the customer's timezone (TZID)
    assert b"BEGIN:VTIMEZONE" in part.data and b"TZID:America/New_York" in part.data
    assert str(event["summary"]) == "Deadline: sub-processor notice openai-2026 (OpenAI, LLC)"
    assert part.filename == "deadline.ics"
    # RFC 5545 §3.8.2.2: a DTEND must be later than DTSTART; an instant has none (nor DURATION).
    assert "dtend" not in event and "duration" not in event
    assert event.decoded("sequence") == 0 and event.decoded("dtstamp") == STAMP


def test_every_event_has_sequence_0_and_dtstamp_the_sendings_start():
    for deadline in (END_OF_YEAR, datetime(2026, 12, 21, 14, 30, tzinfo=UTC)):
        event = event_of(
            calendar_for(deadline, "Europe/Berlin", "de").for_customer("n", KEYS["c"]).data
        )
        assert event.decoded("sequence") == 0
        assert event.decoded("dtstamp") == STAMP
        assert "dtend" not in event or event.decoded("dtend") > event.decoded("dtstart")


def test_the_uid_is_the_customers_own_and_the_same_every_time():
    shared = calendar_for(END_OF_YEAR, "Europe/Berlin", "en")
    hooli = event_of(shared.for_customer("openai-2026", KEYS["hooli"]).data)
    again = event_of(calendar_for(END_OF_YEAR, "Europe/Berlin", "en").for_customer(
        "openai-2026", KEYS["hooli"]
    ).data)  # fmt: skip
    other = event_of(shared.for_customer("openai-2026", KEYS["initech"]).data)
    assert str(hooli["uid"]) == str(again["uid"]) == event_uid("openai-2026", KEYS["hooli"])
    assert str(other["uid"]) != str(hooli["uid"])
    # Nothing but the UID differs between two customers' events: built once per deadline.
    assert shared.for_customer("openai-2026", KEYS["hooli"]).data.replace(
        event_uid("openai-2026", KEYS["hooli"]).encode(), b"X"
    ) == shared.for_customer("openai-2026", KEYS["initech"]).data.replace(
        event_uid("openai-2026", KEYS["initech"]).encode(), b"X"
    )


def test_the_event_holds_no_personal_data():
    data = calendar_for(END_OF_YEAR, "Europe/Berlin", "de").for_customer("n-1", KEYS["hooli"]).data
    assert b"@" not in data.replace(event_uid("n-1", KEYS["hooli"]).encode(), b"")  # no address
    assert b"hooli" not in data  # not even the customer's id: the UID is a keyed hash
    assert b"http" not in data  # no personal link


def test_the_uid_is_keyed_under_the_customers_key():
    """Anyone holding the entry and the notice id cannot confirm a guessed customer id: the UID
    is no unkeyed hash of the ids, and another key gives another UID for the same ids."""
    import hashlib

    uid = event_uid("n-1", KEYS["hooli"])
    unkeyed = hashlib.sha256(b"n-1\x1fhooli").hexdigest()[:32]
    assert uid != f"{unkeyed}@noticeflow" and unkeyed not in uid
    assert uid != event_uid("n-1", CustomerKey("hooli", b"\xee" * 32))
    assert uid == event_uid("n-1", CustomerKey("hooli", bytes([1]) * 32))  # stable per key
    assert uid != event_uid("n-2", KEYS["hooli"])


def _message(to: str):
    part = calendar_for(END_OF_YEAR, "Europe/Berlin", "de").for_customer(
        "openai-2026", KEYS["hooli"]
    )
    mail = build_message(
        mail_from="privacy@vendor.example",
        to=to,
        subject="Mitteilung über einen neuen Unterauftragsverarbeiter",
        text="Guten Tag,\n\nÜbermorgen.\n",
        html="<p>Guten Tag,</p>\n",
        msg_id="<abc@vendor.example>",
        date=STAMP,
        calendar=part,
    )
    return part, message_from_bytes(mail.data, policy=policy.default)


def test_the_message_carries_the_calendar_beside_its_text_and_html():
    for to in ("dpo@hooli.example", "jörg@hooli.example"):  # the fast path and the email package's
        part, message = _message(to)
        assert message.get_content_type() == "multipart/mixed"
        alternative, attached = message.iter_parts()
        assert alternative.get_content_type() == "multipart/alternative"
        plain, html = alternative.iter_parts()
        assert plain.get_content() == "Guten Tag,\n\nÜbermorgen.\n"
        assert html.get_content() == "<p>Guten Tag,</p>\n"
        assert attached.get_content_type() == "text/calendar"
        assert attached.get_param("method") == "PUBLISH"
        assert attached.get_filename() == "frist.ics"
        payload = attached.get_payload(decode=True)
        assert payload.replace(b"\r\n", b"\n") == part.data.replace(b"\r\n", b"\n")
        assert event_of(payload).decoded("dtstart") == date(2026, 12, 31)
        assert not message.defects and all(not p.defects for p in message.walk())
