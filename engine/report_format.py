"""How an experiment report reads: one table of formatted cells, as Markdown or plain text.

:func:`format_report_table` is the only place that turns numbers into the table's cells
(accuracies in %, angles in degrees); ``report.md``, the experiment job's ``result.table``,
``noisefa compare`` and ``noisefa demo`` all show those rows. Torch-free, so a client that
only prints a report imports no engine.
"""

from __future__ import annotations

import math
from typing import Any

from .contract.states import JobState

Table = list[dict[str, str]]

# The per-seed values the paired comparisons cover, and how their rows read.
PAIRED_METRICS = {
    "final_test_accuracy": "final test acc",
    "epoch1_test_accuracy": "test acc after 1 ep",
    "angle_final": "last-layer angle",
}


def format_pm(mean: float | None, std: float | None, scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± std`` scaled (×100 for accuracies in %), ``-`` when there is no value."""
    if mean is None:
        return "-"
    return f"{mean * scale:.{digits}f} ± {(std or 0.0) * scale:.{digits}f}"


def format_num(value: float | None, digits: int = 1) -> str:
    """A number with ``digits`` decimals, ``-`` when missing or NaN."""
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def format_report_table(report: dict[str, Any]) -> Table:
    """The human table: one row of formatted columns per condition (accuracies in %)."""
    to_target_column = f"epochs to {report['target_accuracy']:.0%}"
    rows = []
    for name, c in report["conditions"].items():
        cells = c["cells"]
        row = {
            "condition": name,
            "runs ok": f"{c['seeds_succeeded']}/{len(cells)}",
            "final test acc %": "-",
            "best test acc %": "-",
            "acc % after 1 ep": "-",
            to_target_column: "-",
            **dict.fromkeys(CONVERGENCE_COLUMNS if report.get("early_stop") else (), "-"),
            "angle before PT": "-",
            "angle after PT": "-",
            "angle final": "-",
            "eff_dim W1": "-",
            "gen gap": "-",
            "ECE": "-",
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
                "acc % after 1 ep": format_pm(**c["epoch1_test_accuracy"]),
                to_target_column: reached,
                **(_convergence_cells(c) if report.get("early_stop") else {}),
                "angle before PT": format_num(angles["before_pretrain"]),
                "angle after PT": format_num(angles["after_pretrain"]),
                "angle final": format_num(angles["final"]),
                "eff_dim W1": format_pm(**c["eff_dim_1_final"], scale=1.0),
                "gen gap": format_pm(**c["gen_gap_final"], scale=1.0, digits=3),
                "ECE": format_pm(**c["ece_final"], scale=1.0, digits=3),
            }
        rows.append(row)
    return rows


CONVERGENCE_COLUMNS = ("epochs to converge", "acc % at convergence")


def _convergence_cells(condition: dict[str, Any]) -> dict[str, str]:
    """Epochs to converge (with how many seeds converged within ``epochs`` when not all) and
    the test accuracy there, for an experiment that trains to convergence."""
    to_converge = condition["epochs_to_converge"]
    epochs = format_num(to_converge["mean"])
    if (
        to_converge["mean"] is not None
        and to_converge["seeds_reached"] < condition["seeds_succeeded"]
    ):
        epochs += f" ({to_converge['seeds_reached']}/{condition['seeds_succeeded']})"
    return dict(
        zip(
            CONVERGENCE_COLUMNS,
            (epochs, format_pm(**condition["converged_test_accuracy"])),
            strict=True,
        )
    )


def format_table_text(table: Table) -> str:
    """The table as aligned plain text with a rule under the header, for a terminal."""
    if not table:
        return ""
    header = list(table[0])
    body = [[row[column] for column in header] for row in table]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)).rstrip()
        for r in [header, *body]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def format_report_md(report: dict[str, Any]) -> str:
    """``report.md``: the table (with accuracy after epoch 1 and epochs to target), failed
    cells with their reasons, every layer's final angle, the paired comparisons, the plots."""
    lines = ["# Experiment report", ""]
    lines.append(
        f"Seeds {report['seeds']}; accuracies in % (mean ± std over the seeds that "
        "succeeded); angles in degrees (last layer); eff_dim is layer 1's participation ratio; "
        "ECE is the final expected calibration error on the test split (15 equal-width "
        "confidence bins; `reliability.png` pools each condition's bins over its seeds)."
    )
    if report.get("early_stop"):
        lines.append(
            "Training to convergence (`train.early_stop`): epochs to converge is the last "
            "epoch that improved test accuracy by more than `min_delta` before `patience` "
            "epochs without one, over the seeds that converged within `epochs`."
        )
    lines += ["", *_markdown_rows(report["table"])]
    failed = [
        (name, cell)
        for name, c in report["conditions"].items()
        for cell in c["cells"]
        if cell["state"] != JobState.SUCCEEDED
    ]
    if failed:
        lines += ["", "## Runs that did not succeed", ""]
        lines += [
            f"- {name}, seed {cell['seed']}: {cell['state']} ({cell['reason']})"
            + (f": {cell['message']}" if cell["message"] else "")
            for name, cell in failed
        ]
    matrix = report.get("rule_noise_matrix")
    if matrix is not None:
        lines += ["", "## Does noise pretraining help each rule?", "", MATRIX_NOTE, ""]
        lines += _markdown_rows(matrix["table"])
    layer_table = format_layer_table(report)
    if layer_table:
        lines += ["", "## Alignment angle by layer (final)", "", *_markdown_rows(layer_table)]
        lines += [
            "",
            "Degrees, mean ± std over the seeds that succeeded. Layer 1 is marked "
            "'no signal': its feedback matrix would carry the error on to the input, which "
            "nothing learns from, so its angle is no evidence of alignment either way.",
        ]
    paired_table = format_paired_table(report)
    if paired_table:
        lines += ["", "## Paired comparisons over seeds", ""]
        if report.get("rule_noise_matrix") is not None:
            lines += [MATRIX_PAIRS_NOTE.format(pairs=len(report["paired"])), ""]
        lines += [*_markdown_rows(paired_table), "", PAIRED_METHOD]
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in report["plots"]]
    return "\n".join(lines) + "\n"


LAYER_1 = "layer 1 (no signal)"
PAIRED_METHOD = (
    "A seed gives every condition the same initial weights and feedback matrices, so each row "
    "compares per-seed differences (the later condition minus the earlier, over the seeds "
    "both completed; accuracies in percentage points): their mean, a 95 % confidence "
    "interval (Student t, n − 1 degrees of freedom), the two-sided paired t-test's p-value "
    "and the exact two-sided sign-flip permutation test's p-value (no normality assumed; "
    "with n seeds it cannot fall below 2/2ⁿ, e.g. 0.25 for 3 seeds). One seed gives the "
    "difference without statistics."
)


MATRIX_NOTE = (
    "The conditions form a rule × noise matrix (the same spec but for `model.rule` and "
    "whether it pretrains on noise): one row per rule, its condition without noise "
    "pretraining (*none*) and with it (*noise*), mean ± std over the seeds that succeeded "
    "(accuracies in %, angles in degrees); Δ is *noise − none* per seed, its mean over the "
    "seeds both completed (n) with a 95 % confidence interval (percentage points for "
    "accuracies), and p the paired t-test's / the exact sign-flip test's two-sided p-value "
    "(see the paired comparisons below). `rules_matrix.png` plots the final accuracies."
)
MATRIX_PAIRS_NOTE = (
    "A rule × noise matrix: only the {pairs} pairs that share the rule (the effect of noise) "
    "or the noise setting (rule against rule); pairs that differ in both are left out."
)


def format_matrix_table(rows: list[dict[str, Any]]) -> Table:
    """The rule × noise table (:func:`.report_matrix.rule_noise_rows`): per rule and metric,
    the value without and with noise, the paired difference with its CI, the p-values."""
    table = []
    for row in rows:
        cells = {"rule": row["rule"]}
        for key, label in PAIRED_METRICS.items():
            scale, unit = _unit(key)
            values, stats = row["metrics"][key], row["metrics"][key]["difference"]
            cells[f"{label}: none"] = format_pm(**values["without"], scale=scale)
            cells[f"{label}: noise"] = format_pm(**values["with"], scale=scale)
            cells[f"{label}: Δ [95% CI] (n)"] = (
                f"{_scaled(stats['mean_difference'], scale, '')} "
                f"{_ci(stats['ci95'], scale, unit)} ({stats['n']})"
            )
            cells[f"{label}: p (t / sign-flip)"] = (
                f"{_p(stats['p_t_test'])} / {_p(stats['p_sign_flip'])}"
            )
        table.append(cells)
    return table


def format_layer_table(report: dict[str, Any]) -> Table:
    """One row per condition: the final alignment angle of every layer, mean ± std in °."""
    layers = sorted(
        {
            int(layer)
            for c in report["conditions"].values()
            for layer in c.get("alignment_angle_final_by_layer", {})
        }
    )
    rows = []
    for name, c in report["conditions"].items():
        by_layer = c.get("alignment_angle_final_by_layer", {})
        row = {"condition": name}
        for layer in layers:
            angle = by_layer.get(str(layer), {"mean": None, "std": None})
            row[LAYER_1 if layer == 1 else f"layer {layer}"] = format_pm(**angle, scale=1.0)
        rows.append(row)
    return rows if layers else []


def format_paired_table(report: dict[str, Any]) -> Table:
    """One row per (pair, metric): ``b − a`` over the common seeds, its 95 % CI and p-values
    (accuracies in percentage points, angles in degrees)."""
    rows = []
    for pair in report.get("paired", []):
        for key, stats in pair["metrics"].items():
            scale, unit = _unit(key)
            rows.append(
                {
                    "comparison": f"{pair['b']} − {pair['a']}",
                    "metric": PAIRED_METRICS[key],
                    "n": str(stats["n"]),
                    "mean difference": _scaled(stats["mean_difference"], scale, unit),
                    "95% CI": _ci(stats["ci95"], scale, unit),
                    "p (paired t)": _p(stats["p_t_test"]),
                    "p (sign-flip, exact)": _p(stats["p_sign_flip"]),
                    "note": stats["note"] or "",
                }
            )
    return rows


def _unit(key: str) -> tuple[float, str]:
    """How a paired difference of ``key`` reads: angles in degrees, accuracies in pp."""
    return (1.0, "°") if key.startswith("angle") else (100.0, " pp")


def _ci(ci: list[float] | None, scale: float, unit: str) -> str:
    return (
        "-" if ci is None else f"[{_scaled(ci[0], scale, '')}, {_scaled(ci[1], scale, '')}]{unit}"
    )


def _scaled(value: float | None, scale: float, unit: str) -> str:
    return "-" if value is None else f"{value * scale:+.2f}{unit}"


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _markdown_rows(table: Table) -> list[str]:
    """A table as Markdown lines (header, rule, rows); none for an empty table."""
    if not table:
        return []
    header = list(table[0])
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(" --- " for _ in header) + "|",
        *("| " + " | ".join(row[h] for h in header) + " |" for row in table),
    ]
