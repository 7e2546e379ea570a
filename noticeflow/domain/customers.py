"""Customers, their contacts and contract terms, as imported from CSV."""

from __future__ import annotations

import csv
import io
import re
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from noticeflow.domain.deadlines import WindowUnit
from noticeflow.domain.errors import InputError, describe_validation_error
from noticeflow.domain.notice import SLUG_PATTERN

CSV_COLUMNS = (
    "customer_id",
    "name",
    "region",
    "services",
    "contact_emails",
    "timezone",
    "window_days",
    "window_unit",
)
REQUIRED_COLUMNS = CSV_COLUMNS[:6]
EMAIL_PATTERN = re.compile(r"^[^@\s;,<>]+@[^@\s;,<>]+\.[^@\s;,<>]+$")


def _split_list(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(";") if item.strip()]
    return value


def _blank_to_none(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


SemicolonList = Annotated[list[str], BeforeValidator(_split_list)]


class Customer(BaseModel):
    """One customer row. Contacts are personal data: they stay in PostgreSQL."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    customer_id: Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
    region: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
    services: SemicolonList = Field(default_factory=list)
    contact_emails: SemicolonList
    timezone: str = "UTC"
    window_days: Annotated[int | None, BeforeValidator(_blank_to_none)] = Field(
        default=None, ge=1, le=366
    )
    window_unit: Annotated[WindowUnit | None, BeforeValidator(_blank_to_none)] = None

    @field_validator("contact_emails")
    @classmethod
    def _emails(cls, values: list[str]) -> list[str]:
        if not values:
            raise ValueError("at least one contact e-mail is required")
        bad = [value for value in values if not EMAIL_PATTERN.match(value)]
        if bad:
            raise ValueError(f"not an e-mail address: {', '.join(bad)}")
        unique: dict[str, str] = {}  # one mailbox listed twice (in any case) is one contact
        for value in values:
            unique.setdefault(value.lower(), value)
        return list(unique.values())

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value.strip())
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA timezone {value!r}") from None
        return value.strip()

    @model_validator(mode="after")
    def _unit_needs_days(self) -> Customer:
        if self.window_unit is not None and self.window_days is None:
            raise ValueError("window_unit given without window_days")
        return self

    @property
    def contract_unit(self) -> WindowUnit:
        return self.window_unit or WindowUnit.calendar


def parse_customers_csv(text: str, source: str = "CSV") -> list[Customer]:
    """Parse and validate every row; all problems are reported together, nothing half-imported."""
    try:
        return _parse_rows(csv.DictReader(io.StringIO(text, newline="")), source)
    except csv.Error as error:
        raise InputError(f"{source}: not valid CSV: {error}") from None


def _parse_rows(reader: csv.DictReader[str], source: str) -> list[Customer]:
    header = [name.strip() for name in reader.fieldnames or []]
    missing = [column for column in REQUIRED_COLUMNS if column not in header]
    unknown = [column for column in header if column not in CSV_COLUMNS]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing columns: {', '.join(missing)}")
        if unknown:
            parts.append(f"unknown columns: {', '.join(unknown)}")
        raise InputError(f"{source}: " + "; ".join(parts))
    customers: list[Customer] = []
    problems: list[str] = []
    seen: set[str] = set()
    for line, row in enumerate(reader, start=2):
        cleaned = {(key or "").strip(): (value or "").strip() for key, value in row.items()}
        if None in row:
            problems.append(f"line {line}: more fields than columns")
            continue
        try:
            customer = Customer.model_validate(cleaned)
        except ValidationError as error:
            problems.append(describe_validation_error(error, f"line {line}"))
            continue
        if customer.customer_id in seen:
            problems.append(f"line {line}: duplicate customer_id {customer.customer_id}")
        seen.add(customer.customer_id)
        customers.append(customer)
    if problems:
        raise InputError(f"{source}: " + " | ".join(problems))
    if not customers:
        raise InputError(f"{source}: no customer rows")
    return customers
