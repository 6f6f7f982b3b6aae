"""Operational endpoints: ``/healthz`` (alive), ``/readyz`` (dependencies), ``/metrics``.

``/readyz`` checks the database, the broker and storage concurrently, each bounded by a
timeout, and answers 503 naming what is down; load balancers route only to ready replicas.
It also counts the live workers of each queue (from the worker registry) and answers 503
naming a queue that has queued jobs and no live worker: those jobs would wait forever.

``/metrics`` shows every project's job counts, so it is served only to a Prometheus
scraper that sends ``Authorization: Bearer <NOISEFA_METRICS_TOKEN>``; without a token
configured it answers 404.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from ..auth import unauthorized
from ..broker import QUEUES
from ..problems import ProblemError
from ..repositories.reaping import queued_counts
from ..repositories.workers import live_workers_per_queue
from ..schemas import Health, Readiness
from ..storage import check_writable
from .responses import problem
from .routing import SessionReleasingRoute

logger = logging.getLogger(__name__)

router = APIRouter(tags=["operations"], route_class=SessionReleasingRoute)

CHECK_TIMEOUT_S = 3.0

T = TypeVar("T")

scrape_token_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="MetricsToken",
    description="`Authorization: Bearer <NOISEFA_METRICS_TOKEN>`, for Prometheus.",
)
ScrapeCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(scrape_token_scheme)]


@router.get("/healthz", summary="Liveness")
def healthz() -> Health:
    """The process answers; no dependency is checked."""
    return Health()


def _check_database(request: Request) -> None:
    with request.app.state.sessionmaker() as session:
        session.execute(text("SELECT 1"))


def _check_broker(request: Request) -> None:
    celery = request.app.state.celery
    with celery.connection_for_write(connect_timeout=CHECK_TIMEOUT_S) as connection:
        connection.ensure_connection(
            max_retries=1, interval_start=0, interval_step=0.2, timeout=CHECK_TIMEOUT_S
        )


def _check_storage(request: Request) -> None:
    check_writable(request.app.state.storage)


CHECKS: dict[str, Callable[[Request], None]] = {
    "database": _check_database,
    "broker": _check_broker,
    "storage": _check_storage,
}


async def _in_thread(function: Callable[[Request], T], request: Request) -> T:
    """``function(request)`` on the thread pool, bounded by the check timeout."""
    loop = asyncio.get_running_loop()
    return await asyncio.wait_for(
        loop.run_in_executor(None, function, request), CHECK_TIMEOUT_S + 1
    )


async def _run_check(name: str, check: Callable[[Request], None], request: Request) -> str | None:
    """None when the check passes, else a short reason (the check runs in a thread)."""
    try:
        await _in_thread(check, request)
    except TimeoutError:
        logger.warning("readiness check %s timed out", name)
        return "timed out"
    except Exception as error:
        logger.warning("readiness check %s failed: %r", name, error)
        return type(error).__name__
    return None


def _worker_census(request: Request) -> tuple[dict[str, int], dict[str, int]]:
    """Live workers per queue, and the queued jobs of each queue."""
    settings = request.app.state.settings
    with request.app.state.sessionmaker() as session:
        live = live_workers_per_queue(session, settings.heartbeat_timeout_s, QUEUES)
        return live, queued_counts(session)


async def _live_workers(request: Request) -> dict[str, int]:
    """Live workers per queue; a 503 problem naming each queue whose jobs nobody will run."""
    try:
        live, queued = await _in_thread(_worker_census, request)
    except Exception as error:
        logger.warning("readiness check workers failed: %r", error)
        reason = "timed out" if isinstance(error, TimeoutError) else type(error).__name__
        raise ProblemError(503, f"not ready: workers ({reason}) down", slug="not-ready") from None
    unserved = {queue: count for queue, count in queued.items() if count and not live.get(queue)}
    if unserved:
        names = ", ".join(f"{queue} (queued jobs: {count})" for queue, count in unserved.items())
        raise ProblemError(503, f"not ready: no live worker for queue {names}", slug="not-ready")
    return live


@router.get(
    "/readyz",
    summary="Readiness",
    responses={
        503: problem(
            "A dependency is down, or a queue with queued jobs has no live worker; detail names it."
        )
    },
)
async def readyz(request: Request) -> Readiness:
    """Database (`SELECT 1`), broker (a connection), storage (write, read, delete), then the
    live workers of each queue (a queue with queued jobs needs one)."""
    reasons = await asyncio.gather(
        *(_run_check(name, check, request) for name, check in CHECKS.items())
    )
    down = {name: reason for name, reason in zip(CHECKS, reasons, strict=True) if reason}
    if down:
        names = ", ".join(f"{name} ({reason})" for name, reason in down.items())
        raise ProblemError(503, f"not ready: {names} down", slug="not-ready")
    workers = await _live_workers(request)
    return Readiness(checks=dict.fromkeys(CHECKS, "ok"), workers=workers)


def require_scrape_token(request: Request, credentials: ScrapeCredentials) -> None:
    """404 unless a metrics token is configured; 401 unless the request bears it."""
    token = request.app.state.settings.metrics_token
    if token is None:
        raise ProblemError(404, "/metrics is served only with NOISEFA_METRICS_TOKEN set")
    sent = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(sent.encode(), token.get_secret_value().encode()):
        logger.info("refused a /metrics scrape without the metrics token")
        raise unauthorized("missing or wrong metrics token (Authorization: Bearer <token>)")


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    dependencies=[Depends(require_scrape_token)],
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}},
        401: problem("Missing or wrong metrics token."),
        404: problem("No metrics token is configured."),
    },
)
def metrics(request: Request) -> Response:
    """Jobs by state, job durations and HTTP latency, in the Prometheus text format.

    Served only to a scraper bearing ``NOISEFA_METRICS_TOKEN`` (the counts cover every
    project); without the setting the route answers 404.
    """
    registry = request.app.state.observability.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
