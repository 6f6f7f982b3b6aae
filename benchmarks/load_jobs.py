"""Load test: N tiny jobs submitted concurrently to a real deployment on loopback, run by W
workers; prints throughput and latency figures, and checks nothing was lost or duplicated.

    python benchmarks/load_jobs.py --jobs 500 --workers 2

starts its own stack (a fresh Postgres database, the benchmarks' Redis database, local
storage in a temporary folder, the API and W ``noisefa worker`` processes) and tears it down
after.
``tests/faults/test_fault_load.py`` runs the same measurement at CI size.
"""

from __future__ import annotations

import argparse
import sys

from noisefa.testing.load import NO_QUOTA, run_load
from noisefa.testing.stack import benchmark_stack


def main(argv: list[str] | None = None) -> int:
    """Run the load test on a fresh local stack and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16, help="Concurrent submitters.")
    args = parser.parse_args(argv)

    with benchmark_stack("noisefa_load", **NO_QUOTA) as stack:
        result = run_load(stack, args.jobs, args.workers, threads=args.threads)
    sys.stdout.write(result.report() + "\n")
    ok = result.lost == 0 and result.duplicated_jobs == 0 and result.duplicated_metric_points == 0
    return 0 if ok and result.states.get("succeeded") == args.jobs else 1


if __name__ == "__main__":
    raise SystemExit(main())
