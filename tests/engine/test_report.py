"""Aggregating an experiment's children into report.json, report.md and plots."""

from __future__ import annotations

import json
import re

import pytest

from noisefa.engine.contract.bodies import parse_job
from noisefa.engine.experiment import child_dir, run_children
from noisefa.engine.report import PLOTS, aggregate_experiment
from noisefa.engine.report_format import format_table_text
from noisefa.engine.report_reliability import pooled_reliability

BODY = {
    "kind": "experiment",
    "base": {
        "kind": "train",
        "model": {"hidden": [32]},
        "train": {"dataset": "digits", "epochs": 2},
        "device": "cpu",
        "metrics": {"probe_size": 64, "readout_size": 256},
    },
    "conditions": {
        "fa": {},
        "fa+noise": {"pretrain": {"epochs": 2, "samples_per_epoch": 2048}},
    },
    "seeds": [0, 1],
    "target_accuracy": 0.5,
}


@pytest.fixture(scope="module")
def children(tmp_path_factory) -> dict[str, list[dict]]:
    """Real children run in this process, except that fa's second seed failed."""
    root = tmp_path_factory.mktemp("experiment")
    out = run_children(parse_job(BODY), root)
    assert {path for path in (root / "runs").iterdir()} == {
        child_dir(root, c, s) for c in ("fa", "fa+noise") for s in (0, 1)
    }
    out["fa"][1] = {
        "state": "failed",
        "history": [],
        "error": {"reason": "worker_lost", "message": "the worker died 3 times"},
    }
    return out


def test_report_holds_the_table_and_a_failed_cell_does_not_hide_the_rest(children, tmp_path):
    report = aggregate_experiment(parse_job(BODY), children, tmp_path)
    assert json.loads((tmp_path / "report.json").read_text()) == report
    fa, noise = report["conditions"]["fa"], report["conditions"]["fa+noise"]
    assert fa["state"] == "partial" and fa["seeds_succeeded"] == 1
    assert fa["cells"][1] == {
        "seed": 1,
        "state": "failed",
        "reason": "worker_lost",
        "message": "the worker died 3 times",
    }
    assert noise["state"] == "succeeded" and noise["seeds_succeeded"] == 2
    assert fa["final_test_accuracy"]["std"] == 0.0  # one seed left
    assert (
        0 < noise["final_test_accuracy"]["mean"] <= 1 and noise["final_test_accuracy"]["std"] >= 0
    )
    assert len(noise["test_accuracy_by_epoch"]) == 3  # epochs 0, 1, 2
    assert noise["test_accuracy_by_epoch"][-1] == pytest.approx(
        noise["final_test_accuracy"]["mean"]
    )
    angle = noise["alignment_angle"]
    assert angle["after_pretrain"] < angle["before_pretrain"]
    assert fa["alignment_angle"]["before_pretrain"] is None  # no pretraining
    assert noise["alignment_angle_by_epoch"]["epochs"] == [-2, -1, 0, 1, 2]
    assert noise["eff_dim_1_final"]["mean"] > 0
    assert "gen_gap_final" in noise and "epochs_to_target" in noise
    markdown = (tmp_path / "report.md").read_text()
    assert "| fa+noise | 2/2 |" in markdown
    assert "fa, seed 1: failed (worker_lost)" in markdown
    report = json.loads((tmp_path / "report.json").read_text())
    for name in report["plots"]:
        assert (tmp_path / name).stat().st_size > 1000


def test_a_condition_with_no_successful_seed_is_marked_failed(children, tmp_path):
    broken = dict(children)
    broken["fa+noise"] = [{"state": "cancelled", "history": [], "error": None}] * 2
    report = aggregate_experiment(parse_job(BODY), broken, tmp_path)
    cell = report["conditions"]["fa+noise"]
    assert cell["state"] == "failed" and cell["cells"][0]["reason"] == "cancelled"
    assert "final_test_accuracy" not in cell
    assert report["conditions"]["fa"]["final_test_accuracy"]["mean"] is not None


def test_the_text_table_shows_the_same_cells_as_report_md(children, tmp_path):
    report = aggregate_experiment(parse_job(BODY), children, tmp_path)
    lines = format_table_text(report["table"]).splitlines()
    assert lines[0].split("  ")[0] == "condition" and set(lines[1]) <= {"-", " "}
    markdown = (tmp_path / "report.md").read_text()
    for row, line in zip(report["table"], lines[2:], strict=True):
        assert re.split(" {2,}", line) == list(row.values())  # cells hold no double space
        assert "| " + " | ".join(row.values()) + " |" in markdown
    assert "acc % after 1 ep" in report["table"][0] and "epochs to 50%" in report["table"][0]


def test_every_layer_s_final_angle_is_tabled_with_layer_1_flagged(children, tmp_path):
    report = aggregate_experiment(parse_job(BODY), children, tmp_path)
    noise = report["conditions"]["fa+noise"]
    by_layer = noise["alignment_angle_final_by_layer"]
    assert set(by_layer) == {"1", "2"}  # 64-32-10: two rule layers
    assert by_layer["2"]["mean"] == pytest.approx(noise["alignment_angle"]["final"])
    per_seed = noise["per_seed"]["alignment_angle_final_by_layer"]["2"]
    assert by_layer["2"]["mean"] == pytest.approx(sum(per_seed) / 2)
    assert report["conditions"]["fa"]["per_seed"]["final_test_accuracy"][1] is None  # failed
    markdown = (tmp_path / "report.md").read_text()
    assert "## Alignment angle by layer (final)" in markdown
    assert "| condition | layer 1 (no signal) | layer 2 |" in markdown


def test_paired_comparisons_use_the_seeds_both_conditions_completed(children, tmp_path):
    report = aggregate_experiment(parse_job(BODY), children, tmp_path)
    (pair,) = report["paired"]
    assert (pair["a"], pair["b"]) == ("fa", "fa+noise")
    assert set(pair["metrics"]) == {"final_test_accuracy", "epoch1_test_accuracy", "angle_final"}
    final = pair["metrics"]["final_test_accuracy"]
    assert final["n"] == 1 and final["seeds"] == [0]  # fa's seed 1 failed
    conditions = report["conditions"]
    assert final["mean_difference"] == pytest.approx(
        conditions["fa+noise"]["per_seed"]["final_test_accuracy"][0]
        - conditions["fa"]["per_seed"]["final_test_accuracy"][0]
    )
    assert final["p_t_test"] is None and "one paired seed" in final["note"]
    markdown = (tmp_path / "report.md").read_text()
    assert "## Paired comparisons over seeds" in markdown
    assert "| fa+noise − fa | final test acc | 1 |" in markdown


def test_paired_comparisons_over_complete_seeds_have_a_ci_and_p_values(children, tmp_path):
    report = aggregate_experiment(
        parse_job(BODY), {"fa+noise": children["fa+noise"]} | {"fa": children["fa+noise"]}, tmp_path
    )
    (pair,) = report["paired"]
    for stats in pair["metrics"].values():  # the same runs twice: no difference
        assert stats["n"] == 2 and stats["mean_difference"] == 0.0
        assert stats["ci95"] == [0.0, 0.0] and stats["p_sign_flip"] == 1.0


def test_the_report_has_a_reliability_diagram_and_an_ece_column(children, tmp_path):
    report = aggregate_experiment(parse_job(BODY), children, tmp_path)
    assert PLOTS["ece"] == "reliability.png" and "reliability.png" in report["plots"]
    assert (tmp_path / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "report.md").read_text()
    assert "![reliability.png](reliability.png)" in md and "| ECE |" in md
    for name, condition in report["conditions"].items():
        runs = [run for run in children[name] if run["state"] == "succeeded"]
        finals = [
            max((p for p in run["history"] if p["name"] == "ece"), key=lambda p: p["epoch"])
            for run in runs
        ]
        assert condition["ece_final"]["mean"] == pytest.approx(
            sum(p["value"] for p in finals) / len(finals)
        )
        pooled = condition["reliability"]
        assert len(pooled["counts"]) == 15
        # every seed's whole test split lands in one bin each: the pool counts them all
        test_size = sum(
            p["value"] for p in runs[0]["history"] if p["name"].startswith("reliability_count/")
        )
        assert sum(pooled["counts"]) == pytest.approx(test_size * len(runs))
        row = next(r for r in report["table"] if r["condition"] == name)
        assert row["ECE"].startswith(f"{condition['ece_final']['mean']:.3f}")


def test_pooled_reliability_weights_each_bin_by_its_samples():
    def run(counts, accuracy, confidence, epoch=2):
        points = []
        for base, values in (
            ("reliability_count", counts),
            ("reliability_accuracy", accuracy),
            ("reliability_confidence", confidence),
        ):
            points += [
                {"name": f"{base}/{b + 1}", "phase": "train", "epoch": epoch, "value": v}
                for b, v in enumerate(values)
            ]
        return points

    first = run([3, 1], [1.0, 0.0], [0.9, 0.6])
    second = run([1, 0], [0.0, 0.0], [0.7, 0.0])
    assert pooled_reliability([first, second]) == {
        "counts": [4.0, 1.0],
        "accuracy": [0.75, 0.0],  # (3·1 + 1·0) / 4
        "confidence": [pytest.approx(0.85), 0.6],  # (3·0.9 + 1·0.7) / 4
    }
    assert pooled_reliability([[]]) is None
