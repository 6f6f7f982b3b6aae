"""Calibration and OOD detection: ``ece`` and the AUROC of the maximum softmax probability."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import roc_auc_score

from noisefa.engine.checkpoint import model_from_checkpoint
from noisefa.engine.contract.bodies import parse_job
from noisefa.engine.datasets import load_dataset
from noisefa.engine.images import as_images
from noisefa.engine.metrics import (
    ECE_BINS,
    auroc,
    evaluate,
    evaluate_calibrated,
    expected_calibration_error,
    reliability_bins,
)
from noisefa.engine.model import MLP, MLPConfig
from noisefa.engine.ood import evaluate_checkpoint, shift_images
from noisefa.engine.ood_detection import RELIABILITY_PLOT_NAME
from noisefa.engine.run import run_job


def identity_model(classes: int) -> MLP:
    """A network without hidden layers whose logits are its inputs."""
    model = MLP(MLPConfig(input_shape=(classes,), num_classes=classes, hidden=[]))
    with torch.no_grad():
        layer = model.rule_layers[0]
        layer.weight.copy_(torch.eye(classes))
        layer.bias.zero_()
    return model


def test_ece_matches_a_hand_computation_on_constructed_logits():
    # Two classes; logit gaps chosen so the max softmax probabilities are 0.95, 0.95, 0.55,
    # 0.55, 0.75 (bins 15, 15, 9, 9 and 12 of 15, counting from 1).
    confidences = [0.95, 0.95, 0.55, 0.55, 0.75]
    logits = torch.tensor([[math.log(c / (1 - c)), 0.0] for c in confidences])
    labels = torch.tensor([0, 1, 0, 0, 1])  # right, wrong, right, right, wrong
    # bin 15: acc 1/2, conf 0.95; bin 9: acc 1, conf 0.55; bin 12: acc 0, conf 0.75.
    hand = 2 / 5 * abs(0.5 - 0.95) + 2 / 5 * abs(1.0 - 0.55) + 1 / 5 * abs(0.0 - 0.75)
    model = identity_model(2)
    loss, accuracy, ece = evaluate_calibrated(model, logits, labels, batch_size=2)
    assert ece == pytest.approx(hand, abs=1e-9)
    assert (loss, accuracy) == evaluate(model, logits, labels, batch_size=2)
    assert accuracy == pytest.approx(3 / 5)


def test_reliability_bins_are_equal_width_and_right_closed():
    confidence = torch.tensor([1.0, 0.999, 0.5, 0.04, 0.0667])
    correct = torch.tensor([True, False, True, True, False])
    counts, accuracy, mean_confidence = reliability_bins(confidence, correct)
    assert counts.shape == (ECE_BINS,)
    assert counts[-1] == 2 and accuracy[-1] == 0.5  # 1.0 falls in the top bin (14/15, 1]
    assert counts[7] == 1  # 0.5 is in (7/15, 8/15]
    assert counts[0] == 1 and counts[1] == 1  # 0.04 ≤ 1/15 < 0.0667
    assert mean_confidence[-1] == pytest.approx(0.9995)
    # A perfectly calibrated set: accuracy equals confidence in every bin.
    assert expected_calibration_error(
        torch.tensor([0.5, 0.5, 1.0]), torch.tensor([True, False, True])
    ) == pytest.approx(0.0)


def test_auroc_matches_sklearn_with_and_without_ties():
    generator = torch.Generator().manual_seed(0)
    positive = torch.rand(300, generator=generator) + 0.2
    negative = torch.rand(200, generator=generator)
    cases = [
        (positive, negative),
        (torch.round(positive * 5) / 5, torch.round(negative * 5) / 5),  # many ties
        (torch.ones(4), torch.ones(3)),  # all tied: 0.5
        (torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0])),  # separated: 1.0
    ]
    for pos, neg in cases:
        labels = [1] * len(pos) + [0] * len(neg)
        want = roc_auc_score(labels, torch.cat([pos, neg]).numpy())
        assert auroc(pos, neg) == pytest.approx(want, abs=1e-12)
    assert auroc(torch.tensor([0.0]), torch.tensor([1.0])) == 0.0


def test_evaluate_reports_ood_auroc_per_cell_and_the_training_split_calibration(
    tmp_path, small_spec
):
    trained = run_job(small_spec(model={"rule": "bp"}, pretrain=None), tmp_path / "run")
    checkpoint = tmp_path / "run" / trained["final_checkpoint"]
    spec = parse_job(
        {
            "kind": "evaluate",
            "init_from": str(checkpoint),
            "shifts": {"rotate": [0, 90]},
            "device": "cpu",
        }
    )
    out = evaluate_checkpoint(spec, checkpoint, tmp_path / "eval")
    auroc_by_severity = {e["severity"]: e["ood_auroc"] for e in out["evaluations"]}
    assert auroc_by_severity[0] == 0.5  # the in-distribution split against itself
    # Rotated digits against the plain test split, by the model's own max softmax.
    model = model_from_checkpoint(checkpoint, "cpu")
    x = load_dataset("digits").x_test
    rotated = shift_images(as_images(x), "rotate", 90, x.min().item()).reshape(x.shape)
    with torch.no_grad():
        plain, turned = (torch.softmax(model(v), 1).amax(1) for v in (x, rotated))
    labels = [1] * len(plain) + [0] * len(turned)
    want = roc_auc_score(labels, torch.cat([plain, turned]).numpy())
    assert auroc_by_severity[90] == pytest.approx(want, abs=1e-6)
    assert auroc_by_severity[90] != 0.5
    calibration = out["calibration"]
    assert calibration["dataset"] == "digits"
    # The same model on the same test split: the run's own last-epoch ece.
    assert calibration["ece"] == pytest.approx(trained["final_metrics"]["ece"], abs=1e-12)
    assert (tmp_path / "eval" / RELIABILITY_PLOT_NAME).stat().st_size > 1000
