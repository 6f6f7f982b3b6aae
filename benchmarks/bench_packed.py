"""Packed vs unpacked experiment wall time on one worker: the ``comparison`` preset's shape
(BP, FA, FA after noise pretraining × 3 seeds, 64-100-10 on digits) submitted through the
API, once with the runs packed (``NOISEFA_PACK_MAX_RUNS`` unset: one pack of 9) and once
with ``NOISEFA_PACK_MAX_RUNS=1`` (9 tasks, one after another), alternating, in one stack.
With ``--standalone`` the same 9 runs are submitted as standalone jobs, packed by the API's
``NOISEFA_PACK_WINDOW_S`` (1 s) or not (unset: each sent at once).

    python benchmarks/bench_packed.py --epochs 10 --rounds 2 [--threads 2] [--standalone]

starts its own stack (a fresh Postgres database, the benchmarks' Redis database, local
storage in a temporary folder, the API and one worker with ``--threads`` torch threads) and tears it
down after. Reports each mode's wall time from submit to the aggregated report, where it
went (the runs' busy time, the time between runs, the report after the last run), and the
unpacked / packed ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

from noisefa.engine.contract.bodies import parse_job
from noisefa.engine.contract.experiment_spec import child_body
from noisefa.engine.contract.presets import comparison_body
from noisefa.testing.stack import Stack, benchmark_stack

MODES = {"unpacked": "1", "packed": None}  # NOISEFA_PACK_MAX_RUNS
STANDALONE_MODES = {"unpacked": None, "packed": "1"}  # NOISEFA_PACK_WINDOW_S


@dataclass
class Timing:
    wall: float  # submit → experiment succeeded
    first_start: float  # submit → the first run started (fan-out, message, worker start)
    runs_span: float  # the first run's start → the last run's end
    tail: float | None  # the last run's end → the report (an experiment's)


def run_once(stack: Stack, body: dict) -> Timing:
    """The experiment ``body``: submit → succeeded, and where the time went."""
    submitted = time.time()
    start = time.perf_counter()
    job, runs = stack.run_experiment(body, 3600)
    wall = time.perf_counter() - start
    first = min(begin for begin, _ in runs)
    last = max(end for _, end in runs)
    return Timing(
        wall=wall,
        first_start=first.timestamp() - submitted,
        runs_span=(last - first).total_seconds(),
        tail=(job.finished_at - last).total_seconds(),
    )


def run_standalone(stack: Stack, bodies: list[dict]) -> Timing:
    """The runs ``bodies`` as standalone jobs: the first submit → the last one succeeded."""
    submitted = time.time()
    start = time.perf_counter()
    job_ids = [stack.submit(body) for body in bodies]
    jobs = stack.wait_terminal(job_ids, 3600)
    wall = time.perf_counter() - start
    failed = [job for job in jobs.values() if job.state != "succeeded"]
    if failed:
        raise RuntimeError(f"a run ended {failed[0].state}: {failed[0].error_message}")
    first = min(job.started_at for job in jobs.values())
    last = max(job.finished_at for job in jobs.values())
    return Timing(
        wall=wall,
        first_start=first.timestamp() - submitted,
        runs_span=(last - first).total_seconds(),
        tail=None,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="data epochs of every run")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each mode, alternating")
    parser.add_argument(
        "--threads", type=int, default=1, help="the worker's torch threads (NOISEFA_TORCH_THREADS)"
    )
    parser.add_argument(
        "--standalone", action="store_true", help="submit the runs as standalone jobs"
    )
    args = parser.parse_args(argv)

    body = comparison_body(epochs=args.epochs, device="cpu")
    spec = parse_job(body)
    bodies = [
        child_body(spec, condition, seed) for condition in spec.conditions for seed in spec.seeds
    ]
    runs = len(bodies)
    modes = STANDALONE_MODES if args.standalone else MODES
    timings: dict[str, list[Timing]] = {mode: [] for mode in modes}
    with benchmark_stack("noisefa_bench_packed") as stack:
        stack.env["NOISEFA_TORCH_THREADS"] = str(args.threads)
        for round_ in range(args.rounds):
            for mode, value in modes.items():
                if args.standalone:
                    stack.use_setting("PACK_WINDOW_S", value, api=True)
                    timing = run_standalone(stack, bodies)
                else:
                    stack.use_setting("PACK_MAX_RUNS", value)
                    timing = run_once(stack, body)
                timings[mode].append(timing)
                report = "" if timing.tail is None else f", report {timing.tail:.1f} s after"
                print(
                    f"round {round_ + 1} {mode:8s}: {timing.wall:6.1f} s wall "
                    f"(first run started after {timing.first_start:.1f} s, runs "
                    f"{timing.runs_span:.1f} s{report})",
                    flush=True,
                )
    median = {mode: statistics.median(t.wall for t in ts) for mode, ts in timings.items()}
    print(
        f"{runs} {'standalone ' if args.standalone else ''}runs, {args.epochs} epochs, "
        f"1 worker of {args.threads} thread(s): "
        f"unpacked {median['unpacked']:.1f} s, "
        f"packed {median['packed']:.1f} s (medians): {median['unpacked'] / median['packed']:.2f}x "
        "less wall time packed",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
