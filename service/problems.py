"""RFC 9457 problem details: every error the API returns, and the handlers that make them.

Validation errors carry ``errors: [{field, message}]`` with dotted field paths
(``train.epochs``, ``model.hidden[0]``) and a ``detail`` naming them. Unexpected exceptions
are logged with their traceback and answered with a 500 problem that does not include it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.exc import DataError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "urn:noisefa:problem:"
# Our model validators raise messages like "train.epochs: must be in [1, 1000], got 5000".
FIELD_MESSAGE = re.compile(r"^(?P<field>[A-Za-z_][\w.\[\]]*): (?P<message>.+)$", re.DOTALL)


class FieldError(BaseModel):
    """One invalid field of a request."""

    field: str = Field(description="Dotted path of the field, e.g. `train.epochs`.")
    message: str = Field(description="What is wrong and what is allowed.")


class Problem(BaseModel):
    """An RFC 9457 problem: the body of every 4xx and 5xx answer."""

    type: str = Field(description="URI naming the kind of problem.")
    title: str = Field(description="Short summary of the kind of problem.")
    status: int = Field(description="HTTP status code.")
    detail: str | None = Field(None, description="What went wrong in this request.")
    instance: str | None = Field(None, description="The request path.")
    errors: list[FieldError] | None = Field(None, description="Invalid fields (422 only).")


class ProblemError(Exception):
    """Raised by routes to answer with a problem; handled by :func:`install_handlers`."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        slug: str | None = None,
        title: str | None = None,
        errors: Sequence[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.slug = slug
        self.title = title or HTTPStatus(status).phrase
        self.errors = list(errors) if errors is not None else None
        self.headers = headers


def problem_response(
    request: Request | None,
    status: int,
    detail: str | None,
    *,
    slug: str | None = None,
    title: str | None = None,
    errors: Sequence[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A problem+json response; ``type`` is ``about:blank`` unless a slug names the kind."""
    body = Problem(
        type=PROBLEM_BASE + slug if slug else "about:blank",
        title=title or HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        instance=request.url.path if request is not None else None,
        errors=list(errors) if errors is not None else None,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def dotted(loc: Iterable[Any]) -> str:
    """``("model", "hidden", 0)`` → ``model.hidden[0]``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def field_errors(errors: Iterable[dict[str, Any]], strip: tuple[str, ...] = ()) -> list[FieldError]:
    """Pydantic error dicts → field errors, lifting the field out of "field: message" texts."""
    found = []
    for error in errors:
        loc = list(error.get("loc", ()))
        if loc and loc[0] in strip:
            loc = loc[1:] or loc
        message = str(error.get("msg", "invalid"))
        message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        field = dotted(loc)
        match = FIELD_MESSAGE.match(message)
        if match:
            inner = match["field"]
            field = f"{field}.{inner}" if field and field != "body" else inner
            message = match["message"]
        found.append(FieldError(field=field or "body", message=message))
    return found


def _validation_detail(errors: Sequence[FieldError]) -> str:
    names = ", ".join(dict.fromkeys(error.field for error in errors))
    first = errors[0]
    return f"invalid field(s): {names} ({first.field}: {first.message})"


def validation_problem(request: Request, errors: list[FieldError]) -> JSONResponse:
    """A 422 naming every invalid field."""
    return problem_response(
        request,
        422,
        _validation_detail(errors),
        slug="validation",
        title="Invalid request",
        errors=errors,
    )


def invalid_request(errors: Sequence[FieldError]) -> ProblemError:
    """The 422 of :func:`validation_problem`, to raise where a guard finds ``errors``."""
    return ProblemError(
        422, _validation_detail(errors), slug="validation", title="Invalid request", errors=errors
    )


def spec_validation_error(error: ValidationError) -> list[FieldError]:
    """Field errors of a job spec that failed validation."""
    return field_errors(error.errors(include_url=False))


def install_handlers(app: FastAPI) -> None:
    """Answer every error with problem JSON (unknown routes and 405s included)."""

    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(
            request,
            exc.status,
            exc.detail,
            slug=exc.slug,
            title=exc.title,
            errors=exc.errors,
            headers=exc.headers,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return problem_response(request, exc.status_code, detail, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = field_errors(exc.errors(), strip=("body", "query", "path", "header"))
        return validation_problem(request, errors)

    @app.exception_handler(ValidationError)
    async def _validation(request: Request, exc: ValidationError) -> JSONResponse:
        return validation_problem(request, spec_validation_error(exc))

    @app.exception_handler(DataError)
    async def _data(request: Request, exc: DataError) -> JSONResponse:
        # A value the database cannot hold or compare (the routes validate first; this is
        # the backstop, so a client's bad value is never a 500).
        logger.warning(
            "database refused a value on %s %s: %s", request.method, request.url.path, exc.orig
        )
        return problem_response(
            request, 400, "a value in the request cannot be stored or compared", slug="bad-value"
        )

    @app.exception_handler(PoolTimeout)
    async def _pool_timeout(request: Request, exc: PoolTimeout) -> JSONResponse:
        # Every connection of this process is busy for longer than db_pool_timeout_s: a
        # burst, not a client error. Say so and when to retry, rather than hang or 500.
        logger.warning("no free database connection for %s %s", request.method, request.url.path)
        response = problem_response(request, 503, "the service is busy; retry shortly", slug="busy")
        response.headers["Retry-After"] = "1"
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return problem_response(request, 500, "internal error; see the service logs")
