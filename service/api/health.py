"""Operational endpoints: ``/healthz`` (alive), ``/readyz`` (dependencies), ``/metrics``.

``/readyz`` checks the database, the broker and storage concurrently, each bounded by a
timeout, and answers 503 naming what is down; load balancers route only to ready replicas.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from ..problems import Problem, ProblemError
from ..schemas import Health
from ..storage import check_writable

logger = logging.getLogger(__name__)

router = APIRouter(tags=["operations"])

CHECK_TIMEOUT_S = 3.0


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


async def _run_check(name: str, check: Callable[[Request], None], request: Request) -> str | None:
    """None when the check passes, else a short reason (the check runs in a thread)."""
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.run_in_executor(None, check, request), CHECK_TIMEOUT_S + 1)
    except TimeoutError:
        logger.warning("readiness check %s timed out", name)
        return "timed out"
    except Exception as error:
        logger.warning("readiness check %s failed: %r", name, error)
        return type(error).__name__
    return None


@router.get(
    "/readyz",
    summary="Readiness",
    responses={503: {"model": Problem, "description": "A dependency is down; detail names it."}},
)
async def readyz(request: Request) -> Health:
    """Database (`SELECT 1`), broker (a connection) and storage (write, read, delete)."""
    reasons = await asyncio.gather(
        *(_run_check(name, check, request) for name, check in CHECKS.items())
    )
    down = {name: reason for name, reason in zip(CHECKS, reasons, strict=True) if reason}
    if down:
        names = ", ".join(f"{name} ({reason})" for name, reason in down.items())
        raise ProblemError(503, f"not ready: {names} down", slug="not-ready")
    return Health(checks=dict.fromkeys(CHECKS, "ok"))


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
def metrics(request: Request) -> Response:
    """Jobs by state, job durations and HTTP latency, in the Prometheus text format."""
    registry = request.app.state.observability.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
