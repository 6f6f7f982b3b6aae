"""Aggregating an experiment's children into report.json, report.md and plots."""

from __future__ import annotations

import json

import pytest

from noisefa.engine.contract.bodies import parse_job
from noisefa.engine.contract.experiment_spec import expand_experiment
from noisefa.engine.report import PLOTS, aggregate_experiment
from noisefa.engine.run import run_job

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
    """Real children, except that fa's second seed failed."""
    spec = parse_job(BODY)
    out: dict[str, list[dict]] = {}
    for condition, specs in expand_experiment(spec).items():
        out[condition] = []
        for child in specs:
            folder = tmp_path_factory.mktemp("child")
            run_job(child, folder)
            lines = (folder / "metrics.jsonl").read_text().splitlines()
            out[condition].append(
                {"state": "succeeded", "history": [json.loads(x) for x in lines], "error": None}
            )
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
    for name in PLOTS.values():
        assert (tmp_path / name).stat().st_size > 1000


def test_a_condition_with_no_successful_seed_is_marked_failed(children, tmp_path):
    broken = dict(children)
    broken["fa+noise"] = [{"state": "cancelled", "history": [], "error": None}] * 2
    report = aggregate_experiment(parse_job(BODY), broken, tmp_path)
    cell = report["conditions"]["fa+noise"]
    assert cell["state"] == "failed" and cell["cells"][0]["reason"] == "cancelled"
    assert "final_test_accuracy" not in cell
    assert report["conditions"]["fa"]["final_test_accuracy"]["mean"] is not None
