"""BP vs FA vs FA with noise pretraining: the paper's comparison as specs, summary and table.

Used by ``noisefa compare`` and by the server-side demo. Histories are lists of metric points
``{"name", "phase", "epoch", "value"}``, the format of ``metrics.jsonl`` and of the API.
Defaults follow DESIGN.md's digits prototype: 64-100-10, Adam 1e-3, 60k noise samples,
batch 64.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from .contract import metric_names as mn
from .contract.spec import JobSpec, parse_spec

CONDITIONS = ("bp", "fa", "fa+noise")
NOISE_SUFFIX = "+noise"


def comparison_specs(
    dataset: str = "digits",
    seeds: Sequence[int] = (0, 1, 2),
    epochs: int = 10,
    *,
    conditions: Sequence[str] = CONDITIONS,
    hidden: Sequence[int] = (100,),
    pretrain_samples: int = 60_000,
    pretrain_epochs: int = 1,
    batch_size: int = 64,
    lr: float = 1e-3,
    device: str = "auto",
) -> dict[str, list[JobSpec]]:
    """One train job per condition × seed; ``<rule>+noise`` adds noise pretraining."""
    specs: dict[str, list[JobSpec]] = {}
    for condition in conditions:
        rule, pretrained = condition.removesuffix(NOISE_SUFFIX), condition.endswith(NOISE_SUFFIX)
        specs[condition] = []
        for seed in seeds:
            data: dict[str, Any] = {
                "kind": "train",
                "model": {"hidden": list(hidden), "rule": rule, "seed": seed},
                "train": {
                    "dataset": dataset,
                    "epochs": epochs,
                    "batch_size": batch_size,
                    "optimizer": {"name": "adam", "lr": lr},
                },
                "device": device,
                "checkpoint_every": epochs,
            }
            if pretrained:
                data["pretrain"] = {
                    "epochs": pretrain_epochs,
                    "samples_per_epoch": pretrain_samples,
                    "batch_size": batch_size,
                    "optimizer": {"name": "adam", "lr": lr},
                }
            specs[condition].append(parse_spec(data))
    return specs


def _series(history: list[dict], name: str, phase: str) -> dict[int, float]:
    return {p["epoch"]: p["value"] for p in history if p["name"] == name and p["phase"] == phase}


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _last_layer(history: list[dict]) -> int:
    prefix = mn.ALIGNMENT_ANGLE + "/"
    return max(
        (int(p["name"][len(prefix) :]) for p in history if p["name"].startswith(prefix)), default=0
    )


def summarize(histories: dict[str, list[list[dict]]], target: float = 0.9) -> list[dict]:
    """Per condition, over seeds: test accuracy (final, best, after epoch 1) as mean ± std,
    epochs to ``target`` test accuracy (mean over the seeds that reached it), the last
    layer's alignment angle before and after pretraining and at the end, layer 1's final
    effective dimensionality and the final generalisation gap (mean ± std)."""
    rows = []
    eff_dim_1 = mn.layer_metric(mn.EFF_DIM, 1)
    for condition, runs in histories.items():
        finals, bests, firsts, to_target = [], [], [], []
        before, after, final_angle, eff_dims, gaps = [], [], [], [], []
        for history in runs:
            accuracy = _series(history, mn.TEST_ACCURACY, "train")
            if accuracy:
                finals.append(accuracy[max(accuracy)])
                bests.append(max(accuracy.values()))
                if 1 in accuracy:
                    firsts.append(accuracy[1])
                reached = [e for e in sorted(accuracy) if accuracy[e] >= target]
                if reached:
                    to_target.append(reached[0])
            angle = mn.layer_metric(mn.ALIGNMENT_ANGLE, _last_layer(history))
            pre = _series(history, angle, "pretrain")
            if pre:
                before.append(pre[min(pre)])
                after.append(pre[max(pre)])
            train = _series(history, angle, "train")
            if train:
                final_angle.append(train[max(train)])
            for values, name in ((eff_dims, eff_dim_1), (gaps, mn.GEN_GAP)):
                series = _series(history, name, "train")
                if series:
                    values.append(series[max(series)])
        row: dict[str, Any] = {"condition": condition, "seeds": len(runs), "target": target}
        row["final_accuracy_mean"], row["final_accuracy_std"] = _mean_std(finals)
        row["best_accuracy_mean"], row["best_accuracy_std"] = _mean_std(bests)
        row["epoch1_accuracy_mean"], row["epoch1_accuracy_std"] = _mean_std(firsts)
        row["epochs_to_target_mean"] = statistics.fmean(to_target) if to_target else None
        row["seeds_reaching_target"] = len(to_target)
        row["angle_before_pretrain"] = _mean_std(before)[0]
        row["angle_after_pretrain"] = _mean_std(after)[0]
        row["angle_final"] = _mean_std(final_angle)[0]
        row["eff_dim_1_final_mean"], row["eff_dim_1_final_std"] = _mean_std(eff_dims)
        row["gen_gap_final_mean"], row["gen_gap_final_std"] = _mean_std(gaps)
        rows.append(row)
    return rows


def format_pm(mean: float | None, std: float | None, scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± std`` scaled (×100 for accuracies in %), ``-`` when there is no value."""
    if mean is None:
        return "-"
    return f"{mean * scale:.{digits}f} ± {(std or 0.0) * scale:.{digits}f}"


def format_num(value: float | None, digits: int = 1) -> str:
    """A number with ``digits`` decimals, ``-`` when missing or NaN."""
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def format_table(rows: list[dict]) -> str:
    """A plain-text table like the paper's: accuracies in %, angles in degrees."""
    target = rows[0]["target"] if rows else 0.9
    header = [
        "condition",
        "test acc %",
        "acc % after 1 ep",
        f"epochs to {target:.0%}",
        "angle before PT",
        "angle after PT",
        "angle final",
    ]
    body = []
    for row in rows:
        reached = row["seeds_reaching_target"]
        epochs = format_num(row["epochs_to_target_mean"])
        if row["epochs_to_target_mean"] is not None and reached < row["seeds"]:
            epochs += f" ({reached}/{row['seeds']})"
        body.append(
            [
                row["condition"],
                format_pm(row["final_accuracy_mean"], row["final_accuracy_std"]),
                format_pm(row["epoch1_accuracy_mean"], row["epoch1_accuracy_std"]),
                epochs,
                format_num(row["angle_before_pretrain"]),
                format_num(row["angle_after_pretrain"]),
                format_num(row["angle_final"]),
            ]
        )
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *body]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
