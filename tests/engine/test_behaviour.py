"""The paper's claims, reproduced small on ``digits`` over three seeds.

One shared comparison (BP and FA, each with and without 60k samples of noise pretraining,
one data epoch) feeds every test here.
"""

from __future__ import annotations

import json
import statistics

import pytest

from noisefa.engine.compare import comparison_specs, format_table, summarize
from noisefa.engine.run import run_job

SEEDS = [0, 1, 2]


@pytest.fixture(scope="module")
def histories(tmp_path_factory) -> dict[str, list[list[dict]]]:
    specs = comparison_specs(
        "digits", SEEDS, epochs=1, conditions=("bp", "bp+noise", "fa", "fa+noise"), device="cpu"
    )
    out: dict[str, list[list[dict]]] = {}
    for condition, condition_specs in specs.items():
        out[condition] = []
        for spec in condition_specs:
            folder = tmp_path_factory.mktemp(condition.replace("+", "_"))
            run_job(spec, folder)
            lines = (folder / "metrics.jsonl").read_text().splitlines()
            out[condition].append([json.loads(line) for line in lines])
    return out


def values(history: list[dict], name: str, phase: str) -> dict[int, float]:
    return {p["epoch"]: p["value"] for p in history if p["name"] == name and p["phase"] == phase}


def test_noise_pretraining_lowers_last_layer_angle_well_below_90_degrees(histories):
    after = []
    for history in histories["fa+noise"]:
        angle = values(history, "alignment_angle/2", "pretrain")
        assert 85 < angle[0] < 95, "a random init starts near 90°"
        assert angle[1] < 86
        after.append(angle[1])
    assert statistics.fmean(after) < 83


def test_readout_on_noise_approaches_chance_after_pretraining(histories):
    for history in histories["fa+noise"]:
        entropy = values(history, "readout_entropy", "pretrain")
        max_prob = values(history, "readout_max_prob", "pretrain")
        assert entropy[1] > entropy[0] and entropy[1] > 0.95
        assert max_prob[1] < max_prob[0] and max_prob[1] < 0.2


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


def test_comparison_table_reports_every_condition(histories):
    rows = summarize(histories, target=0.5)
    assert [row["condition"] for row in rows] == ["bp", "bp+noise", "fa", "fa+noise"]
    fa_noise = rows[-1]
    assert fa_noise["seeds"] == 3 and fa_noise["angle_after_pretrain"] < 83
    assert rows[2]["angle_before_pretrain"] is None
    table = format_table(rows)
    assert "fa+noise" in table and "±" in table and "epochs to 50%" in table
