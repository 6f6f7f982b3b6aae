"""Refuse query parameters a route does not declare, as unknown body fields are refused.

FastAPI ignores a query parameter it was not told about, so ``?stat=failed`` (for
``state``) silently lists every job. :func:`refuse_unknown_query_params`, a dependency of
every route, compares the request's names with those the route and its dependencies
declare and answers 422 naming each unknown one.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from .problems import FieldError, invalid_request


def declared_query_names(dependant: Dependant) -> set[str]:
    """The query parameter names (aliases) of ``dependant`` and all its dependencies."""
    names = {field.alias for field in dependant.query_params}
    for dependency in dependant.dependencies:
        names |= declared_query_names(dependency)
    return names


def refuse_unknown_query_params(request: Request) -> None:
    """422 naming every query parameter the matched route does not take."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.query_params:
        return
    declared = declared_query_names(route.dependant)
    unknown = [name for name in dict.fromkeys(request.query_params) if name not in declared]
    if unknown:
        takes = ", ".join(sorted(declared)) or "none"
        message = f"unknown query parameter (this route takes: {takes})"
        # A nameless parameter (``?=x``) is named by where it is.
        fields = [name or "query" for name in unknown]
        raise invalid_request([FieldError(field=field, message=message) for field in fields])
