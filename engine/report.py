"""An experiment's children aggregated into one report: a table per condition and plots.

Pure functions over metric histories (the ``metrics.jsonl`` / API format); the only I/O is
writing ``report.json``, ``report.md`` and PNG plots into a given folder. A child that did not
succeed marks its cell with its state and reason; the condition aggregates over the seeds
that did, so one crashed run never hides the rest of the table.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path
from typing import Any

from .compare import format_num, format_pm, summarize
from .contract import metric_names as mn
from .contract.experiment_spec import ExperimentSpec

REPORT_JSON, REPORT_MD = "report.json", "report.md"
PLOTS = {
    mn.TEST_ACCURACY: "test_accuracy.png",
    mn.ALIGNMENT_ANGLE: "alignment_angle.png",
    mn.EFF_DIM: "eff_dim.png",
}


def aggregate_experiment(
    spec: ExperimentSpec, children: dict[str, list[dict]], out_dir: Path
) -> dict:
    """Aggregate ``children`` (condition → per seed ``{state, history, error}``) into a report.

    Writes ``report.json``, ``report.md`` and the plots into ``out_dir``; returns the report:
    ``{"target_accuracy", "seeds", "conditions": {name: {state, seeds_succeeded, cells,
    final_test_accuracy: {mean, std}, best_test_accuracy, epoch1_test_accuracy,
    epochs_to_target: {mean, seeds_reached}, alignment_angle: {before_pretrain,
    after_pretrain, final}, eff_dim_1_final, gen_gap_final, test_accuracy_by_epoch,
    test_accuracy_std_by_epoch, alignment_angle_by_epoch, eff_dim_by_epoch}}, "plots",
    "table"}``. ``*_by_epoch`` lists are means over the succeeded seeds, indexed by train
    epoch; the angle and eff_dim series are ``{"epochs": [...], "mean": [...]}`` with
    pretraining at epochs ≤ 0 (its last epoch is train epoch 0).
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
            run["history"]
            for run, cell in zip(runs, cells, strict=False)
            if cell["state"] == "succeeded"
        ]
        conditions[name] = _condition(name, cells, histories, spec.target_accuracy)
    report = {
        "target_accuracy": spec.target_accuracy,
        "seeds": list(spec.seeds),
        "conditions": conditions,
        "plots": list(PLOTS.values()),
    }
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
    if state != "succeeded":
        error = run.get("error") or {}
        cell["reason"] = error.get("reason", state)
        cell["message"] = error.get("message")
    return cell


def _condition(
    name: str, cells: list[dict], histories: list[list[dict]], target: float
) -> dict[str, Any]:
    ok = len(histories)
    state = "succeeded" if ok == len(cells) else "failed" if ok == 0 else "partial"
    entry: dict[str, Any] = {"state": state, "seeds_succeeded": ok, "cells": cells}
    if not histories:
        return entry
    row = summarize({name: histories}, target)[0]
    last_layer = max(_layers(h) for h in histories)
    entry |= {
        "final_test_accuracy": _ms(row, "final_accuracy"),
        "best_test_accuracy": _ms(row, "best_accuracy"),
        "epoch1_test_accuracy": _ms(row, "epoch1_accuracy"),
        "epochs_to_target": {
            "mean": row["epochs_to_target_mean"],
            "seeds_reached": row["seeds_reaching_target"],
        },
        "alignment_angle": {
            "layer": last_layer,
            "before_pretrain": row["angle_before_pretrain"],
            "after_pretrain": row["angle_after_pretrain"],
            "final": row["angle_final"],
        },
        "eff_dim_1_final": _ms(row, "eff_dim_1_final"),
        "gen_gap_final": _ms(row, "gen_gap_final"),
    }
    accuracy = _by_epoch(histories, mn.TEST_ACCURACY, include_pretrain=False)
    entry["test_accuracy_by_epoch"] = accuracy["mean"]
    entry["test_accuracy_std_by_epoch"] = accuracy["std"]
    angle = mn.layer_metric(mn.ALIGNMENT_ANGLE, last_layer)
    entry["alignment_angle_by_epoch"] = _by_epoch(histories, angle, include_pretrain=True)
    entry["eff_dim_by_epoch"] = _by_epoch(
        histories, mn.layer_metric(mn.EFF_DIM, 1), include_pretrain=True
    )
    return entry


def _ms(row: dict, key: str) -> dict[str, float | None]:
    return {"mean": row[f"{key}_mean"], "std": row[f"{key}_std"]}


def _layers(history: list[dict]) -> int:
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


def format_report_table(report: dict) -> list[dict[str, str]]:
    """The human table: one row of formatted columns per condition (accuracies in %)."""
    rows = []
    for name, c in report["conditions"].items():
        cells = c["cells"]
        row = {
            "condition": name,
            "runs ok": f"{c['seeds_succeeded']}/{len(cells)}",
            "final test acc %": "-",
            "best test acc %": "-",
            f"epochs to {report['target_accuracy']:.0%}": "-",
            "angle before PT": "-",
            "angle after PT": "-",
            "angle final": "-",
            "eff_dim W1": "-",
            "gen gap": "-",
        }
        if c["seeds_succeeded"]:
            to_target = c["epochs_to_target"]
            reached = format_num(to_target["mean"])
            if to_target["mean"] is not None and to_target["seeds_reached"] < c["seeds_succeeded"]:
                reached += f" ({to_target['seeds_reached']}/{c['seeds_succeeded']})"
            angles = c["alignment_angle"]
            row |= {
                "final test acc %": format_pm(**c["final_test_accuracy"]),
                "best test acc %": format_pm(**c["best_test_accuracy"]),
                f"epochs to {report['target_accuracy']:.0%}": reached,
                "angle before PT": format_num(angles["before_pretrain"]),
                "angle after PT": format_num(angles["after_pretrain"]),
                "angle final": format_num(angles["final"]),
                "eff_dim W1": format_pm(**c["eff_dim_1_final"], scale=1.0),
                "gen gap": format_pm(**c["gen_gap_final"], scale=1.0, digits=3),
            }
        rows.append(row)
    return rows


def format_report_md(report: dict) -> str:
    """``report.md``: the table as Markdown, failed cells with their reasons, the plots."""
    table = report["table"]
    lines = ["# Experiment report", ""]
    lines.append(
        f"Seeds {report['seeds']}; accuracies in % (mean ± std over the seeds that "
        "succeeded); angles in degrees (last layer); eff_dim is layer 1's participation ratio."
    )
    lines.append("")
    if table:
        header = list(table[0])
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(" --- " for _ in header) + "|")
        lines += ["| " + " | ".join(row[h] for h in header) + " |" for row in table]
    failed = [
        (name, cell)
        for name, c in report["conditions"].items()
        for cell in c["cells"]
        if cell["state"] != "succeeded"
    ]
    if failed:
        lines += ["", "## Runs that did not succeed", ""]
        lines += [
            f"- {name}, seed {cell['seed']}: {cell['state']} ({cell['reason']})"
            + (f": {cell['message']}" if cell["message"] else "")
            for name, cell in failed
        ]
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in report["plots"]]
    return "\n".join(lines) + "\n"


def write_plots(report: dict, out_dir: Path) -> None:
    """Test accuracy (seed bands), alignment angle and eff_dim vs epoch, one line per condition."""
    from .plots import new_figure, save_figure

    series = {
        mn.TEST_ACCURACY: ("test accuracy", None),
        mn.ALIGNMENT_ANGLE: ("last-layer alignment angle (°)", "alignment_angle_by_epoch"),
        mn.EFF_DIM: ("eff_dim of W1 (participation ratio)", "eff_dim_by_epoch"),
    }
    for metric, (label, key) in series.items():
        figure, (axis,) = new_figure(1, width=6, height=4)
        for name, c in report["conditions"].items():
            if not c["seeds_succeeded"]:
                continue
            if key is None:
                mean, std = c["test_accuracy_by_epoch"], c["test_accuracy_std_by_epoch"]
                epochs = list(range(len(mean)))
            else:
                epochs, mean, std = c[key]["epochs"], c[key]["mean"], c[key]["std"]
            (line,) = axis.plot(epochs, mean, marker="o", markersize=3, label=name)
            low = [m - s for m, s in zip(mean, std, strict=True)]
            high = [m + s for m, s in zip(mean, std, strict=True)]
            axis.fill_between(epochs, low, high, color=line.get_color(), alpha=0.2)
        xlabel = "train epoch" if key is None else "epoch (≤ 0: noise pretraining)"
        axis.set(xlabel=xlabel, ylabel=label)
        if axis.get_legend_handles_labels()[0]:
            axis.legend()
        save_figure(figure, out_dir / PLOTS[metric])


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
