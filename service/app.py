"""``create_app``: the FastAPI application, wired from one ``Settings``.

Everything an app needs (database sessions, the Celery client, storage, metrics) is built
here once and kept on ``app.state``; routes reach it through the dependencies in
:mod:`noisefa.service.api.deps`. The app does not migrate the database: ``noisefa db
upgrade`` (or the embedded ``serve``) does that first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from noisefa import __version__
from noisefa.engine.contract.bodies import BODY_MODELS

from .api import datasets, health, jobs, presets
from .api.jobs import InFlightKeys
from .broker import make_celery
from .db import engine_from_settings, make_sessionmaker
from .guards import NulGuardMiddleware
from .observability import BodyLimitMiddleware, LatencyMiddleware, Observability
from .problems import PROBLEM_MEDIA_TYPE, install_handlers
from .reaper import Reaper
from .settings import Settings, get_settings
from .storage import storage_from_settings

# Multipart framing around an uploaded file (boundaries, part headers): allowed on top of
# ``max_upload_bytes`` by the body limit; the upload route then counts the file itself.
UPLOAD_FRAMING_BYTES = 64 * 1024

DESCRIPTION = """\
Feedback alignment with random-noise pretraining, as a training service.

Submit a job (`POST /v1/jobs`), follow it (`GET /v1/jobs/{id}`, or the SSE stream at
`/v1/jobs/{id}/events`), read its per-epoch metrics and download its checkpoints.
Every error is RFC 9457 `application/problem+json`. Authenticate with
`Authorization: Bearer <key>` (`noisefa keys create --project NAME`).
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API for ``settings`` (read from ``NOISEFA_*`` when not given)."""
    settings = settings or get_settings()
    engine = engine_from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        reaper = None
        if settings.reaper_enabled:
            reaper = Reaper(app.state.sessionmaker, app.state.celery, settings)
            reaper.start()
        try:
            yield
        finally:
            if reaper is not None:
                reaper.stop()
            engine.dispose()

    app = FastAPI(title="noisefa", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = make_sessionmaker(engine)
    app.state.celery = make_celery(settings)
    app.state.storage = storage_from_settings(settings)
    app.state.observability = Observability(app.state.sessionmaker)
    app.state.in_flight_keys = InFlightKeys()

    install_handlers(app)
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(datasets.router)
    app.include_router(presets.router)
    # Last added runs first: latency wraps everything, including refused bodies.
    app.add_middleware(NulGuardMiddleware)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        # An upload's multipart framing adds a little to the file; the route counts the file.
        large_bodies={
            datasets.router.prefix: (
                settings.max_upload_bytes + UPLOAD_FRAMING_BYTES,
                "max_upload_bytes",
            )
        },
    )
    app.add_middleware(LatencyMiddleware, observability=app.state.observability)
    _document_job_spec(app)
    return app


def _problems_as_problem_json(schema: dict[str, Any]) -> None:
    """Document error responses under ``application/problem+json``, the type they are sent as."""
    for operations in schema["paths"].values():
        for operation in operations.values():
            for response in operation.get("responses", {}).values():
                content = response.get("content", {})
                body = content.get("application/json")
                if body and body.get("schema", {}).get("$ref", "").endswith("/Problem"):
                    content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")


def _document_job_spec(app: FastAPI) -> None:
    """Add the engine's job bodies (``JobSpec``, ``EvaluateSpec``, ``ExperimentSpec``: the
    body of ``POST /v1/jobs``, by ``kind``) to the OpenAPI components.

    The route reads the body as raw JSON so it can validate it against the deployment's
    limits; this puts the real schema back into the document.
    """
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = default_openapi()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        models = list(dict.fromkeys(BODY_MODELS.values()))
        for model in models:
            spec_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(spec_schema.pop("$defs", {}))
            components[model.__name__] = spec_schema
        body = schema["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]
        body["schema"] = {
            "oneOf": [{"$ref": f"#/components/schemas/{m.__name__}"} for m in models],
            "discriminator": {
                "propertyName": "kind",
                "mapping": {
                    kind: f"#/components/schemas/{model.__name__}"
                    for kind, model in BODY_MODELS.items()
                },
            },
        }
        _problems_as_problem_json(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
