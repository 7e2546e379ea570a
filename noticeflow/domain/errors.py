"""How validation errors are worded for people: one line per problem, every problem listed."""

from __future__ import annotations

from pydantic import ValidationError


class InputError(ValueError):
    """Bad input from a person or a file; the message says exactly what is wrong."""


def describe_validation_error(error: ValidationError, what: str) -> str:
    problems = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"]) or "(root)"
        message = item["msg"]
        if item["type"] == "missing":
            message = "missing"
        elif item["type"] == "timezone_aware":
            message = "needs a timezone offset, e.g. 2023-10-18T00:00:00Z"
        problems.append(f"{location}: {message}")
    return f"{what}: " + "; ".join(problems)
