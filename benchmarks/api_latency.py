"""Latency of ``GET /v1/jobs/{id}`` under loopback load, beside a plain reference.

    python benchmarks/api_latency.py --clients 50 --requests 40

Starts its own production-shaped stack (a fresh Postgres database, the benchmarks' Redis
database, local storage, the API as ``noisefa serve --no-worker``), stores one finished job,
then has C concurrent clients (threads, one keep-alive connection each) each send R
requests. The same run measures ``GET /healthz`` (no auth, no database: the floor of this
server and client) the same way, so the figure that matters is the ratio of the two.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from noisefa.testing.specs import tiny_spec
from noisefa.testing.stack import Stack, benchmark_stack


def hammer(stack: Stack, path: str, clients: int, requests: int) -> tuple[list[float], float]:
    """Per-request latencies (s) and wall time of ``clients`` × ``requests`` GETs of ``path``."""
    headers = {"Authorization": f"Bearer {stack.api_key}"}

    def one_client(_: int) -> list[float]:
        latencies = []
        with httpx.Client(base_url=stack.api_url, headers=headers, timeout=60) as http:
            for _ in range(requests):
                started = time.perf_counter()
                response = http.get(path)
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    raise RuntimeError(f"{path} answered {response.status_code}")
        return latencies

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = list(pool.map(one_client, range(clients)))
    return [x for latencies in results for x in latencies], time.perf_counter() - started


def describe(name: str, latencies: list[float], wall_s: float) -> tuple[str, float]:
    """A line of figures and the p50 latency."""
    cuts = statistics.quantiles(latencies, n=100)
    line = (
        f"{name:<22} p50 {cuts[49] * 1e3:7.1f} ms  p95 {cuts[94] * 1e3:7.1f} ms  "
        f"p99 {cuts[98] * 1e3:7.1f} ms  {len(latencies) / wall_s:7.1f} req/s"
    )
    return line, cuts[49]


def main(argv: list[str] | None = None) -> int:
    """Measure on a fresh local stack and print the figures and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=40, help="Requests per client.")
    args = parser.parse_args(argv)

    with benchmark_stack("noisefa_latency") as stack:
        stack.use_workers(1)
        job_id = stack.submit(tiny_spec())
        stack.wait_state(job_id, {"succeeded"}, 120)
        stack.use_workers(0)  # nothing else competes for the CPU while measuring
        hammer(stack, "/healthz", 4, 10)  # warm up connections and code paths
        base = hammer(stack, "/healthz", args.clients, args.requests)
        job = hammer(stack, f"/v1/jobs/{job_id}", args.clients, args.requests)
    base_line, base_p50 = describe("GET /healthz (floor)", *base)
    job_line, job_p50 = describe("GET /v1/jobs/{id}", *job)
    sys.stdout.write(
        f"{args.clients} concurrent clients × {args.requests} requests, loopback\n"
        f"{base_line}\n{job_line}\n"
        f"p50 ratio job/healthz: {job_p50 / base_p50:.2f}×\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
