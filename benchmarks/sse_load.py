"""Many open event streams on one API process: does the API stay responsive, and how soon
does each stream get each event?

    python benchmarks/sse_load.py                          # 500 streams over 50 jobs
    python benchmarks/sse_load.py --streams 100 --jobs 10 --rounds 5

Starts its own production-shaped stack (a fresh Postgres database, the benchmarks' Redis
database, the API as one ``noisefa serve --no-worker`` process, no worker), submits J jobs
and marks them running, then opens S streams (S/J per job, one asyncio httpx client, real
HTTP on loopback). While they are open it times ``GET /healthz`` and ``GET /v1/jobs/{id}``
from two threads, and in R rounds inserts one progress event per job; every stream notes
when each event arrives. Last, every job succeeds and every stream must end with exactly
the events the database holds. The same two GETs are timed first with no stream open, as
the floor of this server and client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from noisefa.service.repositories import execution, running
from noisefa.testing.redis_dbs import redis_url
from noisefa.testing.specs import tiny_spec
from noisefa.testing.stack import Stack, local_stack

ROUND_GAP_S = 0.5
OPEN_DEADLINE_S = 120.0
END_DEADLINE_S = 60.0
FLOOR_S = 3.0
PROBE_PAUSE_S = 0.01


def percentiles(values: list[float]) -> str:
    """p50, p99 and max in milliseconds."""
    cuts = (
        statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else values * 99
    )
    p50, p99, most = (x * 1e3 for x in (cuts[49], cuts[98], max(values)))
    return f"p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  max {most:7.1f} ms"


class Prober:
    """Times sequential GETs of ``path`` in a thread until stopped."""

    def __init__(self, stack: Stack, path: str) -> None:
        self._stack, self._path = stack, path
        self.latencies: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self._stack.http() as http:
            http.get(self._path)  # connect first: time requests, not the handshake
            while not self._stop.is_set():
                started = time.perf_counter()
                response = http.get(self._path)
                self.latencies.append(time.perf_counter() - started)
                self.failures += response.status_code != 200
                self._stop.wait(PROBE_PAUSE_S)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


async def follow(
    http: httpx.AsyncClient, job_id: str, opened: asyncio.Event, arrivals: dict[int, float]
) -> list[int]:
    """The event ids of one stream until it ends; ``arrivals`` gets each progress event's
    round → monotonic arrival time. (The jobs are never run: no worker takes them.)"""
    ids, event_id, event_type = [], 0, ""
    async with http.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        if response.status_code != 200:
            raise RuntimeError(f"stream refused: {response.status_code} {await response.aread()}")
        async for line in response.aiter_lines():
            if line.startswith("id: "):
                event_id = int(line[4:])
            elif line.startswith("event: "):
                event_type = line[7:]
            elif line.startswith("data: "):
                ids.append(event_id)
                opened.set()
                if event_type == "progress":
                    arrivals[json.loads(line[6:])["epoch"]] = time.monotonic()
    return ids


def insert_rounds(stack: Stack, attempts: list, rounds: int) -> dict[tuple[str, int], float]:
    """One progress event per job per round; (job id, round) → monotonic insert start."""
    inserted = {}
    with stack.sessions() as session:
        for round_ in range(1, rounds + 1):
            for attempt in attempts:
                inserted[attempt.job_id, round_] = time.monotonic()
                running.report_progress(session, attempt, {"phase": "pretrain", "epoch": round_})
            time.sleep(ROUND_GAP_S)
        for attempt in attempts:
            execution.finish(session, attempt, "succeeded")
    return inserted


async def measure(
    stack: Stack, job_ids: list[str], attempts: list, args: argparse.Namespace
) -> dict:
    """Open the streams, probe while events flow, end the jobs; what was measured."""
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    limits = httpx.Limits(max_connections=args.streams + 8)
    timeout = httpx.Timeout(END_DEADLINE_S, connect=OPEN_DEADLINE_S, pool=OPEN_DEADLINE_S)
    async with httpx.AsyncClient(
        base_url=stack.api_url, headers=headers, limits=limits, timeout=timeout
    ) as http:
        opened = [asyncio.Event() for _ in range(args.streams)]
        arrivals: list[dict[int, float]] = [{} for _ in range(args.streams)]
        started = time.monotonic()
        streams = [
            asyncio.create_task(follow(http, job_ids[i % len(job_ids)], opened[i], arrivals[i]))
            for i in range(args.streams)
        ]
        await asyncio.wait_for(asyncio.gather(*(o.wait() for o in opened)), OPEN_DEADLINE_S)
        open_s = time.monotonic() - started
        with Prober(stack, "/healthz") as health, Prober(stack, f"/v1/jobs/{job_ids[0]}") as job:
            inserted = await asyncio.to_thread(insert_rounds, stack, attempts, args.rounds)
            ids = await asyncio.wait_for(asyncio.gather(*streams), END_DEADLINE_S)
    delays = [
        arrived[r] - inserted[job_ids[i % len(job_ids)], r]
        for i, arrived in enumerate(arrivals)
        for r in arrived
    ]
    missing = sum(args.rounds - len(arrived) for arrived in arrivals)
    duplicated = sum(len(s) - len(set(s)) for s in ids)
    return {
        "open_s": open_s,
        "health": health,
        "job": job,
        "delays": delays,
        "missing": missing,
        "duplicated": duplicated,
    }


def floor(stack: Stack, job_id: str) -> tuple[Prober, Prober]:
    """The two GETs timed with no stream open."""
    with Prober(stack, "/healthz") as health, Prober(stack, f"/v1/jobs/{job_id}") as job:
        time.sleep(FLOOR_S)
    return health, job


def report(
    args: argparse.Namespace,
    floor_probes: tuple[Prober, Prober],
    found: dict,
    api_log: Callable[[], str],
) -> str:
    """The figures, one per line."""
    lines = [
        f"{args.streams} streams over {args.jobs} jobs, {args.rounds} rounds of one event per "
        f"job, one API process, loopback",
        f"all streams open after {found['open_s']:.2f} s",
    ]
    for name, probe in zip(("GET /healthz", "GET /v1/jobs/{id}"), floor_probes, strict=True):
        lines.append(f"{name:<18} no streams   {percentiles(probe.latencies)}")
    for name, key in (("GET /healthz", "health"), ("GET /v1/jobs/{id}", "job")):
        probe = found[key]
        lines.append(
            f"{name:<18} streams open {percentiles(probe.latencies)}  "
            f"({len(probe.latencies)} requests, {probe.failures} not 200)"
        )
    lines.append(f"insert → arrival   {percentiles(found['delays'])}  ({len(found['delays'])})")
    lines.append(
        f"events missing: {found['missing']}, duplicated: {found['duplicated']}, "
        f"'QueuePool limit' in the API log: {api_log().count('QueuePool limit')}"
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Measure on a fresh local stack and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=10, help="Events per job while open.")
    args = parser.parse_args(argv)

    caps = {
        "max_streams_per_project": str(args.streams),
        "max_streams_per_process": str(max(args.streams, 1000)),
        "max_concurrent_jobs": str(max(args.jobs, 100)),
    }
    with (
        tempfile.TemporaryDirectory(prefix="noisefa-sse-") as tmp,
        local_stack(
            Path(tmp), name="noisefa_sse", broker_url=redis_url("benchmarks"), **caps
        ) as stack,
    ):
        job_ids = [stack.submit(tiny_spec()) for _ in range(args.jobs)]
        with stack.sessions() as session:
            attempts = [execution.start_attempt(session, job_id) for job_id in job_ids]
        floor_probes = floor(stack, job_ids[0])
        found = asyncio.run(measure(stack, job_ids, attempts, args))
        text = report(args, floor_probes, found, lambda: stack.log_tail(chars=10**7))
    sys.stdout.write(text)
    return 0 if found["missing"] == found["duplicated"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
