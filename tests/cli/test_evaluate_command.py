"""``noisefa evaluate`` on a local checkpoint, and ``noisefa run`` starting from one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from noisefa.cli import main
from noisefa.engine.ood import PLOT_NAME
from noisefa.testing.specs import SMALL_METRICS

TRAIN = {
    "kind": "train",
    "model": {"hidden": [32], "rule": "bp", "seed": 0},
    "train": {"dataset": "digits", "epochs": 2, "batch_size": 64},
    "device": "cpu",
    "metrics": SMALL_METRICS,
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict]:
    """A model trained with ``noisefa run``: its final checkpoint file and ``result.json``."""
    folder = tmp_path_factory.mktemp("trained")
    spec = folder / "train.json"
    spec.write_text(json.dumps(TRAIN))
    assert main(["run", str(spec), "--out", str(folder / "run"), "--no-progress"]) == 0
    result = json.loads((folder / "run" / "result.json").read_text())
    return folder / "run" / result["final_checkpoint"], result


def test_evaluate_a_checkpoint_trained_with_run(trained, spec_file, tmp_path, capsys):
    checkpoint, result = trained
    body = {
        "kind": "evaluate",
        "init_from": str(checkpoint),
        "shifts": {"rotate": [0, 30]},
        "device": "cpu",
    }
    capsys.readouterr()
    assert main(["evaluate", str(spec_file(body)), "--out", str(tmp_path / "e")]) == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads((tmp_path / "e" / "result.json").read_text())
    assert printed["evaluations"] == written["evaluations"]
    assert written["normalize"] == "model"
    cells = {e["severity"]: e["accuracy"] for e in written["evaluations"]}
    assert cells[0] == result["final_metrics"]["test_accuracy"]
    assert cells[0] > cells[30]
    assert (tmp_path / "e" / PLOT_NAME).stat().st_size > 1000


def test_run_starts_from_a_local_checkpoint_file(trained, spec_file, tmp_path):
    checkpoint, result = trained
    spec = {**TRAIN, "train": {**TRAIN["train"], "epochs": 1}, "init_from": str(checkpoint)}
    assert main(["run", str(spec_file(spec)), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    lines = (tmp_path / "o" / "metrics.jsonl").read_text().splitlines()
    points = [json.loads(line) for line in lines]
    (start,) = [p for p in points if p["name"] == "test_accuracy" and p["epoch"] == 0]
    assert start["value"] == result["final_metrics"]["test_accuracy"]  # the trained weights


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "train", "train": {"dataset": "digits"}}, "noisefa run"),
        ({"init_from": "nowhere.safetensors"}, "nowhere.safetensors not found"),
        ({"init_from": "."}, "is a folder"),
        ({"normalize": "raw"}, "normalize"),
    ],
)
def test_evaluate_refusals_exit_2_with_a_message(spec_file, tmp_path, capsys, change, message):
    body = {"kind": "evaluate", "init_from": "x.safetensors", "device": "cpu"} | change
    assert main(["evaluate", str(spec_file(body)), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
