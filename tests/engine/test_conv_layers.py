"""Conv rule layers: with the feedback kernel set to the weight, every gradient is autograd's;
the input gradient is the transposed convolution of the output gradient with the rule's kernel."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from noisefa.engine.conv_layers import RuleConv2d
from noisefa.engine.metrics import (
    alignment_reference,
    angle_degrees,
    participation_ratio,
    weight_metrics,
)
from noisefa.engine.model import MLP, MLPConfig
from noisefa.engine.rules import RULES, true_gradient


def conv_layer(rule: str, seed: int = 0) -> RuleConv2d:
    return RuleConv2d(
        3,
        4,
        5,
        rule=rule,
        generator=torch.Generator().manual_seed(seed),
        feedback_generator=torch.Generator().manual_seed(seed + 1),
        num_classes=10,
        input_shape=(3, 9, 9),
    ).double()


def grads_of(layer, x, g):
    x = x.clone().requires_grad_()
    layer(x).backward(g)
    return x.grad, layer.weight.grad, layer.bias.grad


def test_fa_conv_with_its_kernel_set_to_the_weight_equals_autograd():
    layer = conv_layer("fa")
    with torch.no_grad():
        layer.fixed_feedback.copy_(layer.weight)
    x = torch.randn(6, 3, 9, 9, dtype=torch.float64)
    g = torch.randn(6, 4, 9, 9, dtype=torch.float64)
    grad_x, grad_w, grad_b = grads_of(layer, x, g)
    w = layer.weight.detach().clone().requires_grad_()
    b = layer.bias.detach().clone().requires_grad_()
    xr = x.clone().requires_grad_()
    F.conv2d(xr, w, b, padding=2).backward(g)
    torch.testing.assert_close(grad_x, xr.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_w, w.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_b, b.grad, rtol=1e-12, atol=1e-12)


def test_fa_conv_input_gradient_is_the_transposed_convolution_with_the_feedback_kernel():
    layer = conv_layer("fa")
    x = torch.randn(6, 3, 9, 9, dtype=torch.float64)
    g = torch.randn(6, 4, 9, 9, dtype=torch.float64)
    grad_x, grad_w, _ = grads_of(layer, x, g)
    expected = torch.nn.grad.conv2d_input(x.shape, layer.fixed_feedback, g, padding=2)
    torch.testing.assert_close(grad_x, expected, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(
        grad_x, torch.nn.grad.conv2d_input(x.shape, layer.weight, g, padding=2)
    )
    # The kernel's gradient is backprop's whatever the feedback.
    torch.testing.assert_close(
        grad_w,
        torch.nn.grad.conv2d_weight(x, layer.weight.shape, g, padding=2),
        rtol=1e-12,
        atol=1e-12,
    )
    assert layer.fixed_feedback.grad is None  # a buffer, never trained


@pytest.mark.parametrize(
    ("rule", "feedback_is"),
    [("usf", torch.sign), ("frsf", lambda w: w.abs().mul(0).add(1) * torch.sign(w))],
)
def test_sign_rules_on_a_kernel_use_the_sign_of_the_weight(rule, feedback_is):
    layer = conv_layer(rule)
    if rule == "frsf":
        with torch.no_grad():
            layer.fixed_feedback.fill_(1.0)  # |B| = 1: frSF's kernel is sign(W), as uSF's
    x = torch.randn(4, 3, 9, 9, dtype=torch.float64)
    g = torch.randn(4, 4, 9, 9, dtype=torch.float64)
    grad_x, _, _ = grads_of(layer, x, g)
    expected = torch.nn.grad.conv2d_input(x.shape, feedback_is(layer.weight.detach()), g, padding=2)
    torch.testing.assert_close(grad_x, expected, rtol=1e-12, atol=1e-12)


def test_kp_conv_feedback_receives_the_kernels_gradient():
    layer = conv_layer("kp")
    layer.trained_feedback.requires_grad_(True)
    x = torch.randn(4, 3, 9, 9, dtype=torch.float64)
    g = torch.randn(4, 4, 9, 9, dtype=torch.float64)
    grads_of(layer, x, g)
    torch.testing.assert_close(layer.trained_feedback.grad, layer.weight.grad)


def lenet_like(rule: str) -> MLP:
    config = MLPConfig(
        input_shape=(1, 12, 12), num_classes=10, hidden=[20], conv=[3, 5], kernel_size=3, rule=rule
    )
    return MLP(config).double()


@pytest.mark.parametrize("rule", sorted(RULES))
def test_every_rule_under_true_gradient_equals_autograd_on_a_conv_net(rule):
    model = lenet_like(rule)
    reference = lenet_like("bp")
    reference.load_state_dict(model.state_dict(), strict=False)
    x = torch.randn(8, 1, 12, 12, dtype=torch.float64)
    y = torch.randint(10, (8,))
    with true_gradient(model):
        F.cross_entropy(model(x), y).backward()
    F.cross_entropy(reference(x), y).backward()
    for mine, theirs in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-10, atol=1e-12)


def test_dfa_conv_layer_receives_the_output_error_through_its_own_matrix():
    model = lenet_like("dfa")
    x = torch.randn(8, 1, 12, 12, dtype=torch.float64)
    y = torch.randint(10, (8,))
    hidden: list[torch.Tensor] = []
    conv2_input: list[torch.Tensor] = []
    handle = model.convs[1].register_forward_hook(lambda m, args, out: conv2_input.append(args[0]))
    logits = model(x, hidden)
    handle.remove()
    conv2_input[0].retain_grad()
    logits.retain_grad()
    F.cross_entropy(logits, y).backward()
    error = logits.grad  # (B, C): dL/dlogits
    expected = (error @ model.convs[1].fixed_feedback.flatten(1)).view_as(conv2_input[0])
    torch.testing.assert_close(conv2_input[0].grad, expected, rtol=1e-12, atol=1e-12)


def test_a_conv_net_draws_the_same_weights_for_every_rule():
    weights = {rule: lenet_like(rule).state_dict() for rule in ("bp", "fa", "usf")}
    for rule in ("fa", "usf"):
        for key, value in weights["bp"].items():
            torch.testing.assert_close(weights[rule][key], value)


def test_effective_dimension_of_a_kernel_is_that_of_its_out_by_in_k_k_matrix():
    model = lenet_like("fa")
    metrics = weight_metrics(model)
    kernel = model.convs[1].weight.detach().double().flatten(1)  # (5, 3·3·3)
    expected = participation_ratio(torch.linalg.svdvals(kernel))
    assert metrics["eff_dim/2"] == pytest.approx(expected)
    assert metrics["eff_dim/2"] <= 5


def test_dfa_angle_of_a_conv_layer_is_against_the_linear_part_of_backprops_path():
    # 13×13: the first pool drops a row and a column, as max-pool does
    config = MLPConfig(
        input_shape=(1, 13, 13), num_classes=10, hidden=[20], conv=[3, 5], kernel_size=3
    )
    model = MLP(dataclasses.replace(config, rule="dfa")).double()
    # By hand: the readout's and hidden layer's product (C, 5·3·3), then back through each
    # block: 2×2 average-pool's transpose (a quarter to each cell), then the kernel's.
    g = (model.layers[1].weight @ model.layers[0].weight).detach().view(10, 5, 3, 3)
    for conv in reversed(model.convs):
        c, h, w = conv.input_shape
        spread = g.repeat_interleave(2, 2).repeat_interleave(2, 3) / 4
        up = torch.zeros(10, conv.out_channels, h, w, dtype=torch.float64)
        up[:, :, : spread.shape[2], : spread.shape[3]] = spread
        g = torch.nn.grad.conv2d_input((10, c, h, w), conv.weight.detach(), up, padding=1)
    torch.testing.assert_close(alignment_reference(model, 0), g, rtol=1e-10, atol=1e-12)
    feedback = model.convs[0].fixed_feedback
    metrics = weight_metrics(model)
    assert metrics["alignment_angle/1"] == pytest.approx(angle_degrees(g, feedback))
    assert 80 < metrics["alignment_angle/1"] < 100  # random B: near orthogonal
    with torch.no_grad():
        feedback.copy_(g)
    assert weight_metrics(model)["alignment_angle/1"] == pytest.approx(0.0, abs=1e-4)
