"""An experiment's children aggregated into one report: a table per condition and plots.

Pure functions over metric histories (the ``metrics.jsonl`` / API format); the only I/O is
writing ``report.json``, ``report.md`` and PNG plots into a given folder. A child that did not
succeed marks its cell with its state and reason; the condition aggregates over the seeds
that did, so one crashed run never hides the rest of the table. The worker and
``noisefa compare`` both aggregate here; how the table reads is :mod:`.report_format`.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path
from typing import Any

from .contract import metric_names as mn
from .contract.experiment_spec import ExperimentSpec, child_body
from .contract.spec import EarlyStopSpec
from .contract.states import JobState
from .convergence import converged_epoch
from .report_format import format_matrix_table, format_report_md, format_report_table
from .report_matrix import (
    COMPARED_PAIRS,
    find_rule_noise_matrix,
    matrix_pairs,
    rule_noise_rows,
)
from .report_pairs import mean_std, paired_comparisons, present
from .report_plots import PLOTS, listed_plots, write_plots
from .report_reliability import pooled_reliability

__all__ = ["PLOTS", "REPORT_JSON", "REPORT_MD", "aggregate_experiment"]

REPORT_JSON, REPORT_MD = "report.json", "report.md"


def aggregate_experiment(
    spec: ExperimentSpec, children: dict[str, list[dict]], out_dir: Path
) -> dict:
    """Aggregate ``children`` (condition → per seed ``{state, history, error}``) into a report.

    Writes ``report.json``, ``report.md`` and the plots into ``out_dir``; returns the report:
    ``{"target_accuracy", "seeds", "conditions": {name: {state, seeds_succeeded, cells,
    per_seed, final_test_accuracy: {mean, std}, best_test_accuracy, epoch1_test_accuracy,
    epochs_to_target: {mean, seeds_reached}, epochs_to_converge: {mean, seeds_reached},
    converged_test_accuracy: {mean, std}, alignment_angle: {layer, before_pretrain,
    after_pretrain, final}, alignment_angle_final_by_layer: {layer: {mean, std}},
    eff_dim_1_final, gen_gap_final, ece_final, reliability: {counts, accuracy, confidence}
    (per bin, pooled over seeds; None without bins), test_accuracy_by_epoch,
    test_accuracy_std_by_epoch, alignment_angle_by_epoch, eff_dim_by_epoch}}, "early_stop",
    "paired", "rule_noise_matrix", "plots", "table"}`` (``early_stop``: whether any condition
    trains to convergence).
    ``per_seed`` holds each metric's value per cell (``None`` where the run did not succeed);
    ``paired`` compares pairs of conditions over their common seeds
    (:func:`.report_pairs.paired_comparisons`): every pair, or for a rule × noise matrix
    (:mod:`.report_matrix`) those sharing the rule or the noise setting; then
    ``rule_noise_matrix`` is ``{rows: [one per rule], table, paired_pairs}`` (else ``None``).
    ``plots`` lists the plots that show something. ``*_by_epoch`` lists are means over the
    succeeded seeds, indexed by train epoch; the angle and eff_dim series are ``{"epochs":
    [...], "mean": [...]}`` with pretraining at epochs ≤ 0 (its last epoch is train epoch 0).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    conditions: dict[str, Any] = {}
    for name in spec.conditions:
        runs = children.get(name, [])
        cells = [
            _cell(seed, runs[i] if i < len(runs) else None) for i, seed in enumerate(spec.seeds)
        ]
        histories = [
            run["history"] if cell["state"] == JobState.SUCCEEDED else None
            for run, cell in zip(runs, cells, strict=False)
        ]
        histories += [None] * (len(cells) - len(histories))
        early_stop = _early_stop(spec, name)
        conditions[name] = _condition(cells, histories, spec.target_accuracy, early_stop)
    seeds = list(spec.seeds)
    matrix = find_rule_noise_matrix(spec)
    pairs = matrix_pairs(list(conditions), matrix) if matrix is not None else None
    report = {
        "target_accuracy": spec.target_accuracy,
        "seeds": seeds,
        "conditions": conditions,
        "early_stop": any(_early_stop(spec, name) for name in spec.conditions),
        "paired": paired_comparisons(conditions, seeds, pairs),
        "rule_noise_matrix": None,
    }
    if matrix is not None:
        rows = rule_noise_rows(conditions, seeds, matrix)
        report["rule_noise_matrix"] = {
            "rows": rows,
            "table": format_matrix_table(rows),
            "paired_pairs": COMPARED_PAIRS,
        }
    report["plots"] = listed_plots(report)
    report["table"] = format_report_table(report)
    write_plots(report, out_dir)
    _write(out_dir / REPORT_JSON, json.dumps(_finite(report), indent=2, allow_nan=False))
    _write(out_dir / REPORT_MD, format_report_md(report))
    return report


def _cell(seed: int, run: dict | None) -> dict[str, Any]:
    """One (condition, seed) cell: its state, and the reason when it did not succeed."""
    if run is None:
        return {"seed": seed, "state": "missing", "reason": "missing", "message": "no result"}
    state = run.get("state", "failed")
    cell: dict[str, Any] = {"seed": seed, "state": state, "reason": None, "message": None}
    if state != JobState.SUCCEEDED:
        error = run.get("error") or {}
        cell["reason"] = error.get("reason", state)
        cell["message"] = error.get("message")
    return cell


def _early_stop(spec: ExperimentSpec, condition: str) -> EarlyStopSpec | None:
    """The condition's ``train.early_stop`` (the same for every seed; validated already)."""
    train = child_body(spec, condition, spec.seeds[0]).get("train") or {}
    raw = train.get("early_stop")
    return EarlyStopSpec.model_validate(raw) if raw else None


def _condition(
    cells: list[dict],
    histories: list[list[dict] | None],
    target: float,
    early_stop: EarlyStopSpec | None = None,
) -> dict[str, Any]:
    """One condition's entry: its cells (``histories[i]`` is cell i's, ``None`` when it did
    not succeed), each cell's values, and the summary over the seeds that succeeded."""
    succeeded = [h for h in histories if h is not None]
    ok = len(succeeded)
    state = "succeeded" if ok == len(cells) else "failed" if ok == 0 else "partial"
    entry: dict[str, Any] = {"state": state, "seeds_succeeded": ok, "cells": cells}
    if not succeeded:
        return entry
    last_layer = max(_last_layer(h) for h in succeeded)
    values = [_seed_values(h, target, last_layer, early_stop) if h else {} for h in histories]
    per_seed = {key: [v.get(key) for v in values] for key in SEED_METRICS}
    layers = sorted({layer for v in values for layer in v.get("angle_by_layer", {})})
    entry["per_seed"] = per_seed | {
        "alignment_angle_final_by_layer": {
            str(layer): [v.get("angle_by_layer", {}).get(layer) for v in values] for layer in layers
        }
    }
    entry |= _summary(per_seed, last_layer)
    entry["alignment_angle_final_by_layer"] = {
        layer: mean_std(seeds)
        for layer, seeds in entry["per_seed"]["alignment_angle_final_by_layer"].items()
    }
    accuracy = _by_epoch(succeeded, mn.TEST_ACCURACY, include_pretrain=False)
    entry["test_accuracy_by_epoch"] = accuracy["mean"]
    entry["test_accuracy_std_by_epoch"] = accuracy["std"]
    angle = mn.layer_metric(mn.ALIGNMENT_ANGLE, last_layer)
    entry["alignment_angle_by_epoch"] = _by_epoch(succeeded, angle, include_pretrain=True)
    entry["eff_dim_by_epoch"] = _by_epoch(
        succeeded, mn.layer_metric(mn.EFF_DIM, 1), include_pretrain=True
    )
    entry["reliability"] = pooled_reliability(succeeded)
    return entry


# What each succeeded run contributes to its condition's summary and the paired statistics.
SEED_METRICS = (
    "final_test_accuracy",
    "best_test_accuracy",
    "epoch1_test_accuracy",
    "epochs_to_target",
    "epochs_to_converge",
    "converged_test_accuracy",
    "angle_before_pretrain",
    "angle_after_pretrain",
    "angle_final",
    "eff_dim_1_final",
    "gen_gap_final",
    "ece_final",
)


def _seed_values(
    history: list[dict], target: float, last_layer: int, early_stop: EarlyStopSpec | None
) -> dict[str, Any]:
    """One run's values: test accuracy (final, best, after epoch 1), the first epoch at
    ``target`` test accuracy, the epoch it converged at and its accuracy there (with
    ``early_stop``; :func:`.convergence.converged_epoch`), the last layer's alignment angle
    before and after pretraining and at the end, every layer's final angle, layer 1's final
    eff_dim, the final gen gap; ``None`` for what the run did not record."""
    accuracy = _series(history, mn.TEST_ACCURACY, "train")
    pre = _series(history, mn.layer_metric(mn.ALIGNMENT_ANGLE, last_layer), "pretrain")
    reached = [e for e in sorted(accuracy) if accuracy[e] >= target]
    converged = None
    if early_stop is not None:
        converged = converged_epoch([accuracy[e] for e in sorted(accuracy)], early_stop)
    prefix = mn.ALIGNMENT_ANGLE + "/"
    angle_by_layer = {
        int(p["name"][len(prefix) :]): p["value"]
        for p in history
        if p["phase"] == "train" and p["name"].startswith(prefix)
    }  # later epochs overwrite earlier ones: the final angle per layer

    def final(name: str) -> float | None:
        series = _series(history, name, "train")
        return series[max(series)] if series else None

    return {
        "final_test_accuracy": accuracy[max(accuracy)] if accuracy else None,
        "best_test_accuracy": max(accuracy.values()) if accuracy else None,
        "epoch1_test_accuracy": accuracy.get(1),
        "epochs_to_target": reached[0] if reached else None,
        "epochs_to_converge": converged,
        "converged_test_accuracy": accuracy[converged] if converged is not None else None,
        "angle_before_pretrain": pre[min(pre)] if pre else None,
        "angle_after_pretrain": pre[max(pre)] if pre else None,
        "angle_final": final(mn.layer_metric(mn.ALIGNMENT_ANGLE, last_layer)),
        "eff_dim_1_final": final(mn.layer_metric(mn.EFF_DIM, 1)),
        "gen_gap_final": final(mn.GEN_GAP),
        "ece_final": final(mn.ECE),
        "angle_by_layer": angle_by_layer,
    }


def _summary(per_seed: dict[str, list], last_layer: int) -> dict[str, Any]:
    """Over the seeds that recorded it: mean ± std of each value; epochs to target as the
    mean over the seeds that reached it; the last layer's angles as means."""
    to_target = present(per_seed["epochs_to_target"])
    to_converge = present(per_seed["epochs_to_converge"])
    return {
        "final_test_accuracy": mean_std(per_seed["final_test_accuracy"]),
        "best_test_accuracy": mean_std(per_seed["best_test_accuracy"]),
        "epoch1_test_accuracy": mean_std(per_seed["epoch1_test_accuracy"]),
        "epochs_to_target": {
            "mean": statistics.fmean(to_target) if to_target else None,
            "seeds_reached": len(to_target),
        },
        "epochs_to_converge": {
            "mean": statistics.fmean(to_converge) if to_converge else None,
            "seeds_reached": len(to_converge),
        },
        "converged_test_accuracy": mean_std(per_seed["converged_test_accuracy"]),
        "alignment_angle": {
            "layer": last_layer,
            "before_pretrain": mean_std(per_seed["angle_before_pretrain"])["mean"],
            "after_pretrain": mean_std(per_seed["angle_after_pretrain"])["mean"],
            "final": mean_std(per_seed["angle_final"])["mean"],
        },
        "eff_dim_1_final": mean_std(per_seed["eff_dim_1_final"]),
        "gen_gap_final": mean_std(per_seed["gen_gap_final"]),
        "ece_final": mean_std(per_seed["ece_final"]),
    }


def _series(history: list[dict], name: str, phase: str) -> dict[int, float]:
    """Epoch → value of one metric in one phase."""
    return {p["epoch"]: p["value"] for p in history if p["name"] == name and p["phase"] == phase}


def _last_layer(history: list[dict]) -> int:
    """The highest layer with an alignment angle (the readout), 1 when there is none."""
    prefix = mn.ALIGNMENT_ANGLE + "/"
    return max(
        (int(p["name"][len(prefix) :]) for p in history if p["name"].startswith(prefix)), default=1
    )


def _by_epoch(histories: list[list[dict]], name: str, *, include_pretrain: bool) -> dict[str, list]:
    """Mean and std over seeds per epoch; pretraining epochs shifted to end at 0."""
    per_epoch: dict[int, list[float]] = {}
    for history in histories:
        points = [p for p in history if p["name"] == name]
        pretrain = [p for p in points if p["phase"] == "pretrain"]
        shift = max((p["epoch"] for p in pretrain), default=0)
        for p in points:
            if p["phase"] == "train":
                per_epoch.setdefault(p["epoch"], []).append(p["value"])
            elif include_pretrain and p["epoch"] < shift:  # its last epoch is train epoch 0
                per_epoch.setdefault(p["epoch"] - shift, []).append(p["value"])
    epochs = sorted(per_epoch)
    return {
        "epochs": epochs,
        "mean": [statistics.fmean(per_epoch[e]) for e in epochs],
        "std": [statistics.stdev(per_epoch[e]) if len(per_epoch[e]) > 1 else 0.0 for e in epochs],
    }


def _finite(value: Any) -> Any:
    """``value`` with NaN/inf floats (a diverged run) as ``None``, so the JSON is strict."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
