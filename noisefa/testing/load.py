"""A load run: N tiny jobs submitted concurrently to a stack, run by W workers; what it measured.

Shared by ``tests/faults/test_fault_load.py`` (CI size) and ``benchmarks/load_jobs.py``
(full size, prints the figures).
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from noisefa.service.models import Job, utcnow
from noisefa.testing.specs import cpu_pretrain_spec
from noisefa.testing.stack import Stack

NO_QUOTA = {"max_concurrent_jobs": "100000"}  # every job is submitted at once


@dataclass
class LoadResult:
    """What a load run measured and what it found."""

    ids: list[str]
    jobs: int
    workers: int
    wall_s: float
    submit_latency_s: list[float]
    job_latency_s: list[float]
    states: dict[str, int]
    attempts: dict[int, int]
    lost: int
    duplicated_jobs: int  # rows stored beyond one per submit
    duplicated_metric_points: int

    @property
    def jobs_per_s(self) -> float:
        """Finished jobs per second of wall time (submission start to the last job's end)."""
        return self.jobs / self.wall_s

    def report(self) -> str:
        """The figures, one per line."""

        def quantiles(values: list[float]) -> str:
            cuts = statistics.quantiles(values, n=100) if len(values) > 1 else values * 99
            return f"p50 {cuts[49]:.3f} s, p95 {cuts[94]:.3f} s, max {max(values):.3f} s"

        return "\n".join(
            [
                f"jobs {self.jobs}, workers {self.workers}, wall {self.wall_s:.1f} s, "
                f"throughput {self.jobs_per_s:.2f} jobs/s",
                f"submit latency: {quantiles(self.submit_latency_s)}",
                f"job latency (created → finished): {quantiles(self.job_latency_s)}",
                f"states {self.states}, attempts {self.attempts}",
                f"lost {self.lost}, duplicated jobs {self.duplicated_jobs}, "
                f"duplicated metric points {self.duplicated_metric_points}",
            ]
        )


def submit_concurrently(
    stack: Stack, specs: list[dict[str, Any]], threads: int
) -> list[tuple[str, float]]:
    """POST every spec from ``threads`` threads at once; (job id, seconds) per spec, in order."""

    def submit(spec: dict[str, Any]) -> tuple[str, float]:
        with stack.http() as http:
            started = time.perf_counter()
            response = http.post("/v1/jobs", json=spec)
            elapsed = time.perf_counter() - started
        if response.status_code != 202:
            raise RuntimeError(f"submit answered {response.status_code}: {response.text}")
        return response.json()["id"], elapsed

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(submit, specs))


def run_load(
    stack: Stack, jobs: int, workers: int, *, threads: int = 16, deadline_s: float | None = None
) -> LoadResult:
    """Start ``workers`` workers, submit ``jobs`` tiny jobs concurrently, wait for all to end."""
    stack.use_workers(workers)
    deadline_s = deadline_s or 120.0 + 5.0 * jobs
    specs = [cpu_pretrain_spec(seed=seed) for seed in range(jobs)]  # ~ms each: mostly overhead
    since = utcnow()
    started = time.monotonic()
    submitted = submit_concurrently(stack, specs, threads)
    ids = [job_id for job_id, _ in submitted]
    rows = stack.wait_terminal(ids, deadline_s)
    wall_s = time.monotonic() - started
    with stack.sessions() as session:  # nothing else submits meanwhile: these are all ours
        stored = session.scalar(
            select(func.count()).select_from(Job).where(Job.created_at >= since)
        )
    states: dict[str, int] = {}
    attempts: dict[int, int] = {}
    for row in rows.values():
        states[row.state] = states.get(row.state, 0) + 1
        attempts[row.attempt] = attempts.get(row.attempt, 0) + 1
    return LoadResult(
        ids=ids,
        jobs=jobs,
        workers=workers,
        wall_s=wall_s,
        submit_latency_s=[elapsed for _, elapsed in submitted],
        job_latency_s=[(r.finished_at - r.created_at).total_seconds() for r in rows.values()],
        states=states,
        attempts=attempts,
        lost=len(set(ids) - set(rows)),
        duplicated_jobs=stored - len(set(ids)),
        duplicated_metric_points=stack.duplicated_metric_points(ids),
    )
