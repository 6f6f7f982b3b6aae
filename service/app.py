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

from fastapi import Depends, FastAPI

from noisefa import __version__

from .api import checkpoints, datasets, health, jobs, presets, ui
from .api import webhooks as webhooks_api
from .api.responses import document_problem_schema
from .broker import make_celery
from .db import engine_from_settings, make_sessionmaker
from .event_hub import EventHub
from .guards import BodyLimitMiddleware, NulGuardMiddleware
from .held_jobs import Packer
from .idempotency import InFlightKeys
from .job_body import DeploymentLimits
from .json_guard import check_json_body
from .observability import LatencyMiddleware, Observability
from .problems import install_handlers
from .query_guard import refuse_unknown_query_params
from .reaper import Reaper
from .settings import Settings, get_settings
from .sse import StreamSlots
from .storage import storage_from_settings
from .webhooks import WebhookDispatcher

# Multipart framing around an uploaded file (boundaries, part headers): allowed on top of
# ``max_upload_bytes`` (``max_checkpoint_bytes``) by the body limit; the upload route then
# counts the file itself.
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
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        reaper = webhooks = packer = None
        if settings.pack_window_s > 0:  # held standalone jobs: only this loop sends them
            packer = Packer(app.state.sessionmaker, app.state.celery, settings)
            packer.start()
        if settings.reaper_enabled:
            reaper = Reaper(app.state.sessionmaker, app.state.celery, settings)
            reaper.start()
            webhooks = WebhookDispatcher(app.state.sessionmaker, settings)
            webhooks.start()
        # One hub per served event loop, handed to requests as lifespan state: its queues
        # belong to that loop (a test may serve one app from two servers at once).
        event_hub = EventHub(app.state.sessionmaker)
        event_hub.start()
        try:
            yield {"event_hub": event_hub}
        finally:
            await event_hub.stop()
            if reaper is not None:
                reaper.stop()
            if webhooks is not None:
                webhooks.stop()
            if packer is not None:
                packer.stop()
            engine.dispose()

    app = FastAPI(
        title="noisefa",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # A body without a Content-Type is read as JSON; one of another type is a 415 (see
        # json_guard). Keys travel in a header, so the CSRF defence of FastAPI's strict
        # default (no type, no parse) has nothing to defend here.
        strict_content_type=False,
        # Every route, before its own parameters and body are validated (the body limit
        # has counted the body by then).
        dependencies=[Depends(refuse_unknown_query_params), Depends(check_json_body)],
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = make_sessionmaker(engine)
    app.state.celery = make_celery(settings)
    app.state.storage = storage_from_settings(settings)
    app.state.observability = Observability(app.state.sessionmaker)
    app.state.in_flight_keys = InFlightKeys()
    app.state.stream_slots = StreamSlots(
        settings.max_streams_per_project, settings.max_streams_per_process
    )

    install_handlers(app)
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(datasets.router)
    app.include_router(checkpoints.router)
    app.include_router(presets.router)
    app.include_router(webhooks_api.router)
    app.include_router(ui.router)
    # Last added runs first: latency wraps everything, including refused bodies.
    app.add_middleware(DeploymentLimits, settings=settings)
    app.add_middleware(NulGuardMiddleware)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        # An upload's multipart framing adds a little to the file; the route counts the file.
        large_bodies={
            datasets.router.prefix: (
                settings.max_upload_bytes + UPLOAD_FRAMING_BYTES,
                "max_upload_bytes",
            ),
            checkpoints.router.prefix: (
                settings.max_checkpoint_bytes + UPLOAD_FRAMING_BYTES,
                "max_checkpoint_bytes",
            ),
        },
    )
    app.add_middleware(LatencyMiddleware, observability=app.state.observability)
    document_problem_schema(app)
    return app
