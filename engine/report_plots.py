"""An experiment report's PNG plots, drawn from the report's numbers (:mod:`.report`).

The report lists the plots it has (:func:`listed_plots`: the rule × noise plot only for
conditions that form such a matrix); exactly those are written, and the worker uploads what
the report lists. A reliability diagram without bins is a single panel saying so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .contract import metric_names as mn

RULES_MATRIX = "rules_matrix"
PLOTS = {
    mn.TEST_ACCURACY: "test_accuracy.png",
    mn.ALIGNMENT_ANGLE: "alignment_angle.png",
    mn.EFF_DIM: "eff_dim.png",
    mn.ECE: "reliability.png",
    RULES_MATRIX: "rules_matrix.png",
}


def listed_plots(report: dict[str, Any]) -> list[str]:
    """The plots the report shows: all but the rule × noise plot of an experiment that has
    no such matrix."""
    return [
        name
        for key, name in PLOTS.items()
        if key != RULES_MATRIX or report.get("rule_noise_matrix") is not None
    ]


def write_plots(report: dict[str, Any], out_dir: Path) -> None:
    """Test accuracy (seed bands), alignment angle and eff_dim vs epoch, one line per
    condition; a reliability diagram per condition (always written, empty without bins); the
    rule × noise plot where the conditions form such a matrix."""
    from .plots import new_figure, plot_reliability_panels, save_figure

    series = {
        mn.TEST_ACCURACY: ("test accuracy", None),
        mn.ALIGNMENT_ANGLE: ("last-layer alignment angle (°)", "alignment_angle_by_epoch"),
        mn.EFF_DIM: ("eff_dim of W1 (participation ratio)", "eff_dim_by_epoch"),
    }
    for metric, (label, key) in series.items():  # the reliability diagram is drawn below
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
    panels = {
        name: c["reliability"]
        for name, c in report["conditions"].items()
        if c.get("reliability") is not None
    }
    plot_reliability_panels(panels, out_dir / PLOTS[mn.ECE])
    if PLOTS[RULES_MATRIX] in listed_plots(report):
        _plot_rules_matrix(report, out_dir / PLOTS[RULES_MATRIX])


def _plot_rules_matrix(report: dict[str, Any], path: Path) -> None:
    """Per rule, final test accuracy without and with noise pretraining: bars at the mean
    over the seeds that succeeded, error bars ± one std, a dot per seed."""
    from .plots import new_figure, save_figure

    matrix = report.get("rule_noise_matrix")
    figure, (axis,) = new_figure(1, width=max(6.0, 1.1 * len(matrix or [])), height=4)
    if matrix is None:
        axis.set(title="the conditions are not a rule × noise matrix", xticks=[], yticks=[])
        save_figure(figure, path)
        return
    width = 0.38
    for offset, setting, label in (
        (-width / 2, "without", "without noise"),
        (width / 2, "with", "with noise"),
    ):
        positions, means, stds = [], [], []
        for x, row in enumerate(matrix["rows"]):
            accuracy = row["metrics"]["final_test_accuracy"][setting]
            positions.append(x + offset)
            means.append(accuracy["mean"] if accuracy["mean"] is not None else 0.0)
            stds.append(accuracy["std"] or 0.0)
            per_seed = report["conditions"][row[setting]].get("per_seed", {})
            seeds = [v for v in per_seed.get("final_test_accuracy", []) if v is not None]
            axis.plot([x + offset] * len(seeds), seeds, ".", color="black", markersize=4)
        axis.bar(positions, means, width, yerr=stds, capsize=3, label=label)
    axis.set_xticks(range(len(matrix["rows"])), [row["rule"] for row in matrix["rows"]])
    axis.set(ylabel="final test accuracy", xlabel="rule", ylim=(0, 1))
    axis.set_title("mean ± std over seeds; dots: one seed each", fontsize=9)
    axis.legend(loc="lower right")
    save_figure(figure, path)
