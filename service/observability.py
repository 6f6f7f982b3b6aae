"""Prometheus metrics, and the middleware that times every request.

Job gauges and durations are read from the database at scrape time (the database is the
source of truth, and every API replica then reports the same numbers). HTTP latency is
labelled by route template (``/v1/jobs/{job_id}``), never by raw path, to bound cardinality.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from noisefa.engine.contract.states import JobState

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
