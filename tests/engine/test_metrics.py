"""Metric formulas on constructed matrices, and the recorded names."""

from __future__ import annotations

import math

import pytest
import torch

from noisefa.engine.contract import metric_names as mn
from noisefa.engine.metrics import (
    alignment_reference,
    angle_degrees,
    effective_rank,
    participation_ratio,
    readout_metrics,
    signal_angles,
    weight_metrics,
)
from noisefa.engine.model import MLP, MLPConfig


def test_angle_is_0_90_and_180_degrees_for_same_orthogonal_and_opposite_matrices():
    w = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    orthogonal = torch.tensor([[2.0, -1.0], [4.0, -3.0]])
    assert angle_degrees(w, 2.5 * w) == pytest.approx(0.0, abs=1e-5)
    assert angle_degrees(w, orthogonal) == pytest.approx(90.0)
    assert angle_degrees(w, -w) == pytest.approx(180.0, abs=1e-5)
    assert angle_degrees(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])) == pytest.approx(45)


@pytest.mark.parametrize(
    ("spectrum", "expected"),
    [([1.0, 1.0, 1.0, 1.0], 4.0), ([5.0, 0.0, 0.0], 1.0), ([1.0, 1.0, 0.0], 2.0)],
)
def test_participation_ratio_counts_equal_directions(spectrum, expected):
    assert participation_ratio(torch.tensor(spectrum)) == pytest.approx(expected)


def test_participation_ratio_of_a_known_uneven_spectrum():
    # σ = (2, 1): σ² = (4, 1): (4 + 1)² / (16 + 1) = 25 / 17
    assert participation_ratio(torch.tensor([2.0, 1.0])) == pytest.approx(25 / 17)


def test_effective_rank_is_n_for_flat_and_1_for_rank_one_spectra():
    assert effective_rank(torch.ones(7)) == pytest.approx(7.0)
    assert effective_rank(torch.tensor([3.0, 0.0, 0.0])) == pytest.approx(1.0)
    p = torch.tensor([0.75, 0.25])
    entropy = -(p * p.log()).sum().item()
    assert effective_rank(torch.tensor([3.0, 1.0])) == pytest.approx(math.exp(entropy))


def test_readout_of_a_network_with_zero_readout_is_at_chance():
    model = MLP(MLPConfig(input_shape=(6,), num_classes=4, hidden=[5]))
    with torch.no_grad():
        model.rule_layers[-1].weight.zero_()
    max_prob, entropy = readout_metrics(model, torch.randn(32, 6))
    assert max_prob == pytest.approx(0.25)
    assert entropy == pytest.approx(1.0)


def test_signal_angle_is_zero_under_bp_and_positive_under_fa():
    x, y = torch.randn(64, 6), torch.randint(4, (64,))
    bp = MLP(MLPConfig(input_shape=(6,), num_classes=4, hidden=[5, 5], rule="bp"))
    fa = MLP(MLPConfig(input_shape=(6,), num_classes=4, hidden=[5, 5], rule="fa"))
    assert signal_angles(bp, x, y) == pytest.approx([0.0, 0.0], abs=1e-3)
    assert all(angle > 1.0 for angle in signal_angles(fa, x, y))


def test_weight_metrics_cover_every_layer_and_bp_feedback_is_the_weight():
    bp = MLP(MLPConfig(input_shape=(6,), num_classes=4, hidden=[5], rule="bp"))
    metrics = weight_metrics(bp)
    assert metrics["alignment_angle/1"] == pytest.approx(0.0, abs=1e-3)
    assert set(metrics) == {
        f"{b}/{k}" for b in ("alignment_angle", "norm_ratio", "eff_dim", "eff_rank") for k in (1, 2)
    }
    assert metrics["norm_ratio/1"] == pytest.approx(1.0)


def test_dfa_angle_of_a_linear_layer_is_against_the_product_of_the_weights_above_it():
    model = MLP(MLPConfig(input_shape=(6,), num_classes=4, hidden=[5, 7], rule="dfa")).double()
    w1, w2, w3 = (layer.weight.detach() for layer in model.rule_layers)
    torch.testing.assert_close(alignment_reference(model, 0), w3 @ w2 @ w1)
    torch.testing.assert_close(alignment_reference(model, 1), w3 @ w2)
    torch.testing.assert_close(alignment_reference(model, 2), w3)
    expected = angle_degrees(w3 @ w2 @ w1, model.rule_layers[0].fixed_feedback)
    assert weight_metrics(model)["alignment_angle/1"] == pytest.approx(expected)


def test_metric_names_list_and_flag_layer_one_as_carrying_no_signal():
    names = mn.metric_names(3, with_data=True)
    assert names[:5] == ["train_loss", "train_accuracy", "test_loss", "test_accuracy", "gen_gap"]
    assert "signal_angle/3" not in names and "signal_angle/2" in names
    assert "alignment_angle/3" in names and "eff_rank/1" in names
    assert mn.NO_SIGNAL_METRICS == ("alignment_angle/1",)
    assert "test_loss" not in mn.metric_names(2, with_data=False)


def test_a_network_without_hidden_layers_has_no_signal_angles():
    model = MLP(MLPConfig(input_shape=(6,), num_classes=4, hidden=[]))
    assert signal_angles(model, torch.randn(8, 6), torch.randint(4, (8,))) == []
