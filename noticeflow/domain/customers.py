"""Customers, their contacts and contract terms, as imported from CSV.

The file may come straight from Excel: a UTF-8 byte order mark and CRLF line ends are fine, and so
are the empty fields a trailing comma makes. Every bad row and field is reported at once, one line
per row, and nothing is imported until the whole file is valid.
"""

from __future__ import annotations

import csv
import functools
import io
import re
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from noticeflow.domain import language
from noticeflow.domain.deadlines import WindowUnit
from noticeflow.domain.errors import InputError, describe_problems, problems_of
from noticeflow.domain.files import read_text
from noticeflow.domain.rules import Authorisation
from noticeflow.domain.subscriptions import normalise_address
from noticeflow.domain.text import Identifier, SingleLine, control_character

CSV_COLUMNS = (
    "customer_id",
    "name",
    "region",
    "services",
    "contact_emails",
    "timezone",
    "window_days",
    "window_unit",
    "country",
    "language",
    "authorisation",
)
REQUIRED_COLUMNS = ("customer_id", "name", "region", "services", "contact_emails", "timezone")
CUSTOMERS_MAX_BYTES = 2_000_000_000  # ~13 million customers of ~150 bytes a row


def _split_list(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(";") if item.strip()]
    return value


def _blank_to_none(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


@functools.cache
def _holiday_countries() -> frozenset[str]:
    import holidays  # imported on first use: only an import with a country column needs it

    return frozenset(code for code in holidays.list_supported_countries() if len(code) == 2)


def _country(value: str | None) -> str | None:
    if value is None:
        return None
    code = value.strip().upper()
    if not re.fullmatch(r"[A-Z]{2}", code):
        raise PydanticCustomError(
            "country",
            "{value} is not an ISO 3166-1 alpha-2 country code such as US or DE",
            {"value": repr(value[:40])},
        )
    if code not in _holiday_countries():
        raise PydanticCustomError(
            "country", "no public holiday calendar for country {code}", {"code": code}
        )
    return code


def _language(value: object) -> object:
    """A blank cell is the default language (English); no such column (None) keeps what an
    earlier import stored."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return language.DEFAULT
    if isinstance(value, str):
        try:
            return language.canonical_tag(value)
        except ValueError as error:
            raise PydanticCustomError("language", "{problem}", {"problem": str(error)}) from None
    return value


def _authorisation(value: object) -> object:
    if value is None or (isinstance(value, str) and not value.strip()):
        return Authorisation.general
    if isinstance(value, str):
        word = value.strip().lower()
        if word not in set(Authorisation):
            raise PydanticCustomError(
                "authorisation",
                "{value} is not an authorisation mode; use general (silence is deemed"
                " acceptance), specific (silence is refusal) or dora (approve, object or"
                " request changes)",
                {"value": repr(value[:40])},
            )
        return word
    return value


SemicolonList = Annotated[list[SingleLine], BeforeValidator(_split_list)]
BlankIsNone = BeforeValidator(_blank_to_none)


class Customer(BaseModel):
    """One customer row. Contacts are personal data: they stay in PostgreSQL."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    customer_id: Identifier
    name: SingleLine
    region: SingleLine
    services: SemicolonList = Field(default_factory=list)
    contact_emails: SemicolonList
    timezone: str = "UTC"
    window_days: Annotated[int | None, BlankIsNone] = Field(default=None, ge=1, le=366)
    window_unit: Annotated[WindowUnit | None, BlankIsNone] = None
    country: Annotated[str | None, BlankIsNone, AfterValidator(_country)] = None  # holidays
    # The language the customer's mail is written in (noticeflow/domain/language.py): a blank
    # cell is English; no such column (None) keeps what an earlier import stored (English if none).
    language: Annotated[str | None, BeforeValidator(_language)] = None
    # What the customer's contract asks before a sub-processor is used for it: a blank cell is
    # general; no such column (None) keeps what an earlier import stored (general if none did).
    authorisation: Annotated[Authorisation | None, BeforeValidator(_authorisation)] = None

    @field_validator("contact_emails")
    @classmethod
    def _emails(cls, values: list[str]) -> list[str]:
        if not values:
            raise ValueError("at least one contact e-mail is required")
        bad, checked = [], []
        for typed in values:
            # Composed (NFC), as RFC 6532 has it: "josé" typed either way is one mailbox.
            value = unicodedata.normalize("NFC", typed.strip())
            address, problems = normalise_address(value, utf8_local=True)
            if address is None:  # an invisible or bidi character is shown escaped, not obeyed
                shown = value if value.isprintable() else ascii(value)
                bad.append(f"{shown} ({'; '.join(problems)})")
                continue
            # As written, but an internationalised domain in its IDNA2008 ASCII form, the form a
            # relay takes without SMTPUTF8 (bücher.example is xn--bcher-kva.example), and no
            # trailing dot.
            local, _, domain = value.rpartition("@")
            normal = address.rpartition("@")[2]
            checked.append(f"{local}@{domain if domain.lower() == normal else normal}")
        if bad:
            raise ValueError(f"not an e-mail address: {', '.join(bad)}")
        unique: dict[str, str] = {}  # one mailbox listed twice (in any case) is one contact
        for value in checked:
            unique.setdefault(value.lower(), value)
        return list(unique.values())

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be empty; give an IANA timezone such as Europe/Berlin")
        char = control_character(value)
        if char is not None:
            raise ValueError(f"contains a control character (U+{ord(char):04X})")
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA timezone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _unit_needs_days(self) -> Customer:
        if self.window_unit is not None and self.window_days is None:
            raise ValueError("window_unit given without window_days")
        return self

    @property
    def contract_unit(self) -> WindowUnit:
        return self.window_unit or WindowUnit.calendar


def read_customers_file(path: Path, refused: Mapping[str, str] | None = None) -> list[Customer]:
    """Read and validate a customers CSV file: UTF-8 (a byte order mark is fine), any line ends.
    ``refused``: ids that may not be imported, with why (told with the file's other problems)."""
    text = read_text(path, "CSV", CUSTOMERS_MAX_BYTES, "a million customers take about 150 MB")
    return parse_customers_csv(text, str(path), refused)


def parse_customers_csv(
    text: str, source: str = "CSV", refused: Mapping[str, str] | None = None
) -> list[Customer]:
    """Parse and validate every row; all problems are reported together, nothing half-imported."""
    text = text.removeprefix("\ufeff")  # Excel's "CSV UTF-8" starts with a byte order mark
    try:
        return _parse_rows(csv.reader(io.StringIO(text, newline="")), source, refused or {})
    except csv.Error as error:
        raise InputError(f"{source}: not valid CSV: {error}") from None


def _check_header(header: list[str], source: str) -> None:
    if not any(header):
        raise InputError(
            f"{source}: empty; the first line must name the columns: " + ",".join(CSV_COLUMNS)
        )
    missing = [column for column in REQUIRED_COLUMNS if column not in header]
    unknown = [column for column in header if column and column not in CSV_COLUMNS]
    repeated = sorted({column for column in header if column and header.count(column) > 1})
    parts = []
    if missing:
        parts.append(f"missing columns: {', '.join(missing)}")
    if unknown:
        parts.append(f"unknown columns: {', '.join(repr(c) if _odd(c) else c for c in unknown)}")
    if repeated:
        parts.append(f"columns named twice: {', '.join(repeated)}")
    if "" in header[: len(header) - _trailing_blanks(header)]:
        parts.append("a column without a name")
    if parts and len(header) == 1 and ";" in header[0]:
        parts.append("the file seems to use ';' between fields; save it with ',' (CSV UTF-8)")
    if parts:
        raise InputError(f"{source}: " + "; ".join(parts))


def _odd(column: str) -> bool:
    return control_character(column) is not None or len(column) > 40


def _trailing_blanks(cells: list[str]) -> int:
    count = 0
    for cell in reversed(cells):
        if cell.strip():
            break
        count += 1
    return count


def _parse_rows(reader: Any, source: str, refused: Mapping[str, str]) -> list[Customer]:
    header = [name.strip() for name in next(reader, [])]
    _check_header(header, source)
    width = len(header) - _trailing_blanks(header)  # a trailing comma in the header adds nothing
    header = header[:width]
    customers: list[Customer] = []
    problems: list[str] = []
    seen: dict[str, str] = {}
    end = reader.line_num
    for cells in reader:
        start, end = end + 1, reader.line_num
        where = f"line {start}" if start == end else f"lines {start}-{end}"
        if not any(cell.strip() for cell in cells):
            continue  # blank lines, and the ",,,,," rows spreadsheets leave behind
        extra = cells[width:]
        if any(cell.strip() for cell in extra):
            used = width + len(extra) - _trailing_blanks(extra)
            problems.append(f"{where}: more fields ({used}) than columns ({width})")
            continue
        row = {column: cell.strip() for column, cell in zip(header, cells, strict=False)}
        try:
            customer = Customer.model_validate(row)
        except ValidationError as error:
            problems.append(f"{where}: " + "; ".join(problems_of(error)))
            continue
        if customer.customer_id in seen:
            problems.append(
                f"{where}: duplicate customer_id {customer.customer_id}"
                f" (first on {seen[customer.customer_id]})"
            )
            continue
        seen[customer.customer_id] = where
        if customer.customer_id in refused:
            problems.append(
                f"{where}: customer {customer.customer_id} {refused[customer.customer_id]}"
            )
            continue
        customers.append(customer)
    if problems:
        raise InputError(describe_problems(source, problems))
    if not customers:
        raise InputError(f"{source}: no customer rows")
    return customers
