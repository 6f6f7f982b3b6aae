"""The paper's claims, reproduced small on ``digits`` over three seeds.

One shared comparison (the ``comparison`` preset, one data epoch, plus BP with the same
default noise pretraining) feeds every test here.
"""

from __future__ import annotations

import statistics

import pytest

from noisefa.engine.contract.bodies import parse_job
from noisefa.engine.contract.experiment_spec import ExperimentSpec
from noisefa.engine.contract.presets import comparison_body
from noisefa.engine.experiment import run_children
from noisefa.engine.report import aggregate_experiment
from noisefa.engine.report_format import format_table_text


@pytest.fixture(scope="module")
def experiment() -> ExperimentSpec:
    body = comparison_body(seeds=3, epochs=1, target_accuracy=0.5, device="cpu")
    fa_noise = body["conditions"]["fa+noise"]
    body["conditions"] = {
        "bp": body["conditions"]["bp"],
        "bp+noise": {**fa_noise, "model": {"rule": "bp"}},
        "fa": body["conditions"]["fa"],
        "fa+noise": fa_noise,
    }
    return parse_job(body)


@pytest.fixture(scope="module")
def children(experiment, tmp_path_factory) -> dict[str, list[dict]]:
    return run_children(experiment, tmp_path_factory.mktemp("comparison"))


@pytest.fixture(scope="module")
def histories(children) -> dict[str, list[list[dict]]]:
    return {condition: [run["history"] for run in runs] for condition, runs in children.items()}


def values(history: list[dict], name: str, phase: str) -> dict[int, float]:
    return {p["epoch"]: p["value"] for p in history if p["name"] == name and p["phase"] == phase}


def test_noise_pretraining_lowers_last_layer_angle_well_below_90_degrees(histories):
    after = []
    for history in histories["fa+noise"]:
        angle = values(history, "alignment_angle/2", "pretrain")
        assert 85 < angle[0] < 95, "a random init starts near 90°"
        assert angle[max(angle)] < 86  # after the last noise epoch
        after.append(angle[max(angle)])
    assert statistics.fmean(after) < 83


def test_readout_on_noise_approaches_chance_after_pretraining(histories):
    for history in histories["fa+noise"]:
        entropy = values(history, "readout_entropy", "pretrain")
        max_prob = values(history, "readout_max_prob", "pretrain")
        last = max(entropy)  # the last noise epoch
        assert entropy[last] > entropy[0] and entropy[last] > 0.95
        assert max_prob[last] < max_prob[0] and max_prob[last] < 0.2


def test_fa_with_pretraining_beats_fa_without_after_the_first_epoch(histories):
    def first_epoch(condition):
        return statistics.fmean(
            values(h, "test_accuracy", "train")[1] for h in histories[condition]
        )

    assert first_epoch("fa+noise") > first_epoch("fa") + 0.15


def test_bp_is_not_hurt_by_noise_pretraining(histories):
    def first_epoch(condition):
        return statistics.fmean(
            values(h, "test_accuracy", "train")[1] for h in histories[condition]
        )

    assert first_epoch("bp+noise") > first_epoch("bp") - 0.05


def test_comparison_table_reports_every_condition(experiment, children, tmp_path):
    report = aggregate_experiment(experiment, children, tmp_path)
    assert list(report["conditions"]) == ["bp", "bp+noise", "fa", "fa+noise"]
    fa_noise = report["conditions"]["fa+noise"]
    assert fa_noise["seeds_succeeded"] == 3 and fa_noise["alignment_angle"]["after_pretrain"] < 83
    assert report["conditions"]["fa"]["alignment_angle"]["before_pretrain"] is None
    table = format_table_text(report["table"])
    assert "fa+noise" in table and "±" in table and "epochs to 50%" in table
