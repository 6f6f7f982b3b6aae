"""Building pydantic ``ValidationError``s that name a field path, for checks that span fields."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError


def value_error_line(loc: tuple[Any, ...], value: Any, message: str) -> dict[str, Any]:
    return {"type": "value_error", "loc": loc, "input": value, "ctx": {"error": message}}


def field_error(loc: tuple[Any, ...], value: Any, message: str) -> ValidationError:
    return ValidationError.from_exception_data("JobSpec", [value_error_line(loc, value, message)])


def relocate(error: dict[str, Any], prefix: tuple[Any, ...]) -> dict[str, Any]:
    """A child's error dict moved under ``prefix`` (fit for ``from_exception_data``)."""
    line = {"type": error["type"], "loc": (*prefix, *error["loc"]), "input": error["input"]}
    if "ctx" in error:
        line["ctx"] = error["ctx"]
    return line
