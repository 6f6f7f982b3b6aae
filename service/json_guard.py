"""Refuse a JSON body that is not JSON, means two things, or holds text no column can store.

FastAPI reads a body with plain ``json.loads``, which keeps the last of two equal keys (so
``{"epochs": 1, "epochs": 1000}`` is validated as one value while a proxy or log may read
the other) and decodes ``"\\ud800"`` to a lone surrogate (Postgres refuses it; SQLite stores
it, and then no response holding the row can be encoded). A body sent as ``text/plain``
reaches the route as bytes. :func:`check_json_body`, a dependency of every route, runs after
the body is read and before it is validated: 415 for a media type that is not JSON (a body
without one is read as JSON), and a 422 naming the first duplicate key, NUL or lone
surrogate by its path (``pretrain.dataset``).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request, params
from fastapi.routing import APIRoute

from .guards import unstorable, without_surrogates
from .problems import FieldError, ProblemError, dotted, invalid_request

JSON_MEDIA_TYPE = "application/json"

Location = tuple[str | int, ...]


class _ParsedObject(dict[str, Any]):
    """A JSON object as parsed here, remembering the first key it held twice."""

    duplicate: str | None = None


def _parsed_object(pairs: list[tuple[str, Any]]) -> _ParsedObject:
    parsed = _ParsedObject()
    for key, value in pairs:
        if key in parsed and parsed.duplicate is None:
            parsed.duplicate = key
        parsed[key] = value
    return parsed


def first_refusal(value: Any, loc: Location = ()) -> tuple[Location, str] | None:
    """Where and why a value parsed by :func:`parse_json` is refused; None when it is not."""
    if isinstance(value, str):
        reason = unstorable(value)
        return (loc, reason) if reason else None
    if isinstance(value, _ParsedObject):
        if value.duplicate is not None:
            return (*loc, value.duplicate), "duplicate key: each key may appear once"
        for key, item in value.items():
            reason = unstorable(key)
            if reason:
                return (*loc, key), f"key: {reason}"
            found = first_refusal(item, (*loc, key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = first_refusal(item, (*loc, index))
            if found is not None:
                return found
    return None


def parse_json(raw: bytes) -> Any:
    """``raw`` as JSON, each object remembering a duplicate key (``json.loads`` errors)."""
    return json.loads(raw, object_pairs_hook=_parsed_object)


def is_json_media_type(content_type: str | None) -> bool:
    """``application/json`` or ``application/*+json`` (parameters aside), as FastAPI reads,
    or none at all (the app reads such a body as JSON)."""
    if content_type is None:
        return True
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == JSON_MEDIA_TYPE or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


async def check_json_body(request: Request) -> None:
    """415 or 422 (naming the field) for a body a JSON route must not take."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or route.body_field is None:
        return
    if isinstance(route.body_field.field_info, params.Form):
        return
    raw = await request.body()  # read (and kept) by FastAPI already
    if not raw:
        return  # a missing body is the route's validation error
    content_type = request.headers.get("content-type")
    if not is_json_media_type(content_type):
        message = f"must be {JSON_MEDIA_TYPE}, got {content_type}"
        raise ProblemError(
            415,
            f"Content-Type: {message}",
            slug="unsupported-media-type",
            errors=[FieldError(field="Content-Type", message=message)],
        )
    # FastAPI parsed these bytes with json.loads already; they are JSON.
    found = first_refusal(parse_json(raw))
    if found is not None:
        loc, reason = found
        field = without_surrogates(dotted(loc)) or "body"
        raise invalid_request([FieldError(field=field, message=reason)])
