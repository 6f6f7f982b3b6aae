"""Prometheus metrics and the two ASGI middlewares every request passes through.

Job gauges and durations are read from the database at scrape time (the database is the
source of truth, and every API replica then reports the same numbers). HTTP latency is
labelled by route template (``/v1/jobs/{job_id}``), never by raw path, to bound cardinality.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from noisefa.engine.contract.states import JobState

from .problems import PROBLEM_MEDIA_TYPE
from .repositories.jobs import count_by_state, finished_durations

logger = logging.getLogger(__name__)

JOB_DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 12 * 3600)
HTTP_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class JobCollector(Collector):
    """``noisefa_jobs{state}`` and ``noisefa_job_duration_seconds``, queried per scrape."""

    def __init__(self, make_session: sessionmaker[Session]) -> None:
        self.make_session = make_session

    def collect(self) -> Iterator[Metric]:
        """Query the database; on failure report nothing (``/readyz`` says what is down)."""
        try:
            with self.make_session() as session:
                counts = count_by_state(session)
                durations = finished_durations(session)
        except SQLAlchemyError:
            logger.warning("metrics scrape could not read the database", exc_info=True)
            return
        jobs = GaugeMetricFamily("noisefa_jobs", "Jobs by state.", labels=["state"])
        for state in JobState:
            jobs.add_metric([state], counts.get(state, 0))
        yield jobs
        buckets = [
            (str(bound), sum(1 for d in durations if d <= bound)) for bound in JOB_DURATION_BUCKETS
        ]
        buckets.append(("+Inf", len(durations)))
        yield HistogramMetricFamily(
            "noisefa_job_duration_seconds",
            "Run time of finished jobs (started to finished).",
            buckets=buckets,
            sum_value=sum(durations),
        )


class Observability:
    """The app's own registry (so several apps in one process never collide)."""

    def __init__(self, make_session: sessionmaker[Session]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(JobCollector(make_session))
        self.http_latency = Histogram(
            "noisefa_http_request_duration_seconds",
            "HTTP request latency by method, route template and status.",
            ["method", "route", "status"],
            buckets=HTTP_LATENCY_BUCKETS,
            registry=self.registry,
        )


class LatencyMiddleware:
    """Times every HTTP request until its response starts (streams are not held open)."""

    def __init__(self, app: ASGIApp, observability: Observability) -> None:
        self.app = app
        self.observability = observability

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                route = scope.get("route")
                self.observability.http_latency.labels(
                    scope["method"], getattr(route, "path", "unmatched"), str(status["code"])
                ).observe(time.perf_counter() - start)
            await send(message)

        await self.app(scope, receive, timed_send)


class BodyTooLarge(StarletteHTTPException):
    """A request body over its limit (answered 413 by the problem handlers)."""

    def __init__(self, limit: int, setting: str = "max_body_bytes") -> None:
        super().__init__(413, f"request body over {setting} ({limit} bytes)")


class BodyLimitMiddleware:
    """Refuses bodies over the limit: by ``Content-Length`` up front, else while reading.

    ``large_bodies`` maps path prefixes that take files (dataset uploads) to their own
    ``(bytes, setting name)`` limit.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        large_bodies: dict[str, tuple[int, str]] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.large_bodies = large_bodies or {}

    def _limit(self, path: str) -> tuple[int, str]:
        for prefix, limit in self.large_bodies.items():
            if path.startswith(prefix):
                return limit
        return self.max_bytes, "max_body_bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes, setting = self._limit(scope["path"])
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > max_bytes:
            await self._refuse(scope, send, max_bytes, setting)
            return
        seen = 0

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_bytes:
                    raise BodyTooLarge(max_bytes, setting)
            return message

        await self.app(scope, counted_receive, send)

    async def _refuse(self, scope: Scope, send: Send, max_bytes: int, setting: str) -> None:
        body = json.dumps(
            {
                "type": "about:blank",
                "title": "Content Too Large",
                "status": 413,
                "detail": f"request body over {setting} ({max_bytes} bytes)",
                "instance": scope["path"],
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
