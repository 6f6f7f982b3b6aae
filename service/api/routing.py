"""Routes whose database connection goes back to the pool as soon as the endpoint returns.

FastAPI runs a sync endpoint in a threadpool step, then validates and serializes its return
value in *another* threadpool step, and closes the request's session after that. A request
between those steps holds a pooled connection while it waits for a thread; with every
thread waiting for a connection, the API deadlocks under a burst of requests (until the
pool times out). Closing the endpoint's session when the endpoint returns — what the
session's teardown would do anyway, only earlier — means a connection is only ever held by
code that is running. The session stays usable: a later query checks a connection out again.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from fastapi.routing import APIRoute
from sqlalchemy.orm import Session


def _closing_sessions(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """``endpoint`` that closes any :class:`Session` argument when it returns or raises."""
    if inspect.iscoroutinefunction(endpoint):
        return endpoint  # runs on the event loop: no threadpool step in between

    @functools.wraps(endpoint)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return endpoint(*args, **kwargs)
        finally:
            for value in kwargs.values():
                if isinstance(value, Session):
                    value.close()

    return run


class SessionReleasingRoute(APIRoute):
    """An :class:`APIRoute` whose sync endpoint releases its session's connection on return."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, _closing_sessions(endpoint), **kwargs)
