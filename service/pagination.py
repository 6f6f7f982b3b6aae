"""Opaque cursor tokens: the sort key of the last item of a page, as URL-safe base64 JSON."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any


class BadPageToken(ValueError):
    """A ``page_token`` that this API did not issue."""


def encode_token(*values: Any) -> str:
    """A token for a cursor position (JSON-able values)."""
    raw = json.dumps(list(values), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, arity: int) -> list[Any]:
    """The values of a token made by :func:`encode_token` with ``arity`` values."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        values = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError) as error:
        raise BadPageToken("page_token: not a token this API issued") from error
    if not isinstance(values, list) or len(values) != arity:
        raise BadPageToken("page_token: not a token this API issued")
    return values
