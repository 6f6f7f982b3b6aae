"""Refuse at the edge what no route can take: NUL characters in the path or query string.

Postgres text cannot hold NUL (``%00``), so a path id or filter carrying one would fail deep
inside a query; this answers 400 problem JSON before any route runs. (Bodies are checked by
the routes that read them, which can name the field.)
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from .problems import PROBLEM_MEDIA_TYPE

NUL_MARKERS = (b"%00", b"\x00")


def has_nul(raw: bytes) -> bool:
    """Whether a raw (still percent-encoded) path or query string encodes a NUL."""
    lowered = raw.lower()
    return any(marker in lowered for marker in NUL_MARKERS)


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
