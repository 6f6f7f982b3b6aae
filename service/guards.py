"""Refuse at the edge what no route can take: NUL characters, and bodies over their limit.

Postgres text cannot hold NUL (``%00``), so a path id or filter carrying one would fail deep
inside a query; :class:`NulGuardMiddleware` answers 400 problem JSON before any route runs.
Text that arrives decoded (JSON strings, upload names) is checked with :func:`unstorable`
where it is parsed, so the 422 can name the field; it refuses lone surrogates too, which
JSON can spell (``"\\ud800"``) but no UTF-8 encoder can write. :func:`without_surrogates`
keeps rows stored before that check readable. :class:`BodyLimitMiddleware` refuses bodies
over ``max_body_bytes`` (or an upload's own limit) before or while they are read.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .problems import PROBLEM_MEDIA_TYPE

NUL_MARKERS = (b"%00", b"\x00")


def has_nul(raw: bytes) -> bool:
    """Whether a raw (still percent-encoded) path or query string encodes a NUL."""
    lowered = raw.lower()
    return any(marker in lowered for marker in NUL_MARKERS)


SURROGATES = re.compile("[\ud800-\udfff]")
"""Code points that are halves of a UTF-16 pair: in a decoded string they stand alone (a
whole pair decodes to one character), and no UTF-8 encoder can write them."""


def unstorable(text: str) -> str | None:
    """Why ``text`` cannot be stored or sent back (a NUL, a lone surrogate); None if it can."""
    if "\x00" in text:
        return "NUL characters are not allowed"
    if SURROGATES.search(text):
        return "lone surrogates (\\ud800-\\udfff) are not allowed: text must be valid Unicode"
    return None


def without_surrogates(value: Any) -> Any:
    """A JSON value with each lone surrogate replaced by U+FFFD (keys included)."""
    if isinstance(value, str):
        return SURROGATES.sub("\ufffd", value)
    if isinstance(value, dict):
        return {without_surrogates(key): without_surrogates(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_surrogates(item) for item in value]
    return value


class NulGuardMiddleware:
    """400 for requests whose path or query string contains a NUL character."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw_path = scope.get("raw_path") or scope["path"].encode()
            if has_nul(raw_path) or has_nul(scope.get("query_string", b"")):
                await _refuse(scope, send)
                return
        await self.app(scope, receive, send)


async def _refuse(scope: Scope, send: Send) -> None:
    body = json.dumps(
        {
            "type": "urn:noisefa:problem:nul-character",
            "title": "Bad Request",
            "status": 400,
            "detail": "NUL characters (%00) are not allowed in the path or query string",
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 400,
            "headers": [
                (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyTooLarge(StarletteHTTPException):
    """A request body over its limit (answered 413 by the problem handlers)."""

    def __init__(self, limit: int, setting: str = "max_body_bytes") -> None:
        super().__init__(413, f"request body over {setting} ({limit} bytes)")


class BodyLimitMiddleware:
    """Refuses bodies over the limit: by ``Content-Length`` up front, else while reading.

    ``large_bodies`` maps path prefixes that take files (dataset uploads) to their own
    ``(bytes, setting name)`` limit.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        large_bodies: dict[str, tuple[int, str]] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.large_bodies = large_bodies or {}

    def _limit(self, path: str) -> tuple[int, str]:
        for prefix, limit in self.large_bodies.items():
            if path.startswith(prefix):
                return limit
        return self.max_bytes, "max_body_bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes, setting = self._limit(scope["path"])
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > max_bytes:
            await self._refuse(scope, send, max_bytes, setting)
            return
        seen = 0

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_bytes:
                    raise BodyTooLarge(max_bytes, setting)
            return message

        await self.app(scope, counted_receive, send)

    async def _refuse(self, scope: Scope, send: Send, max_bytes: int, setting: str) -> None:
        body = json.dumps(
            {
                "type": "about:blank",
                "title": "Content Too Large",
                "status": 413,
                "detail": f"request body over {setting} ({max_bytes} bytes)",
                "instance": scope["path"],
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
