"""Reusable string types for everything a person or a file hands us (pydantic ``Annotated`` types).

Use these instead of a bare ``str`` for any text that crosses an entry point (TOML, CSV, signals, CLI,
web). Each one strips surrounding whitespace, refuses the empty string and names the exact problem in
a short message (no regex dump), e.g. ``contains a line break or control character (U+000D); must be
one line``. The names below are a stable interface: other modules import them.

``SingleLine`` / ``Annotated[str, single_line(max_length)]``
    One line of text: anything that can end up in a mail header or a one-line display (titles,
    names, the sub-processor, regions, services, who/by fields). Refuses every control character:
    C0 (including CR, LF and TAB), DEL, C1, and the Unicode line/paragraph separators U+2028/U+2029.
    ``SingleLine`` allows at most 200 characters. ``single_line(n)`` is the same check with max n;
    it returns the pydantic marker, so the type reads ``Annotated[str, single_line(2000)]`` (a form
    mypy accepts as a type, which a type returned from a function call would not be).

``FreeText`` / ``Annotated[str, free_text(max_length, allow_empty=False)]``
    Multi-line prose (notice body, how to object, objection reasons, notes). Line breaks (LF, CR,
    U+2028, U+2029) and TAB are kept; NUL and the other C0 controls, DEL and C1 are refused.
    ``FreeText`` allows up to 100,000 characters, so a long reason is kept whole, never cut.
    ``free_text(n, allow_empty=True)`` makes an optional text whose blank value is ``""``.

``Identifier``
    A customer or notice id: a lowercase slug (``SLUG_PATTERN``: a-z, 0-9, ``.``, ``_``, ``-``,
    starting with a letter or digit, at most 63 characters). A control character is named as such
    (``contains a control character (U+0000)``), anything else gets the rule in words.

``control_character(text, allowed="")``
    The first control character in ``text`` that is not in ``allowed``, or ``None``; for hand-written
    checks that want the same definition.

Errors are raised as ``PydanticCustomError``, so pydantic's message is exactly ours (no "Value
error," prefix); ``noticeflow.domain.errors.describe_validation_error`` turns them into one line.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from typing import Annotated

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

SLUG_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
SINGLE_LINE_MAX = 200
FREE_TEXT_MAX = 100_000

_SLUG = re.compile(SLUG_PATTERN)
_LINE_SEPARATORS = frozenset("\u2028\u2029")
_LINE_BREAKS = frozenset("\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


def control_character(text: str, allowed: str = "") -> str | None:
    """The first control character (C0, DEL, C1, U+2028, U+2029) of ``text`` not in ``allowed``."""
    for char in text:
        if char in allowed:
            continue
        if char in _LINE_SEPARATORS or unicodedata.category(char) == "Cc":
            return char
    return None


def _code(char: str) -> str:
    return f"U+{ord(char):04X}"


def _too_long(length: int, max_length: int) -> PydanticCustomError:
    return PydanticCustomError(
        "too_long",
        "is too long: {length} characters, at most {max_length}",
        {"length": length, "max_length": max_length},
    )


def _utf8(value: str) -> None:
    """Text that came from bytes that are not UTF-8 (a shell argument decoded with
    surrogateescape holds each such byte as a lone surrogate) is refused, naming the byte."""
    for char in value:
        if "\ud800" <= char <= "\udfff":
            code = ord(char)
            byte = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else _code(char)
            raise PydanticCustomError(
                "utf8", "is not valid UTF-8 text ({byte}); use UTF-8", {"byte": byte}
            )


def _empty() -> PydanticCustomError:
    return PydanticCustomError("empty", "must not be empty")


def _check_single_line(max_length: int) -> Callable[[str], str]:
    def check(value: str) -> str:
        _utf8(value)
        value = value.strip()
        if not value:
            raise _empty()
        char = control_character(value)
        if char is not None and (char in _LINE_BREAKS or char == "\t"):
            raise PydanticCustomError(
                "single_line",
                "contains a line break or control character ({code}); must be one line",
                {"code": _code(char)},
            )
        if char is not None:
            raise PydanticCustomError(
                "control_character", "contains a control character ({code})", {"code": _code(char)}
            )
        if len(value) > max_length:
            raise _too_long(len(value), max_length)
        return value

    return check


def _check_free_text(max_length: int, allow_empty: bool) -> Callable[[str], str]:
    def check(value: str) -> str:
        _utf8(value)
        value = value.strip()
        if not value and not allow_empty:
            raise _empty()
        char = control_character(value, allowed="\t\n\r\u2028\u2029")
        if char is not None:
            raise PydanticCustomError(
                "control_character",
                "contains a control character ({code})",
                {"code": _code(char)},
            )
        if len(value) > max_length:
            raise _too_long(len(value), max_length)
        return value

    return check


def _check_identifier(value: str) -> str:
    _utf8(value)
    value = value.strip()
    if not value:
        raise _empty()
    char = control_character(value)
    if char is not None:
        raise PydanticCustomError(
            "control_character", "contains a control character ({code})", {"code": _code(char)}
        )
    if not _SLUG.match(value):
        shown = value if len(value) <= 40 else value[:40] + "…"
        raise PydanticCustomError(
            "identifier",
            "{value} is not an id: use a-z, 0-9, '.', '_' or '-', start with a letter or digit,"
            " at most 63 characters",
            {"value": repr(shown)},
        )
    return value


def single_line(max_length: int = SINGLE_LINE_MAX) -> AfterValidator:
    """The ``SingleLine`` check with at most ``max_length`` characters: ``Annotated[str, single_line(n)]``."""
    return AfterValidator(_check_single_line(max_length))


def free_text(max_length: int = FREE_TEXT_MAX, *, allow_empty: bool = False) -> AfterValidator:
    """The ``FreeText`` check with at most ``max_length`` characters: ``Annotated[str, free_text(n)]``."""
    return AfterValidator(_check_free_text(max_length, allow_empty))


SingleLine = Annotated[str, single_line(SINGLE_LINE_MAX)]
FreeText = Annotated[str, free_text(FREE_TEXT_MAX)]
Identifier = Annotated[str, AfterValidator(_check_identifier)]
