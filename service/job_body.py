"""The body of ``POST /v1/jobs`` as the route declares it: the engine's :data:`JobBody`,
validated against this deployment's limits.

The route declares :data:`SubmittedJob`, so the OpenAPI request schema is the models'
union with its ``kind`` discriminator. Two things the plain union cannot do are done by its
validator:

- **The deployment's limits.** FastAPI validates a body before the route runs and without a
  validation context, so the limits from ``Settings`` (``NOISEFA_MAX_WIDTH`` …) reach the
  validator through a context variable that :class:`DeploymentLimits` sets per request
  (without it, the engine's defaults apply).
- **Error locations relative to the body.** Validating the union would put the ``kind``
  tag into every location (``train.model.hidden``); :func:`parse_job` dispatches on
  ``kind`` by hand, so a 422 names ``model.hidden[0]``. Text no database column can store
  (NULs, lone surrogates) and duplicate keys are refused before this, by
  :mod:`noisefa.service.json_guard`.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Annotated, Any, get_args

from pydantic import PlainValidator
from starlette.types import ASGIApp, Receive, Scope, Send

from noisefa.engine.contract.bodies import JobBody, parse_job
from noisefa.engine.contract.limits import Limits

from .settings import Settings

_request_limits: ContextVar[Limits | None] = ContextVar("noisefa_request_limits", default=None)


def validate_job_body(value: Any) -> JobBody:
    """``value`` (parsed JSON) as a job body under the request's limits; a pydantic
    ``ValidationError`` naming the field otherwise."""
    return parse_job(value, _request_limits.get())


SubmittedJob = Annotated[
    get_args(JobBody)[0],  # the union itself: the discriminator is the validator's job here
    PlainValidator(validate_job_body, json_schema_input_type=JobBody),
]
"""A job body as a route parameter type (use with ``Body()``)."""


class DeploymentLimits:
    """ASGI middleware: the settings' job limits for validation during each request."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = _request_limits.set(self.settings.limits)
        try:
            await self.app(scope, receive, send)
        finally:
            _request_limits.reset(token)
