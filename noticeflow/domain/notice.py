"""The notice file (TOML) and its completeness rule (product rule 1)."""

from __future__ import annotations

import hashlib
import re
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from noticeflow.domain.errors import InputError, describe_validation_error

SLUG_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


def _non_empty_items(values: list[str]) -> list[str]:
    cleaned = [value.strip() for value in values if value.strip()]
    if not cleaned:
        raise ValueError("must list at least one item")
    return cleaned


NonEmptyList = Annotated[list[str], AfterValidator(_non_empty_items)]


class Audience(BaseModel):
    """Attribute filters selecting the customers a notice goes to; empty means everyone."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    regions: list[str] = Field(default_factory=list)
    services: list[str] = Field(default_factory=list)
    customers: list[str] = Field(default_factory=list)

    def selects(self, region: str, services: list[str], customer_id: str) -> bool:
        if self.customers and customer_id not in self.customers:
            return False
        if self.regions and region not in self.regions:
            return False
        return not self.services or bool(set(self.services) & set(services))


class NoticeSpec(BaseModel):
    """Everything a sub-processor notice must say. No personal data lives here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    notice_id: Slug
    title: Text
    subprocessor: Text
    subprocessor_location: Text
    purpose: Text
    data_categories: NonEmptyList
    services: NonEmptyList
    transfer_mechanism: Text
    opt_in: bool = False
    objection_window: timedelta = timedelta(days=21)
    effective_at: AwareDatetime
    audience: Audience = Field(default_factory=Audience)
    reminder_before: timedelta | None = (
        None  # remind customers who have not acted, this long before
    )
    how_to_object: Text = (
        "Use the personal link in this message, or reply to it, before your deadline."
    )
    body: str = ""

    @field_validator("objection_window", "reminder_before")
    @classmethod
    def _positive(cls, value: timedelta | None) -> timedelta | None:
        if value is None:
            return value
        if value <= timedelta(0):
            raise ValueError("must be a positive ISO 8601 duration such as P21D or PT2M")
        return value

    @model_validator(mode="before")
    @classmethod
    def _derive_id(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("notice_id"):
            data = dict(data)
            data["notice_id"] = derive_notice_id(data.get("subprocessor"), data.get("effective_at"))
        return data

    def text(self) -> str:
        """The exact notice text: what is mailed (around the personal parts) and hashed as evidence."""
        from noticeflow.domain.render import render_notice_text

        return render_notice_text(self)

    def text_sha256(self) -> str:
        return hashlib.sha256(self.text().encode()).hexdigest()


def derive_notice_id(subprocessor: object, effective_at: object) -> str:
    name = re.sub(r"[^a-z0-9]+", "-", str(subprocessor or "notice").lower()).strip("-") or "notice"
    day = str(effective_at or "")[:10]
    return f"{name[:40]}-{day}".strip("-") if day else name[:40]


def parse_notice(data: dict[str, Any], source: str = "notice") -> NoticeSpec:
    try:
        return NoticeSpec.model_validate(data)
    except ValidationError as error:
        raise InputError(
            describe_validation_error(error, f"{source} is incomplete or invalid")
        ) from None


def load_notice_file(path: Path) -> NoticeSpec:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as error:
        raise InputError(f"{path}: not valid TOML: {error}") from None
    return parse_notice(data, str(path))
