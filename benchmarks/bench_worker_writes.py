"""A pack's repeated database writes, grouped vs one transaction per member, same run.

A worker task writes, for every member of its pack, each epoch's metrics (the epoch writer)
and every half second a progress beat (the monitor). Grouped, a pack's epochs are one
transaction of three statements (``running.record_epochs``) and its beats one transaction
(``running.report_beats``); the reference writes the same rows one member at a time
(``running.record_epoch`` / ``running.report_progress``, a transaction each). The client's
CPU time is what the training thread waits for (it shares the interpreter), so it is
reported beside the wall time; on a fresh migrated Postgres database and on SQLite.

    python benchmarks/bench_worker_writes.py [--members 9] [--metrics 25] [--repeats 40]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from noisefa.engine.contract.spec import parse_spec
from noisefa.service.db import engine_from_settings, make_sessionmaker
from noisefa.service.repositories import execution, running
from noisefa.service.repositories.jobs import create_job
from noisefa.service.repositories.projects import get_or_create_project
from noisefa.testing.db import migrated, postgres_database, settings_for, sqlite_url
from noisefa.testing.specs import pretrain_spec


def timed(write: Callable[[int], object], repeats: int) -> tuple[float, float]:
    """Milliseconds of wall and of this process's CPU per call of ``write(round)``."""
    write(0)  # statement caches, connections
    wall, cpu = time.perf_counter(), time.process_time()
    for round_ in range(1, repeats + 1):
        write(round_)
    return (
        (time.perf_counter() - wall) / repeats * 1e3,
        (time.process_time() - cpu) / repeats * 1e3,
    )


def compare(database_url: str, home: Path, members: int, metrics: int, repeats: int) -> None:
    settings = migrated(settings_for(home, database_url=database_url))
    engine = engine_from_settings(settings)
    try:
        with make_sessionmaker(engine)() as session:
            project = get_or_create_project(session, "bench-writes")
            spec = parse_spec(pretrain_spec())
            attempts = [
                execution.start_attempt(
                    session, create_job(session, project.id, spec, max_attempts=3).id
                )
                for _ in range(members)
            ]
            values = {f"metric_{i}": float(i) for i in range(metrics)}

            def epochs_alone(epoch: int) -> None:
                for a in attempts:
                    running.record_epoch(session, a, "pretrain", epoch, values)

            def epochs_grouped(epoch: int) -> None:
                epochs = [running.EpochMetrics(a, "pretrain", epoch, values) for a in attempts]
                running.record_epochs(session, epochs)

            def beats_alone(step: int) -> None:
                for a in attempts:
                    running.report_progress(session, a, {"phase": "pretrain", "step": step})

            def beats_grouped(step: int) -> None:
                progress = {"phase": "pretrain", "step": step}
                running.report_beats(session, [running.Beat(a, progress) for a in attempts])

            dialect = engine.dialect.name
            for what, alone, grouped in (
                (f"{members} epochs of {metrics} metrics", epochs_alone, epochs_grouped),
                (f"{members} progress beats", beats_alone, beats_grouped),
            ):
                alone_wall, alone_cpu = timed(alone, repeats)
                grouped_wall, grouped_cpu = timed(grouped, repeats)
                print(
                    f"{dialect:10s} {what}: one transaction each {alone_wall:5.1f} ms wall "
                    f"({alone_cpu:5.1f} ms CPU), grouped {grouped_wall:5.1f} ms "
                    f"({grouped_cpu:5.1f} ms CPU): {alone_cpu / grouped_cpu:.1f}x less CPU",
                    flush=True,
                )
    finally:
        engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=9, help="members of the pack")
    parser.add_argument("--metrics", type=int, default=25, help="metrics of an epoch")
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        with postgres_database("noisefa_bench_writes") as url:
            compare(url, Path(tmp) / "pg", args.members, args.metrics, args.repeats)
        home = Path(tmp) / "sqlite"
        compare(sqlite_url(home / "db"), home, args.members, args.metrics, args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
