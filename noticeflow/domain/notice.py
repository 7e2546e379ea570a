"""The notice file (TOML) and its completeness rule (product rule 1)."""

from __future__ import annotations

import difflib
import hashlib
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from noticeflow.domain.errors import InputError, describe_validation_error
from noticeflow.domain.files import read_toml
from noticeflow.domain.rules import ChangeKind
from noticeflow.domain.text import SLUG_PATTERN as SLUG_PATTERN
from noticeflow.domain.text import Identifier, SingleLine, free_text, single_line

Slug = Identifier

MIN_WINDOW = timedelta(minutes=1)
DEFAULT_WINDOW = timedelta(days=21)
WRITTEN = "written_by_a_person"  # validation context: which fields were given is meaningful
MAX_WINDOW = timedelta(days=366)
EARLIEST_EFFECTIVE = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_EFFECTIVE = datetime(2101, 1, 1, tzinfo=UTC)  # the end of 2100

# --- ISO 8601 durations -------------------------------------------------------------------------
#
# People write P21D, PT2M, P3W or P1DT12H. A bare number is refused: pydantic would read 21 as 21
# seconds. Years and months are refused in anything a person hands us (is P1M 28, 30 or 31 days?);
# JSON we wrote ourselves still reads P1Y as 365 days, because pydantic's own serialiser wrote
# 365 days that way before `iso_duration` (below) took over.

_DURATION = re.compile(
    r"P(?!$)(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:[.,]\d+)?)S)?)?"
)
_EXAMPLES = "such as P21D or PT2M"
_SECONDS_PER = {
    "years": 365 * 86400,
    "months": 30 * 86400,
    "weeks": 7 * 86400,
    "days": 86400,
    "hours": 3600,
    "minutes": 60,
}
_LONGEST = Decimal(999_999_000 * 86400)  # about timedelta.max: longer would overflow


def _duration_error(message: str, **context: Any) -> PydanticCustomError:
    return PydanticCustomError("iso_duration", message, context)


def parse_duration(value: Any, info: ValidationInfo) -> Any:
    """An ISO 8601 duration string as a timedelta; timedeltas pass; everything else is refused."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise _duration_error(f"must be an ISO 8601 duration {_EXAMPLES}")
    text = value.strip().upper() if isinstance(value, str) else ""
    if not isinstance(value, str) or re.fullmatch(r"[+-]?\d+(?:[.,]\d+)?", text):
        raise _duration_error(f"must be an ISO 8601 duration {_EXAMPLES}, not a bare number")
    if text.startswith("-"):
        raise _duration_error("must be positive")
    match = _DURATION.fullmatch(text)
    if not match:
        raise _duration_error(
            "{value} is not an ISO 8601 duration; write one " + _EXAMPLES + " (or P3W, P1DT12H)",
            value=repr(value[:40]),
        )
    parts = match.groupdict()
    if (parts["years"] or parts["months"]) and info.mode != "json":
        raise _duration_error(
            "years and months are not a fixed length; give days instead, e.g. P30D or P365D"
        )
    seconds = Decimal(0)
    for name, count in parts.items():
        if count is None:
            continue
        seconds += Decimal(count.replace(",", ".")) * _SECONDS_PER.get(name, 1)
    if seconds > _LONGEST:
        raise _duration_error("is far too long")
    return timedelta(seconds=float(seconds)) if seconds % 1 else timedelta(seconds=int(seconds))


def iso_duration(value: timedelta) -> str:
    """ISO 8601 without years or months (P21D, PT2M, P1DT12H), which `parse_duration` reads back."""
    if value < timedelta(0):
        return "-" + iso_duration(-value)
    days, seconds, micro = value.days, value.seconds, value.microseconds
    hours, rest = divmod(seconds, 3600)
    minutes, whole = divmod(rest, 60)
    clock = ""
    if hours:
        clock += f"{hours}H"
    if minutes:
        clock += f"{minutes}M"
    if whole or micro:
        clock += f"{whole}.{micro:06d}".rstrip("0").rstrip(".") + "S"
    if not days and not clock:
        return "PT0S"
    return "P" + (f"{days}D" if days else "") + (f"T{clock}" if clock else "")


def _window_bounds(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise _duration_error("must be positive")
    if value < MIN_WINDOW:
        raise _duration_error(
            "must be at least PT1M (one minute), not {value}", value=iso_duration(value)
        )
    if value > MAX_WINDOW:
        raise _duration_error("must be at most P366D, not {value}", value=iso_duration(value))
    return value


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise _duration_error("must be positive")
    return value


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(iso_duration, return_type=str, when_used="json"),
]
ObjectionWindow = Annotated[Duration, AfterValidator(_window_bounds)]
PositiveDuration = Annotated[Duration, AfterValidator(_positive)]


def effective_bounds(value: datetime) -> datetime:
    if not EARLIEST_EFFECTIVE <= value < LATEST_EFFECTIVE:
        raise PydanticCustomError(
            "date_range", "must be between 2000 and 2100, not {value}", {"value": value.isoformat()}
        )
    return value


# --- the notice ---------------------------------------------------------------------------------


def _drop_blank_items(values: Any) -> Any:
    if isinstance(values, list | tuple):
        return [value for value in values if not (isinstance(value, str) and not value.strip())]
    return values


def _at_least_one(values: list[str]) -> list[str]:
    if not values:
        raise PydanticCustomError("empty_list", "must list at least one item")
    return values


NonEmptyList = Annotated[
    list[SingleLine], BeforeValidator(_drop_blank_items), AfterValidator(_at_least_one)
]


class Audience(BaseModel):
    """Attribute filters selecting the customers a notice goes to; empty means everyone."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    regions: Annotated[list[SingleLine], BeforeValidator(_drop_blank_items)] = Field(
        default_factory=list
    )
    services: Annotated[list[SingleLine], BeforeValidator(_drop_blank_items)] = Field(
        default_factory=list
    )
    customers: Annotated[list[Identifier], BeforeValidator(_drop_blank_items)] = Field(
        default_factory=list
    )

    def selects(self, region: str, services: list[str], customer_id: str) -> bool:
        if self.customers and customer_id not in self.customers:
            return False
        if self.regions and region not in self.regions:
            return False
        return not self.services or bool(set(self.services) & set(services))


# Our words when a notice has no "how to object" of its own (part of the English text of record;
# a translation writes the catalogue's "notice.how_to_object_default" instead).
DEFAULT_HOW_TO_OBJECT = (
    "Use the personal link in this message, or reply to it, before your deadline."
)


class NoticeSpec(BaseModel):
    """Everything a sub-processor notice must say. No personal data lives here.

    The one-line fields end up in mail headers (the title is the Subject) and one-line displays, so
    they refuse line breaks and control characters; body and how_to_object may span lines.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    notice_id: Slug
    # What the notice changes (addition when absent: every notice before change kinds was one).
    kind: ChangeKind = ChangeKind.addition
    title: SingleLine
    subprocessor: SingleLine
    subprocessor_location: Annotated[str, single_line(500)]
    purpose: Annotated[str, single_line(2000)]
    data_categories: NonEmptyList
    services: NonEmptyList
    transfer_mechanism: Annotated[str, single_line(1000)]
    opt_in: bool = False
    objection_window: ObjectionWindow = DEFAULT_WINDOW
    effective_at: Annotated[AwareDatetime, AfterValidator(effective_bounds)]
    audience: Audience = Field(default_factory=Audience)
    # remind customers who have not acted, this long before their deadline
    reminder_before: PositiveDuration | None = None
    how_to_object: Annotated[str, free_text(20_000)] = DEFAULT_HOW_TO_OBJECT
    body: Annotated[str, free_text(100_000, allow_empty=True)] = ""
    # replacement: the sub-processor the new one replaces (switched off per customer as the new
    # one is switched on).
    replaces: SingleLine | None = None
    # material_change: each changed field's previous value (the notice's own field is the new).
    previous: dict[str, str | list[str]] = Field(default_factory=dict)

    @field_validator("kind", mode="before")
    @classmethod
    def _known_kind(cls, value: Any) -> Any:
        allowed = [kind.value for kind in ChangeKind]
        if isinstance(value, str) and value.strip() in allowed:
            return value.strip()
        if isinstance(value, ChangeKind):
            return value
        close = difflib.get_close_matches(str(value), allowed, n=1)
        raise PydanticCustomError(
            "change_kind",
            "{value} is not a kind of change{hint}; use one of " + ", ".join(allowed),
            {"value": repr(value), "hint": f" (did you mean {close[0]!r}?)" if close else ""},
        )

    @field_validator("previous", mode="before")
    @classmethod
    def _previous_values(cls, value: Any, info: ValidationInfo) -> Any:
        """Each previous value checked as its field is (a list for data_categories and services,
        one line otherwise), and different from the notice's own (new) value."""
        if not isinstance(value, dict):
            return value
        checked: dict[str, Any] = {}
        problems: list[InitErrorDetails] = []
        for name, old in value.items():
            if name not in CHANGEABLE:
                problems.append(_problem(
                    (str(name),), old, "unknown_change",
                    "not a field a material change can change; give the previous value of "
                    + ", ".join(CHANGEABLE),
                ))  # fmt: skip
                continue
            try:
                checked[name] = _changeable_adapter(name).validate_python(old)
            except ValidationError as error:
                problems += [
                    _problem((name, *item["loc"]), item["input"], item["type"],
                             _TYPE_WORDS.get(item["type"], item["msg"]).format(name=name))
                    for item in error.errors()
                ]  # fmt: skip
                continue
            if name in info.data and _same(checked[name], info.data[name]):
                problems.append(_problem(
                    (name,), old, "unchanged",
                    f"the same as the notice's {name}; list only the fields that change",
                ))  # fmt: skip
        if problems:
            raise ValidationError.from_exception_data("previous", problems)
        return checked

    @model_validator(mode="wrap")
    @classmethod
    def _kind_rules(
        cls, data: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> Any:
        """What each kind of change may and must say (every problem listed with the fields')."""
        if not isinstance(data, dict):
            return handler(data)
        spec: NoticeSpec | None = None
        failed: ValidationError | None = None
        try:
            spec = handler(data)
        except ValidationError as error:
            failed = error
        written = bool(info.context and info.context.get(WRITTEN))
        problems = kind_problems(data, spec, written)
        if not problems:
            if failed is not None:
                raise failed
            return spec
        earlier = [
            _problem(item["loc"], item["input"], item["type"], item["msg"])
            for item in (failed.errors() if failed is not None else [])
        ]
        raise ValidationError.from_exception_data(cls.__name__, earlier + problems)

    @field_validator("reminder_before")
    @classmethod
    def _reminder_inside_window(
        cls, value: timedelta | None, info: ValidationInfo
    ) -> timedelta | None:
        window = info.data.get("objection_window")
        if value is not None and isinstance(window, timedelta) and value >= window:
            raise PydanticCustomError(
                "reminder_too_early",
                "must be shorter than objection_window ({window}), not {value}",
                {"window": iso_duration(window), "value": iso_duration(value)},
            )
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


# --- what each kind of change says ---------------------------------------------------------------

# The fields a material change may change (their previous values in ``previous``).
CHANGEABLE = (
    "subprocessor_location",
    "purpose",
    "transfer_mechanism",
    "data_categories",
    "services",
)
_ADAPTERS: dict[str, TypeAdapter[Any]] = {}
_TYPE_WORDS = {
    "string_type": "must be one text (as the notice's {name})",
    "list_type": "must be a list (as the notice's {name})",
}


def _changeable_adapter(name: str) -> TypeAdapter[Any]:
    """The validator of one changeable field (its type and checks), for its previous value."""
    if name not in _ADAPTERS:
        info = NoticeSpec.model_fields[name]
        _ADAPTERS[name] = TypeAdapter(Annotated[info.annotation, *info.metadata])  # type: ignore[arg-type]
    return _ADAPTERS[name]


def _same(old: Any, new: Any) -> bool:
    if isinstance(old, list) and isinstance(new, list):
        return [str(v).casefold() for v in old] == [str(v).casefold() for v in new]
    return str(old).strip().casefold() == str(new).strip().casefold()


def _problem(loc: tuple[int | str, ...], value: Any, kind: str, message: str) -> InitErrorDetails:
    # The message is already worded: no context, so braces in it stay as written.
    return InitErrorDetails(type=PydanticCustomError(kind, message), loc=loc, input=value)


def _given(data: dict[str, Any], name: str) -> bool:
    value = data.get(name)
    # A blank string counts as given: its own check says "must not be empty" (once).
    return name in data and value is not None and value != {}


def kind_problems(
    data: dict[str, Any], spec: NoticeSpec | None, written: bool = True
) -> list[InitErrorDetails]:
    """The fields a notice of its ``kind`` may not give or must give (``data``: as written, for
    which fields were given; ``spec``: the validated notice, when the rest is valid).

    ``written``: a person wrote ``data`` (``parse_notice``), so a field given is one they gave.
    Otherwise it is our own serialised notice (an event, a workflow's input), which carries every
    field: a removal's window then counts as given only when it is not the default."""
    try:
        kind = ChangeKind(data.get("kind", ChangeKind.addition))
    except ValueError:
        return []  # the kind's own error lists the allowed values
    found: list[InitErrorDetails] = []

    def refuse(name: str, why: str) -> None:
        if _given(data, name):
            found.append(_problem((name,), data.get(name), "kind_rule", why))

    only_replacement = 'only a replacement (kind = "replacement") names the one it replaces'
    only_material = 'only a material change (kind = "material_change") gives previous values'
    if kind is not ChangeKind.replacement:
        refuse("replaces", only_replacement)
    if kind is not ChangeKind.material_change:
        refuse("previous", only_material)
    if kind is ChangeKind.replacement:
        replaces = data.get("replaces")
        if not _given(data, "replaces"):
            found.append(_problem(
                ("replaces",), replaces, "missing_for_kind",
                "missing: a replacement names the sub-processor it replaces",
            ))  # fmt: skip
        elif (
            isinstance(replaces, str)
            and replaces.strip().casefold() == str(data.get("subprocessor", "")).strip().casefold()
        ):
            found.append(_problem(
                ("replaces",), replaces, "kind_rule",
                "names the new sub-processor itself; a replacement replaces another one",
            ))  # fmt: skip
    elif kind is ChangeKind.removal:
        informational = "a removal is informational: it has no objection window"
        if data.get("opt_in") is True or (spec is not None and spec.opt_in):
            found.append(_problem(
                ("opt_in",), data.get("opt_in"), "kind_rule",
                f"{informational}, and nobody opts in to it",
            ))  # fmt: skip
        if written:
            refuse("objection_window", informational)
        elif spec is not None and spec.objection_window != DEFAULT_WINDOW:
            found.append(
                _problem(("objection_window",), data.get("objection_window"), "kind_rule",
                         informational)
            )  # fmt: skip
        refuse("reminder_before", f"{informational}, so no reminders")
    elif kind is ChangeKind.material_change and not _given(data, "previous"):
        found.append(_problem(
            ("previous",), data.get("previous"), "missing_for_kind",
            "missing: a material change gives each changed field's previous value, e.g."
            ' previous = { subprocessor_location = "Ireland" }; it may change '
            + ", ".join(CHANGEABLE),
        ))  # fmt: skip
    return found


def derive_notice_id(subprocessor: object, effective_at: object) -> str:
    name = re.sub(r"[^a-z0-9]+", "-", str(subprocessor or "notice").lower()).strip("-") or "notice"
    day = str(effective_at or "")[:10]
    return f"{name[:40]}-{day}".strip("-") if day else name[:40]


def parse_notice(data: dict[str, Any], source: str = "notice") -> NoticeSpec:
    """Validate a notice from a person (a TOML file, a form); every problem is listed at once."""
    if not isinstance(data, dict):
        raise InputError(f"{source}: expected a table of notice fields")
    try:
        return NoticeSpec.model_validate(data, context={WRITTEN: True})
    except ValidationError as error:
        raise InputError(
            describe_validation_error(error, f"{source} is incomplete or invalid")
        ) from None


NOTICE_MAX_BYTES = 1_000_000  # a notice's words and details: a few kB


def load_notice_file(path: Path) -> NoticeSpec:
    """Read a notice TOML file (UTF-8, a byte order mark is fine); bad input is one clear line."""
    data = read_toml(path, "notice", NOTICE_MAX_BYTES, "a notice file is a few kB")
    return parse_notice(data, str(path))
