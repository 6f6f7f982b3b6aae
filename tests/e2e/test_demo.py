"""``noisefa demo`` (README's first command) runs the comparison on a fresh embedded service:
one ``experiment`` job whose runs the server fans out and aggregates."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from noisefa.commands.processes import free_port
from noisefa.engine.report_format import format_table_text
from noisefa.service.db import engine_from_settings, make_sessionmaker
from noisefa.service.models import Job
from noisefa.service.settings import Settings

DEMO_TIMEOUT_S = 300
SEEDS = 3


def test_demo_runs_one_comparison_experiment_and_prints_its_report(tmp_path: Path):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOISEFA_")}
    env["NOISEFA_HOME"] = str(home)
    env.setdefault("OMP_NUM_THREADS", "1")  # see noisefa/testing/stack.py: stack_env
    nobody = f"http://127.0.0.1:{free_port()}"  # no service there: the demo starts its own
    done = subprocess.run(
        [sys.executable, "-m", "noisefa.cli", "demo", "--url", nobody, "--seeds", str(SEEDS)]
        + ["--epochs", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]

    # What the embedded service stored: one experiment, its runs as children, nothing else.
    engine = engine_from_settings(Settings(home=home, database_url=None))
    try:
        with make_sessionmaker(engine)() as session:
            jobs = list(session.scalars(select(Job)))
    finally:
        engine.dispose()
    [experiment] = [job for job in jobs if job.parent_id is None]
    runs = [job for job in jobs if job.parent_id == experiment.id]
    assert experiment.kind == "experiment" and experiment.state == "succeeded"
    assert len(runs) == len(jobs) - 1 == 3 * SEEDS
    assert sorted((run.condition, run.spec["model"]["seed"]) for run in runs) == sorted(
        (condition, seed) for condition in ("bp", "fa", "fa+noise") for seed in range(SEEDS)
    )
    assert all(run.kind == "train" and run.state == "succeeded" for run in runs)

    # The printed table is the server's report, not a client-side summary.
    assert format_table_text(experiment.result["table"]) in done.stdout
    rows = {line.split()[0] for line in done.stdout.splitlines() if line.strip()}
    assert {"condition", "bp", "fa", "fa+noise"} <= rows
    paths = [line.split(": ", 1)[1] for line in done.stdout.splitlines() if " seed 0: " in line]
    assert len(paths) == 3
    assert all(Path(path).is_file() and path.endswith(".safetensors") for path in paths)
