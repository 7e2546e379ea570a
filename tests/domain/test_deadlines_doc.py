"""The worked examples in docs/deadlines.md are checked against the code, so the doc cannot drift."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import TypeAdapter

from noticeflow.domain.deadlines import WindowUnit, customer_deadline

DOC = Path(__file__).resolve().parents[2] / "docs" / "deadlines.md"
EXAMPLE = re.compile(
    r"^delivered (?P<delivered>\S+)"
    r" \| window (?P<window>\S+)"
    r" \| contract (?:none|(?P<contract_days>\d+) (?P<contract_unit>calendar|business))"
    r" \| tz (?P<tz>\S+)"
    r" \| country (?:none|(?P<country>[A-Z]{2}))"
    r" \| deadline (?P<deadline>\S+Z)$"
)


@dataclass(frozen=True)
class Example:
    line: str
    delivered: datetime
    window: timedelta
    contract_days: int | None
    contract_unit: WindowUnit
    timezone: str
    country: str | None
    deadline: datetime


def _examples() -> list[Example]:
    examples = []
    durations = TypeAdapter(timedelta)
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if not line.startswith("delivered "):
            continue
        match = EXAMPLE.match(line)
        assert match is not None, f"malformed example line in {DOC.name}: {line!r}"
        found = match.groupdict()
        examples.append(
            Example(
                line=line,
                delivered=datetime.fromisoformat(found["delivered"]),
                window=durations.validate_python(found["window"]),
                contract_days=int(found["contract_days"]) if found["contract_days"] else None,
                contract_unit=WindowUnit(found["contract_unit"] or "calendar"),
                timezone=found["tz"],
                country=found["country"],
                deadline=datetime.fromisoformat(found["deadline"]),
            )
        )
    return examples


EXAMPLES = _examples()


def test_the_doc_has_enough_examples():
    assert len(EXAMPLES) >= 6
    # the kinds of case the doc promises: holidays, a sub-day window, business days, no country
    assert any(e.country is None for e in EXAMPLES)
    assert {"US", "DE"} <= {e.country for e in EXAMPLES}
    assert any(e.window % timedelta(days=1) for e in EXAMPLES)
    assert any(e.contract_unit is WindowUnit.business for e in EXAMPLES)


@pytest.mark.parametrize(
    "example", EXAMPLES, ids=[f"example-{number}" for number in range(1, len(EXAMPLES) + 1)]
)
def test_doc_example_matches_the_code(example: Example):
    deadline = customer_deadline(
        example.delivered,
        example.window,
        example.timezone,
        example.contract_days,
        example.contract_unit,
        country=example.country,
    )
    assert deadline == example.deadline, example.line
    assert example.deadline.utcoffset() == timedelta(0)
    assert deadline.tzinfo is not None and deadline.utcoffset() == timedelta(0)
    assert example.delivered.tzinfo is not None
    assert example.delivered.astimezone(UTC) < example.deadline
