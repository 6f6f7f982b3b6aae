"""An experiment run in this process: every child through :func:`run_job`, then the report.

The local twin of ``worker/experiments.py``, with the same expansion
(:func:`expand_experiment`), the same run path and the same aggregator, so ``noisefa
compare`` prints the table an ``experiment`` job would report. Each child runs in its own
folder under ``<root>/runs/``, so running the same experiment into the same root again
resumes where it stopped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .contract.experiment_spec import ExperimentSpec, expand_experiment
from .contract.limits import Limits
from .contract.states import JobState
from .report import aggregate_experiment
from .run import run_job

OnChildStart = Callable[[str, int], None]  # (condition, seed)


def child_dir(root: Path, condition: str, seed: int) -> Path:
    """Where one child runs: ``<root>/runs/<condition>-seed<seed>`` (one plain name, even
    for a condition called ``..``)."""
    return Path(root) / "runs" / f"{condition}-seed{seed}"


def run_children(
    spec: ExperimentSpec,
    root: Path,
    *,
    limits: Limits | None = None,
    data_dir: Path | None = None,
    download: bool = False,
    on_child_start: OnChildStart | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Run every (condition, seed) child in order; condition → per seed ``{state, history,
    error}``, as :func:`aggregate_experiment` takes them.

    An engine error (a missing dataset, a spec the engine refuses) propagates: unlike a
    worker's crashed run, it would fail every child the same way.
    """
    children: dict[str, list[dict[str, Any]]] = {}
    for condition, specs in expand_experiment(spec, limits).items():
        children[condition] = []
        for child in specs:
            seed = child.model.seed
            if on_child_start is not None:
                on_child_start(condition, seed)
            folder = child_dir(root, condition, seed)
            run_job(child, folder, data_dir=data_dir, download=download)
            lines = (folder / "metrics.jsonl").read_text().splitlines()
            history = [json.loads(line) for line in lines]
            children[condition].append(
                {"state": JobState.SUCCEEDED, "history": history, "error": None}
            )
    return children


def run_experiment(
    spec: ExperimentSpec,
    root: Path,
    *,
    limits: Limits | None = None,
    data_dir: Path | None = None,
    download: bool = False,
    on_child_start: OnChildStart | None = None,
) -> dict[str, Any]:
    """Run every child, then write ``report.json``, ``report.md`` and the plots into
    ``root``; return the report."""
    children = run_children(
        spec,
        root,
        limits=limits,
        data_dir=data_dir,
        download=download,
        on_child_start=on_child_start,
    )
    return aggregate_experiment(spec, children, root)
