"""Out-of-distribution evaluation of a checkpoint under affine shifts."""

from __future__ import annotations

import json

import pytest

from noisefa.engine.contract.bodies import parse_job
from noisefa.engine.ood import PLOT_NAME, evaluate_checkpoint
from noisefa.engine.run import run_job


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_spec):
    """A BP model trained 3 epochs on digits: its final checkpoint and result."""
    folder = tmp_path_factory.mktemp("trained")
    spec = small_spec(model={"rule": "bp"}, pretrain=None, train={"epochs": 3})
    result = run_job(spec, folder)
    return folder / result["final_checkpoint"], result


def test_severity_zero_is_plain_test_accuracy_and_accuracy_falls_with_severity(trained, tmp_path):
    checkpoint, result = trained
    spec = parse_job(
        {
            "kind": "evaluate",
            "init_from": str(checkpoint),
            "shifts": {"rotate": [0, 20, 45], "translate": [0, 1, 2], "scale": [1.0, 0.7]},
            "device": "cpu",
        }
    )
    out = evaluate_checkpoint(spec, checkpoint, tmp_path)
    cells = {(e["shift"], e["severity"]): e["accuracy"] for e in out["evaluations"]}
    assert {e["dataset"] for e in out["evaluations"]} == {"digits"}  # the checkpoint's data
    plain = result["final_metrics"]["test_accuracy"]
    assert cells["rotate", 0] == cells["translate", 0] == cells["scale", 1.0] == plain
    assert plain > cells["rotate", 20] > cells["rotate", 45]
    # One pixel of an 8×8 digit is already far out of distribution (near chance).
    assert plain > max(cells["translate", 1], cells["translate", 2])
    assert plain > cells["scale", 0.7]
    assert json.loads((tmp_path / "result.json").read_text()) == out
    assert (tmp_path / PLOT_NAME).stat().st_size > 1000


def test_other_input_shapes_are_resized_to_the_model(trained, tmp_path):
    import numpy as np

    from noisefa.engine.datasets import load_dataset

    checkpoint, result = trained
    digits = load_dataset("digits")  # 8×8 as 16×16 images: an "uploaded" other digit set
    big = digits.x_test.view(-1, 8, 8).repeat_interleave(2, 1).repeat_interleave(2, 2).numpy()
    path = tmp_path / "big.npz"
    np.savez(path, x_train=big, y_train=digits.y_test.numpy(), x_test=big, y_test=digits.y_test)
    spec = parse_job(
        {
            "kind": "evaluate",
            "init_from": "x",
            "datasets": ["upload:big"],
            "shifts": {"rotate": [0]},
            "device": "cpu",
        }
    )
    out = evaluate_checkpoint(spec, checkpoint, tmp_path, dataset_files={"upload:big": path})
    (cell,) = out["evaluations"]
    assert cell["dataset"] == "upload:big"
    assert cell["accuracy"] > 0.5 * result["final_metrics"]["test_accuracy"]
