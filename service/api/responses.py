"""The problems the routes answer with, and their OpenAPI declarations (``responses=``).

Every error is sent as ``application/problem+json``. FastAPI documents a response
``model`` only under the route's own media type (``application/json``; see
fastapi/fastapi#3122), so :func:`problem` names the ``Problem`` schema by reference under
the problem media type, and :func:`document_problem_schema` puts that schema (with
``FieldError``) into the app's components, where nothing else would.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI

from ..pagination import BadPageToken
from ..problems import PROBLEM_MEDIA_TYPE, FieldError, Problem, ProblemError

REF_TEMPLATE = "#/components/schemas/{model}"


def problem(description: str) -> dict[str, Any]:
    """One error response: ``description``, with a ``Problem`` body."""
    schema = {"$ref": REF_TEMPLATE.format(model=Problem.__name__)}
    return {"description": description, "content": {PROBLEM_MEDIA_TYPE: {"schema": schema}}}


AUTH_PROBLEMS: dict[int | str, dict[str, Any]] = {401: problem("Missing or invalid API key.")}
"""What every route behind an API key may answer."""


def document_problem_schema(app: FastAPI) -> None:
    """Add ``Problem`` and the models it uses to ``app``'s OpenAPI components."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()  # FastAPI keeps it as app.openapi_schema
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            problem_schema = Problem.model_json_schema(ref_template=REF_TEMPLATE)
            schemas.update(problem_schema.pop("$defs", {}))
            schemas[Problem.__name__] = problem_schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def invalid_field(field: str, message: str) -> ProblemError:
    """A 422 problem naming one field."""
    return ProblemError(
        422,
        f"invalid field(s): {field} ({field}: {message})",
        slug="validation",
        title="Invalid request",
        errors=[FieldError(field=field, message=message)],
    )


def check_page_size(page_size: int, settings_max: int) -> None:
    """422 naming ``page_size`` when it is over the deployment's ``max_page_size``."""
    if page_size > settings_max:
        raise invalid_field("page_size", f"must be in [1, {settings_max}], got {page_size}")


@contextmanager
def issued_page_token() -> Iterator[None]:
    """422 naming ``page_token`` when the block finds it is not a token this API issued."""
    try:
        yield
    except BadPageToken as error:
        raise invalid_field("page_token", "not a token this API issued") from error
