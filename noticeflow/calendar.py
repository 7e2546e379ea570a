"""The customer's deadline as an iCalendar event (RFC 5545, the ``icalendar`` package), attached
to the notice mail as a ``text/calendar`` part.

Built once per distinct (language, deadline, timezone) of a sending batch, not per customer or
contact: only the UID is the customer's own (an HMAC of the notice id under the customer's own
``ids`` subkey, ``CustomerKey.ident``: the same for every mail about the notice to the customer,
so a resent mail updates the same event instead of adding one; and, keyed, it tells nobody
holding the entry and the notice id anything about which customer it is — an unkeyed hash of the
ids would confirm a guessed customer id), and it is spliced into the bytes built once.

What the event holds is what the mail already says, and less: the notice id, the sub-processor's
name, the deadline in the customer's timezone and words. No name, no address, no personal link
(a calendar is often shared or synced further than a mailbox).

A deadline at local midnight (the usual case: the end of the window's last day) is an all-day
event on that last day (DTEND, exclusive, is the deadline); any other deadline is a timed event
at the deadline (TZID: the customer's timezone) with no DTEND: RFC 5545 §3.8.2.2 wants a DTEND
later than DTSTART, and an event without one (or a DURATION) is an instant, which a deadline is.

SEQUENCE is 0 (the event is never revised: a mail about the same notice later carries the same
event). DTSTAMP is when the sending that built this mail began: the notice's sending for the
notice mail, the resend's own time for a resend (so the same sending always writes the same
bytes, and a client that sees the event again with the same UID and SEQUENCE keeps the later).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from noticeflow.domain import language as lang
from noticeflow.domain.deadlines import end_of_local_day
from noticeflow.mail import CalendarPart

PRODID = "-//noticeflow//sub-processor notice deadline//EN"
_UID = b"UID:noticeflow-uid-placeholder\r\n"


class IdKey(Protocol):
    """The customer's key as the UID needs it (noticeflow.crypto.CustomerKey: a sibling layer)."""

    def ident(self, *parts: str) -> str: ...


def event_uid(notice_id: str, key: IdKey) -> str:
    """The event's UID: the same for every mail about this notice to this customer (keyed under
    the customer's ``ids`` subkey: nothing to confirm a guessed customer id against)."""
    return f"{key.ident('calendar-uid', notice_id)[:32]}@noticeflow"


@dataclass(frozen=True)
class DeadlineCalendar:
    """One calendar object for every customer with the same deadline, timezone and language."""

    filename: str
    head: bytes  # everything before the UID line
    tail: bytes  # everything after it

    def for_customer(self, notice_id: str, key: IdKey) -> CalendarPart:
        """The customer's event: ``key`` is its CustomerKey (the UID is keyed under it)."""
        uid = f"UID:{event_uid(notice_id, key)}\r\n".encode("ascii")
        return CalendarPart(self.filename, self.head + uid + self.tail)


def deadline_calendar(
    *,
    notice_id: str,
    subprocessor: str,
    deadline: datetime,
    timezone: str,
    language: str | None,
    stamp: datetime,
) -> DeadlineCalendar:
    """The calendar for one deadline (``stamp``: DTSTAMP, the time the sending that builds the
    mail began — the notice's sending, or a resend's — so the same sending always gives the same
    bytes)."""
    from icalendar import Calendar, Event  # imported on first use: only sending workers need it

    zone = ZoneInfo(timezone)
    local = deadline.astimezone(zone)
    last_day = local.date() - timedelta(days=1)
    deadline_words = lang.deadline(language, deadline, timezone)
    event = Event()
    event.add("uid", "noticeflow-uid-placeholder")
    event.add("dtstamp", stamp.astimezone(ZoneInfo("UTC")))
    if deadline == end_of_local_day(last_day, zone):  # the end of a whole day: an all-day event
        event.add("dtstart", last_day)
        event.add("dtend", local.date())
    else:  # an instant: no DTEND (it would have to be later than DTSTART)
        event.add("dtstart", local)
    event.add("sequence", 0)
    names = {"notice_id": notice_id, "subprocessor": subprocessor}
    event.add("summary", lang.text(language, "calendar.summary", **names))
    event.add(
        "description", lang.text(language, "calendar.description", deadline=deadline_words, **names)
    )
    event.add("transp", "TRANSPARENT")  # a deadline, not a meeting: the time stays free
    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("method", "PUBLISH")
    calendar.add_component(event)
    calendar.add_missing_timezones()  # a timed event's VTIMEZONE (none for UTC or dates)
    data = calendar.to_ical()
    head, found, tail = data.partition(_UID)
    if not found:  # (never: the placeholder is short and plain)
        raise ValueError("the calendar's UID line was not written as expected")
    return DeadlineCalendar(lang.text(language, "calendar.filename"), head, tail)
