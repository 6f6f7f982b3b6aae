"""The MLP's shapes and layer numbering; noise batches' distribution, shape and freshness."""

from __future__ import annotations

import math

import pytest
import torch

from noisefa.engine.contract.spec import NoiseSpec
from noisefa.engine.model import MLP, MLPConfig
from noisefa.engine.noise import NoiseSource


@pytest.mark.parametrize("hidden", [[], [16], [16, 8, 4]])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_mlp_of_any_depth_maps_images_to_class_logits(hidden, batch_norm):
    config = MLPConfig(
        input_shape=(1, 8, 8),
        num_classes=10,
        hidden=hidden,
        activation="tanh",
        batch_norm=batch_norm,
    )
    model = MLP(config)
    assert model(torch.randn(5, 1, 8, 8)).shape == (5, 10)
    assert len(model.rule_layers) == len(hidden) + 1
    assert model.rule_layers[0].weight.shape[1] == 64
    assert model.rule_layers[-1].weight.shape[0] == 10


def test_mlp_exposes_weight_and_feedback_of_each_layer_and_hidden_outputs():
    model = MLP(MLPConfig(input_shape=(12,), num_classes=3, hidden=[6, 5]))
    for layer in model.rule_layers:
        assert layer.feedback.shape == layer.weight.shape
    hidden: list[torch.Tensor] = []
    model(torch.randn(4, 12), hidden)
    assert [h.shape for h in hidden] == [(4, 6), (4, 5)]


def test_same_seed_gives_the_same_network():
    config = MLPConfig(input_shape=(12,), num_classes=3, hidden=[6], seed=3)
    a, b = MLP(config), MLP(config)
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb)


def noise(distribution="normal", labels="uniform", mean=0.5, std=2.0, seed=0):
    spec = NoiseSpec(distribution=distribution, mean=mean, std=std, labels=labels)
    return NoiseSource(spec, (1, 8, 8), 10, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("distribution", ["normal", "uniform"])
def test_noise_inputs_have_the_requested_mean_and_std(distribution):
    x, labels, target = noise(distribution).batch(20_000)
    assert x.shape == (20_000, 1, 8, 8)
    assert x.mean().item() == pytest.approx(0.5, abs=0.02)
    assert x.std().item() == pytest.approx(2.0, rel=0.01)
    if distribution == "uniform":
        half = 2.0 * math.sqrt(3.0)
        assert x.min().item() >= 0.5 - half and x.max().item() <= 0.5 + half
    assert labels.min().item() >= 0 and labels.max().item() <= 9
    assert torch.equal(target, labels)
    counts = torch.bincount(labels, minlength=10).float() / 20_000
    assert counts.sub(0.1).abs().max().item() < 0.01


def test_soft_labels_give_uniform_target_distribution():
    _, labels, target = noise(labels="soft").batch(8)
    assert target.shape == (8, 10)
    torch.testing.assert_close(target, torch.full((8, 10), 0.1))
    assert labels.shape == (8,)


def test_noise_is_fresh_every_batch_and_reproducible_from_the_seed():
    source = noise()
    first, second = source.batch(4)[0], source.batch(4)[0]
    assert not torch.equal(first, second)
    assert torch.equal(noise().batch(4)[0], first)
