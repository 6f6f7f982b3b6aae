"""``result.json``: what a finished run reports (spec, final metrics, per-phase summary, and
where it converged when ``train.early_stop`` is set).

Written atomically into the run's folder at the end of :func:`~.run.run_jobs`, and rebuilt
from the same history on a rerun of a finished job, so both give the same file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .contract import metric_names as mn
from .contract.spec import EarlyStopSpec, JobSpec
from .convergence import converged_epoch


def write_result(
    spec: JobSpec, history: list[dict[str, Any]], final_checkpoint: Path | None, out_dir: Path
) -> dict:
    """Write ``result.json`` atomically into ``out_dir`` and return its content."""
    result = build_result(spec, history, final_checkpoint, out_dir)
    tmp = out_dir / ".result.json.tmp"
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, out_dir / "result.json")
    return result


def build_result(
    spec: JobSpec, history: list[dict[str, Any]], final_checkpoint: Path | None, out_dir: Path
) -> dict:
    """``result.json``: spec, last epoch's metrics, a per-phase summary, final checkpoint."""
    phases = []
    for name in spec.phases():
        points = [p for p in history if p["phase"] == name]
        if not points:
            continue
        last_epoch = max(p["epoch"] for p in points)
        phases.append({"name": name, "epochs": last_epoch})
    final_metrics: dict[str, float] = {}
    if phases:
        last = phases[-1]
        final_metrics = {
            p["name"]: p["value"]
            for p in history
            if p["phase"] == last["name"] and p["epoch"] == last["epochs"]
        }
    result = {
        "spec": json.loads(spec.canonical_json()),
        "final_metrics": final_metrics,
        "summary": summarize_history(history),
        "final_checkpoint": (
            final_checkpoint.relative_to(out_dir).as_posix() if final_checkpoint else None
        ),
        "phases": phases,
    }
    if spec.train is not None and spec.train.early_stop is not None:
        result["convergence"] = convergence(history, spec.train.early_stop)
    return result


def convergence(history: list[dict[str, Any]], early_stop: EarlyStopSpec) -> dict[str, Any]:
    """``converged_epoch`` (``None``: still improving at ``epochs``), the test accuracy
    there, and the train epoch the phase ended at."""
    accuracy = {
        p["epoch"]: p["value"]
        for p in history
        if p["phase"] == "train" and p["name"] == mn.TEST_ACCURACY
    }
    epoch = converged_epoch([accuracy[e] for e in sorted(accuracy)], early_stop)
    return {
        "converged_epoch": epoch,
        "converged_test_accuracy": accuracy[epoch] if epoch is not None else None,
        "stopped_epoch": max(accuracy, default=None),
    }


def summarize_history(history: list[dict[str, Any]]) -> dict[str, Any]:
    """Per phase: first and last alignment angle of the readout layer, best test accuracy."""
    summary: dict[str, Any] = {}
    layers = [int(p["name"].split("/")[1]) for p in history if p["name"].startswith("alignment")]
    last_layer = max(layers, default=0)
    angle_name = mn.layer_metric(mn.ALIGNMENT_ANGLE, last_layer)
    for phase in dict.fromkeys(p["phase"] for p in history):
        points = [p for p in history if p["phase"] == phase]
        angles = sorted((p["epoch"], p["value"]) for p in points if p["name"] == angle_name)
        tests = [(p["value"], p["epoch"]) for p in points if p["name"] == mn.TEST_ACCURACY]
        entry: dict[str, Any] = {
            "epochs": max(p["epoch"] for p in points),
            "last_layer": last_layer,
            "alignment_angle_first": angles[0][1] if angles else None,
            "alignment_angle_last": angles[-1][1] if angles else None,
        }
        if tests:
            best, best_epoch = max(tests, key=lambda t: (t[0], -t[1]))
            entry |= {"best_test_accuracy": best, "best_test_accuracy_epoch": best_epoch}
        summary[phase] = entry
    return summary
