"""Experiment wall time with 1 vs W workers: one ``experiment`` job (3 conditions × S seeds
of a digits MLP) on a real deployment on loopback, measured from submit to the aggregated
report, once per worker count.

    python benchmarks/experiment_workers.py --seeds 3 --workers 1 2

starts its own stack (a fresh Postgres database, the benchmarks' Redis database, local
storage in a temporary folder, the API and the workers) and tears it down after. Each worker
runs one job at a time with one OpenMP thread, so W workers use W cores.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from noisefa.testing.specs import experiment_spec, train_body
from noisefa.testing.stack import Stack, benchmark_stack


def experiment(seeds: int, epochs: int) -> dict[str, Any]:
    """BP vs FA vs FA after 60k noise samples, 64-100-10 MLP on digits, ``epochs`` epochs."""
    base = train_body(
        train={"dataset": "digits", "epochs": epochs, "batch_size": 64}, checkpoint_every=epochs
    )
    conditions = {
        "bp": {"model": {"rule": "bp"}},
        "fa": {},
        "fa+noise": {"pretrain": {"epochs": 1, "samples_per_epoch": 60_000}},
    }
    return experiment_spec(base, conditions=conditions, seeds=list(range(seeds)))


def run_once(stack: Stack, workers: int, body: dict[str, Any]) -> tuple[float, float, float]:
    """With ``workers``: seconds from submit to the experiment's end, the summed run time of
    its runs (started → finished), and the seconds from the last run's end to the report."""
    stack.use_workers(workers)
    start = time.perf_counter()
    job, runs = stack.run_experiment(body, 1800)
    wall = time.perf_counter() - start
    busy = sum((end - begin).total_seconds() for begin, end in runs)
    tail = (job.finished_at - max(end for _, end in runs)).total_seconds()
    return wall, busy, tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)

    body = experiment(args.seeds, args.epochs)
    runs = len(body["conditions"]) * len(body["seeds"])
    with benchmark_stack("noisefa_bench") as stack:
        for workers in args.workers:
            wall, busy, tail = run_once(stack, workers, body)
            print(
                f"{runs} runs, {workers} worker(s): {wall:.1f} s wall "
                f"(runs busy {busy:.1f} s in all, report {tail:.1f} s after the last)",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
