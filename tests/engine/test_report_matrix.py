"""The rule × noise matrix view of a report, on constructed metric histories (no training).

Every expected number is worked out by hand from the per-seed values below; the t-test's
p-value with 2 degrees of freedom has the closed form ``1 - t / sqrt(t² + 2)``.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest

from noisefa.engine.contract.bodies import parse_job
from noisefa.engine.contract.presets import PRESETS
from noisefa.engine.report import PLOTS, aggregate_experiment
from noisefa.engine.report_matrix import find_rule_noise_matrix, matrix_pairs

NOISE = {"epochs": 1, "samples_per_epoch": 64}
BODY: dict[str, Any] = {
    "kind": "experiment",
    "base": {
        "kind": "train",
        "model": {"hidden": [8]},
        "train": {"dataset": "digits", "epochs": 2},
        "device": "cpu",
    },
    # Names that say nothing about the matrix; fa is the spec's default rule.
    "conditions": {
        "c1": {},
        "c2": {"model": {"rule": "bp"}},
        "c3": {"pretrain": NOISE},
        "c4": {"model": {"rule": "kp"}},
        "c5": {"model": {"rule": "bp"}, "pretrain": NOISE},
        "c6": {"model": {"rule": "kp"}, "pretrain": NOISE},
    },
    "seeds": [0, 1, 2],
}

# condition → per seed (final test accuracy, epoch-1 test accuracy, final last-layer angle)
VALUES = {
    "c1": [(0.70, 0.30, 85.0), (0.72, 0.40, 86.0), (0.74, 0.50, 87.0)],
    "c3": [(0.75, 0.60, 80.0), (0.76, 0.60, 80.0), (0.80, 0.60, 80.0)],
    "c2": [(0.90, 0.80, 0.0)] * 3,
    "c5": [(0.90, 0.80, 0.0)] * 3,
    "c4": [(0.50, 0.2, 88.0), (0.60, 0.2, 88.0), (0.70, 0.2, 88.0)],
    "c6": [(0.55, 0.3, 85.0), (0.70, 0.3, 85.0), None],  # seed 2 failed
}


def history(final: float, epoch1: float, angle: float, pretrained: bool) -> list[dict]:
    points = [
        {"name": "test_accuracy", "phase": "train", "epoch": epoch, "value": value}
        for epoch, value in ((0, 0.1), (1, epoch1), (2, final))
    ]
    points += [
        {"name": "alignment_angle/2", "phase": "train", "epoch": epoch, "value": angle + 2 - epoch}
        for epoch in (0, 1, 2)
    ]
    if pretrained:
        points += [
            {"name": "alignment_angle/2", "phase": "pretrain", "epoch": e, "value": 90.0 - e}
            for e in (0, 1)
        ]
    return points


def children(body: dict[str, Any]) -> dict[str, list[dict]]:
    out = {}
    for name, condition in body["conditions"].items():
        pretrained = "pretrain" in condition
        out[name] = [
            {"state": "failed", "history": [], "error": {"reason": "worker_lost"}}
            if v is None
            else {"state": "succeeded", "history": history(*v, pretrained), "error": None}
            for v in VALUES[name]
        ]
    return out


def t_test_p_2dof(mean: float, std: float) -> float:
    t = abs(mean) / (std / math.sqrt(3))
    return 1 - t / math.sqrt(t * t + 2)


@pytest.fixture()
def report(tmp_path) -> dict:
    return aggregate_experiment(parse_job(BODY), children(BODY), tmp_path)


def test_the_matrix_is_read_from_the_specs_not_the_names():
    assert find_rule_noise_matrix(parse_job(BODY)) == {
        "fa": {"without": "c1", "with": "c3"},
        "bp": {"without": "c2", "with": "c5"},
        "kp": {"without": "c4", "with": "c6"},
    }
    preset = parse_job(PRESETS["rules_matrix_digits"]["body"])
    matrix = find_rule_noise_matrix(preset)
    assert list(matrix) == ["bp", "fa", "dfa", "usf", "brsf", "frsf", "kp"]
    assert len(matrix_pairs(list(preset.conditions), matrix)) == 7 + 2 * 21  # of 91
    assert find_rule_noise_matrix(parse_job(PRESETS["comparison"]["body"])) is None


@pytest.mark.parametrize(
    "change",
    [
        {"c4": {"model": {"rule": "kp"}, "train": {"epochs": 3}}},  # differs in more
        {"c6": {"model": {"rule": "kp"}, "pretrain": {**NOISE, "epochs": 2}}},  # other noise
        {"c6": {"model": {"rule": "fa"}, "pretrain": NOISE}},  # two conditions in one cell
        {"c6": {"model": {"rule": "dfa"}, "pretrain": NOISE}},  # kp and dfa lack a cell
    ],
)
def test_look_alikes_are_not_a_matrix(change):
    body = copy.deepcopy(BODY)
    body["conditions"] |= change
    assert find_rule_noise_matrix(parse_job(body)) is None


def test_the_matrix_table_s_numbers_match_the_hand_count(report, tmp_path):
    matrix = report["rule_noise_matrix"]
    assert json.loads((tmp_path / "report.json").read_text())["rule_noise_matrix"] == matrix
    fa, bp, kp = matrix["rows"]
    assert (fa["rule"], fa["without"], fa["with"]) == ("fa", "c1", "c3")

    final = fa["metrics"]["final_test_accuracy"]
    assert final["without"] == {"mean": pytest.approx(0.72), "std": pytest.approx(0.02)}
    assert final["with"]["mean"] == pytest.approx(0.77)
    assert final["with"]["std"] == pytest.approx(math.sqrt(0.0014 / 2))
    diff = final["difference"]  # per seed 0.05, 0.04, 0.06: mean 0.05, std 0.01
    half = 4.302653 * 0.01 / math.sqrt(3)  # t_{0.975, 2}
    assert diff["n"] == 3 and diff["mean_difference"] == pytest.approx(0.05)
    assert diff["ci95"] == pytest.approx([0.05 - half, 0.05 + half], abs=1e-6)
    assert diff["p_t_test"] == pytest.approx(t_test_p_2dof(0.05, 0.01))
    assert diff["p_sign_flip"] == 0.25  # all three positive: 2 of 8 sign assignments

    epoch1 = fa["metrics"]["epoch1_test_accuracy"]["difference"]  # 0.3, 0.2, 0.1
    assert epoch1["mean_difference"] == pytest.approx(0.2)
    assert epoch1["p_t_test"] == pytest.approx(t_test_p_2dof(0.2, 0.1))
    angle = fa["metrics"]["angle_final"]  # −5, −6, −7
    assert angle["without"]["mean"] == pytest.approx(86.0)
    assert angle["difference"]["mean_difference"] == pytest.approx(-6.0)
    assert angle["difference"]["p_t_test"] == pytest.approx(t_test_p_2dof(-6.0, 1.0))

    same = bp["metrics"]["final_test_accuracy"]["difference"]
    assert same["mean_difference"] == 0.0 and same["p_t_test"] == 1.0

    # kp with noise lost seed 2: each side over its own succeeded seeds, the difference over
    # the two seeds both have (0.05, 0.10).
    kp_final = kp["metrics"]["final_test_accuracy"]
    assert kp_final["without"]["mean"] == pytest.approx(0.6)
    assert kp_final["with"]["mean"] == pytest.approx(0.625)
    assert kp_final["difference"]["n"] == 2
    assert kp_final["difference"]["mean_difference"] == pytest.approx(0.075)
    assert kp_final["difference"]["p_sign_flip"] == 0.5


def test_report_md_has_the_matrix_table_and_the_plot(report, tmp_path):
    markdown = (tmp_path / "report.md").read_text()
    assert "## Does noise pretraining help each rule?" in markdown
    assert (
        "| fa | 72.0 ± 2.0 | 77.0 ± 2.6 | +5.00 [+2.52, +7.48] pp (3) | 0.0131 / 0.25 |" in markdown
    )
    assert "| kp | 60.0 ± 10.0 | 62.5 ± 10.6 | +7.50 [-24.27, +39.27] pp (2)" in markdown
    assert report["rule_noise_matrix"]["table"][0]["rule"] == "fa"
    assert PLOTS["rules_matrix"] == "rules_matrix.png" in report["plots"]
    assert "![rules_matrix.png](rules_matrix.png)" in markdown
    png = (tmp_path / "rules_matrix.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_a_matrix_compares_only_pairs_that_share_the_rule_or_the_noise(report, tmp_path):
    pairs = [(p["a"], p["b"]) for p in report["paired"]]
    assert pairs == [
        ("c1", "c2"),  # fa vs bp, both without noise
        ("c1", "c3"),  # fa: noise
        ("c1", "c4"),
        ("c2", "c4"),
        ("c2", "c5"),  # bp: noise
        ("c3", "c5"),  # fa vs bp, both with noise
        ("c3", "c6"),
        ("c4", "c6"),  # kp: noise
        ("c5", "c6"),
    ]  # 9 of the 15 pairs
    assert "only the 9 pairs that share the rule" in (tmp_path / "report.md").read_text()


def test_a_non_matrix_experiment_s_report_is_unchanged(tmp_path):
    body = copy.deepcopy(BODY)  # bp, fa, fa+noise: bp has no noise condition
    body["conditions"] = {name: BODY["conditions"][name] for name in ("c2", "c1", "c3")}
    report = aggregate_experiment(parse_job(body), children(body), tmp_path)
    assert report["rule_noise_matrix"] is None
    pairs = [(p["a"], p["b"]) for p in report["paired"]]
    assert pairs == [("c2", "c1"), ("c2", "c3"), ("c1", "c3")]  # every pair, as before
    assert report["plots"] == [
        "test_accuracy.png",
        "alignment_angle.png",
        "eff_dim.png",
        "reliability.png",
    ]
    markdown = (tmp_path / "report.md").read_text()
    assert "rule × noise" not in markdown and "rules_matrix" not in markdown
    assert [row["condition"] for row in report["table"]] == ["c2", "c1", "c3"]
    # Written are exactly the plots the report lists (the worker uploads those).
    for name in report["plots"]:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / PLOTS["rules_matrix"]).exists()
