"""Learning rules: BP equals autograd, FA sends the error through its fixed feedback B."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from noisefa.engine.rules import (
    RULES,
    BPLinear,
    FALinear,
    FeedbackLinearFunction,
    rule_layers,
    true_gradient,
)


def make_layer(rule: str, n_in: int = 7, n_out: int = 5, seed: int = 0, scale: float = 1.0):
    return RULES[rule](
        n_in,
        n_out,
        generator=torch.Generator().manual_seed(seed),
        feedback_generator=torch.Generator().manual_seed(seed + 1),
        feedback_scale=scale,
    ).double()


def grads_of(layer: nn.Module, x: torch.Tensor, g: torch.Tensor):
    x = x.clone().requires_grad_(True)
    layer.zero_grad(set_to_none=True)
    (layer(x) * g).sum().backward()
    return x.grad, layer.weight.grad, layer.bias.grad


def reference_grads(layer: nn.Module, x: torch.Tensor, g: torch.Tensor):
    weight = layer.weight.detach().clone().requires_grad_(True)
    bias = layer.bias.detach().clone().requires_grad_(True)
    x = x.clone().requires_grad_(True)
    (torch.nn.functional.linear(x, weight, bias) * g).sum().backward()
    return x.grad, weight.grad, bias.grad


@pytest.mark.parametrize("shape", [(4, 7), (3, 4, 7), (2, 3, 2, 7)])
def test_feedback_tied_to_weight_gives_exactly_the_autograd_gradients(shape):
    torch.manual_seed(0)
    x, layer = torch.randn(shape, dtype=torch.float64), make_layer("fa")
    g = torch.randn(*shape[:-1], 5, dtype=torch.float64)
    layer.tied = True
    for ours, expected in zip(grads_of(layer, x, g), reference_grads(layer, x, g), strict=True):
        torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)


def test_feedback_buffer_set_to_weight_matches_autograd_and_bp_layer():
    torch.manual_seed(1)
    x, g = torch.randn(6, 7, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    fa, bp = make_layer("fa"), make_layer("bp")
    with torch.no_grad():
        fa.fixed_feedback.copy_(fa.weight)
    expected = reference_grads(fa, x, g)
    for layer in (fa, bp):
        for ours, want in zip(grads_of(layer, x, g), expected, strict=True):
            torch.testing.assert_close(ours, want, rtol=1e-12, atol=1e-12)


def test_tied_function_passes_numerical_gradcheck():
    torch.manual_seed(2)
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        # the feedback is W's value, detached as the layers pass it: it asks for no gradient
        lambda x, w, b: FeedbackLinearFunction.apply(x, w, b, w.detach()),
        (x, w, b),
    )


def test_fa_input_gradient_goes_through_feedback_not_weight():
    torch.manual_seed(3)
    x, g = torch.randn(2, 3, 7, dtype=torch.float64), torch.randn(2, 3, 5, dtype=torch.float64)
    layer = make_layer("fa")
    grad_x, grad_w, grad_b = grads_of(layer, x, g)
    torch.testing.assert_close(grad_x, g @ layer.fixed_feedback)
    assert not torch.allclose(grad_x, g @ layer.weight.detach())
    torch.testing.assert_close(grad_w, g.reshape(-1, 5).T @ x.reshape(-1, 7))
    torch.testing.assert_close(grad_b, g.reshape(-1, 5).sum(0))


def test_feedback_is_a_buffer_that_never_trains():
    layer = make_layer("fa")
    names = [name for name, _ in layer.named_parameters()]
    assert names == ["weight", "bias"]
    assert "fixed_feedback" in dict(layer.named_buffers())
    before = layer.fixed_feedback.clone()
    optimizer = torch.optim.SGD(layer.parameters(), lr=1.0)
    layer(torch.randn(4, 7, dtype=torch.float64)).sum().backward()
    optimizer.step()
    torch.testing.assert_close(layer.fixed_feedback, before, rtol=0, atol=0)


def test_feedback_init_is_seeded_he_normal_times_scale():
    a, b = make_layer("fa", 400, 300, seed=5), make_layer("fa", 400, 300, seed=5)
    torch.testing.assert_close(a.fixed_feedback, b.fixed_feedback, rtol=0, atol=0)
    other = make_layer("fa", 400, 300, seed=6)
    assert not torch.equal(a.fixed_feedback, other.fixed_feedback)
    he_std = math.sqrt(2.0 / 400)
    assert a.fixed_feedback.std().item() == pytest.approx(he_std, rel=0.02)
    scaled = make_layer("fa", 400, 300, seed=5, scale=3.0)
    torch.testing.assert_close(scaled.fixed_feedback, 3.0 * a.fixed_feedback)
    assert a.weight.std().item() == pytest.approx(he_std, rel=0.02)


def test_bp_and_fa_layers_share_forward_weights_for_one_seed():
    torch.testing.assert_close(make_layer("bp").weight, make_layer("fa").weight, rtol=0, atol=0)
    assert isinstance(make_layer("bp"), BPLinear) and isinstance(make_layer("fa"), FALinear)


def test_true_gradient_block_ties_every_layer_and_then_restores_the_rule():
    model = nn.Sequential(make_layer("fa"), nn.ReLU(), make_layer("fa", 5, 3))
    with true_gradient(model):
        assert all(layer.tied for layer in rule_layers(model))
    assert not any(layer.tied for layer in rule_layers(model))
