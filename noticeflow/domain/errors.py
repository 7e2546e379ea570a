"""How validation errors are worded for people: one line per problem, every problem listed."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the CLI's help imports this module and no pydantic
    from pydantic import ValidationError

# pydantic prefixes the messages of plain ValueError/AssertionError raised in validators
_PREFIXES = ("Value error, ", "Assertion failed, ")


class InputError(ValueError):
    """Bad input from a person or a file; the message says exactly what is wrong."""


def problems_of(error: ValidationError) -> list[str]:
    """One ``location: message`` string per problem, in pydantic's order."""
    problems = []
    for item in error.errors():
        location = _location(item["loc"])
        message = item["msg"]
        for prefix in _PREFIXES:
            message = message.removeprefix(prefix)
        if item["type"] == "missing":
            message = "missing"
        elif item["type"] == "extra_forbidden":
            message = "unknown field"
        elif item["type"] == "timezone_aware":
            message = "needs a timezone offset, e.g. 2023-10-18T00:00:00Z"
        problems.append(f"{location}: {message}" if location else message)
    return problems


def _location(loc: tuple[int | str, ...]) -> str:
    """``("data_categories", 1)`` reads ``data_categories item 2``: people count from one."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f" item {part + 1}"
        else:
            text += f".{part}" if text else part
    return text


def describe_problems(what: str, problems: list[str]) -> str:
    """One problem: one line. Several: a block, a headline and one indented line per problem."""
    if len(problems) == 1:
        return f"{what}: {problems[0]}"
    return f"{what} ({len(problems)} problems):\n" + "\n".join(f"  {p}" for p in problems)


def describe_validation_error(error: ValidationError, what: str) -> str:
    return describe_problems(what, problems_of(error))
