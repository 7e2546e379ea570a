"""The sub-processors in use for one customer at an instant, derived only from the events.

Pure: the events come in as plain records (:class:`AnnexEvent`: type, data as JSON values,
occurrence instant, stream), so the same derivation serves the event store, a pack and the tests.

The rule, per sub-processor (as the notices name it; a switch names it exactly):

* only ``subprocessor_enabled`` / ``subprocessor_disabled`` of this customer in a notice's stream
  (``notice-<id>``) with ``occurred_at`` at or before the instant count, applied in the order of
  ``occurred_at`` (two at the same instant: in the order given, which is the store's global order);
* the sub-processor is in use when its last such switch is a switch-on;
* it is in use **since** the first switch-on after its last switch-off (a second switch-on while
  it is on moves nothing, as in the records' ``subprocessor_enablements``);
* its details (purpose, location, data categories, transfer mechanism, services) and notice id
  come from the ``notice_created`` spec of the **latest** notice that switched it on in that run
  (a later notice about the same sub-processor — a material change — describes it as it is now).
  A notice whose ``notice_created`` is not among the events gives no details (None).

A date given without a time means the end of that day in UTC (:func:`parse_as_of`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any, NamedTuple

from noticeflow.domain.errors import InputError

ENABLED = "subprocessor_enabled"
DISABLED = "subprocessor_disabled"
CREATED = "notice_created"
EVENT_TYPES = (ENABLED, DISABLED, CREATED)  # the events the list follows from
NOTICE_STREAM_PREFIX = "notice-"


class AnnexEvent(NamedTuple):
    """One event as stored: ``data`` holds JSON values."""

    event_type: str
    data: Mapping[str, Any]
    occurred_at: datetime
    stream_id: str


@dataclass(frozen=True)
class InUse:
    """A sub-processor in use for the customer, with what the notice that switched it on says."""

    subprocessor: str
    since: datetime
    notice_id: str
    purpose: str | None
    location: str | None
    data_categories: tuple[str, ...]
    transfer_mechanism: str | None
    services: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "subprocessor": self.subprocessor,
            "purpose": self.purpose,
            "location": self.location,
            "data_categories": list(self.data_categories),
            "transfer_mechanism": self.transfer_mechanism,
            "services": list(self.services),
            "since": self.since.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "notice_id": self.notice_id,
        }


def notice_of(stream_id: str) -> str | None:
    """The notice id of a notice's stream (None for another stream)."""
    if not stream_id.startswith(NOTICE_STREAM_PREFIX) or stream_id == NOTICE_STREAM_PREFIX:
        return None
    return stream_id[len(NOTICE_STREAM_PREFIX) :]


def _texts(value: Any) -> tuple[str, ...]:
    if isinstance(value, list | tuple):
        return tuple(str(item) for item in value)
    return ()


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def in_use(customer_id: str, at: datetime, events: Iterable[AnnexEvent]) -> list[InUse]:
    """The sub-processors in use for ``customer_id`` at ``at`` (aware), sorted by name."""
    if at.tzinfo is None:
        raise ValueError("at must be an aware datetime")
    specs: dict[str, Mapping[str, Any]] = {}
    switches: list[tuple[datetime, int, AnnexEvent, str]] = []
    for index, event in enumerate(events):
        notice_id = notice_of(event.stream_id)
        if notice_id is None:
            continue
        if event.event_type == CREATED:
            spec = event.data.get("spec")
            if isinstance(spec, Mapping):
                specs.setdefault(notice_id, spec)
        elif (
            event.event_type in (ENABLED, DISABLED)
            and event.data.get("customer_id") == customer_id
            and event.occurred_at <= at
        ):
            switches.append((event.occurred_at, index, event, notice_id))
    switches.sort(key=lambda s: (s[0], s[1]))
    on: dict[str, tuple[datetime, str]] = {}  # name -> (since, latest notice that switched it on)
    for occurred_at, _, event, notice_id in switches:
        name = str(event.data.get("subprocessor"))
        if event.event_type == DISABLED:
            on.pop(name, None)
        else:
            since = on[name][0] if name in on else occurred_at
            on[name] = (since, notice_id)
    result = []
    for name, (since, notice_id) in on.items():
        spec = specs.get(notice_id, {})
        result.append(
            InUse(
                subprocessor=name,
                since=since,
                notice_id=notice_id,
                purpose=_text(spec.get("purpose")),
                location=_text(spec.get("subprocessor_location")),
                data_categories=_texts(spec.get("data_categories")),
                transfer_mechanism=_text(spec.get("transfer_mechanism")),
                services=_texts(spec.get("services")),
            )
        )
    return sorted(result, key=lambda entry: (entry.subprocessor.casefold(), entry.subprocessor))


def parse_as_of(value: str | None, now: datetime, option: str = "--at") -> datetime:
    """The instant a list is asked for: ``now`` when not given; an ISO date (``2026-12-01``)
    means the end of that day in UTC (its last microsecond: everything that day counts); an ISO
    instant needs its offset (``2026-12-01T09:00:00Z``). A bad value: one line saying why."""
    if value is None:
        return now
    text = value.strip()
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        if len(text) == 10:  # YYYY-MM-DD only (fromisoformat also takes 20261201, 2026-W48-1)
            return datetime.combine(day, time.max, tzinfo=UTC)
    try:
        instant = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise InputError(
            f"{option}: not an ISO date (2026-12-01) or instant (2026-12-01T09:00:00Z): {value!r}"
        ) from None
    if instant.tzinfo is None:
        raise InputError(f"{option}: an instant needs its offset, e.g. {text}Z: {value!r}")
    return instant
