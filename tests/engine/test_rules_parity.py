"""Issue 13's rules in float64: each equals autograd when its feedback is arranged to be W,
DFA equals its hand-derived formula, KP's B takes W's update, on both training paths."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from noisefa.engine.contract.spec import OptimizerSpec
from noisefa.engine.feedback_rules import FEEDBACK_RULES
from noisefa.engine.model import MLP, MLPConfig
from noisefa.engine.rules import RULES, rule_layers, trained_feedback, true_gradient
from noisefa.engine.stacked_conv import StackedConvNet
from noisefa.engine.stacked_model import StackedMLP
from noisefa.engine.stacked_optim import StackedOptimizer
from noisefa.engine.stacking import stack_models

# Rules whose matrix can be made exactly W: how to arrange the layer (float64, no grad).
ARRANGE_TO_WEIGHT = {
    "bp": lambda layer: None,
    "fa": lambda layer: layer.fixed_feedback.copy_(layer.weight),
    "kp": lambda layer: layer.trained_feedback.copy_(layer.weight),
    "usf": lambda layer: layer.weight.copy_(torch.sign(layer.weight)),  # ±1 entries
    "frsf": lambda layer: layer.fixed_feedback.copy_(layer.weight.abs()),  # |W| ∘ sign W = W
}


def model_of(rule: str, hidden=(6, 5), batch_norm=False, seed=0) -> MLP:
    config = MLPConfig(
        input_shape=(7,),
        num_classes=4,
        hidden=list(hidden),
        rule=rule,
        batch_norm=batch_norm,
        seed=seed,
    )
    return MLP(config).double()


def model_grads(model: MLP, x, y, *, exact: bool) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    if exact:
        with true_gradient(model):
            F.cross_entropy(model(x), y).backward()
    else:
        F.cross_entropy(model(x), y).backward()
    return [p.grad.clone() for p in model.parameters()]


def stacked_grads(model: MLP, x, y) -> list[torch.Tensor]:
    stack = StackedMLP([model], [torch.Generator().manual_seed(0)])
    stack.step_gradients(x.unsqueeze(0), y.unsqueeze(0))
    return [g[0].clone() for g in stack.grads.views[: stack.num_params]]


def data(seed=0, n=9):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 7, dtype=torch.float64, generator=generator)
    return x, torch.randint(4, (n,), generator=generator)


def test_every_issue_13_rule_is_registered_with_its_hooks():
    assert set(RULES) == set(FEEDBACK_RULES) == {"bp", "fa", "dfa", "usf", "brsf", "frsf", "kp"}
    assert [r for r, cls in RULES.items() if cls.rule.direct] == ["dfa"]
    assert [r for r, cls in RULES.items() if cls.rule.redraws] == ["brsf"]
    assert [r for r, cls in RULES.items() if cls.rule.trains_feedback] == ["kp"]


@pytest.mark.parametrize("rule", sorted(ARRANGE_TO_WEIGHT))
@pytest.mark.parametrize("batch_norm", [False, True])
def test_a_rule_with_feedback_arranged_to_w_gives_the_autograd_gradients(rule, batch_norm):
    model = model_of(rule, batch_norm=batch_norm)
    with torch.no_grad():
        for layer in model.rule_layers:
            ARRANGE_TO_WEIGHT[rule](layer)
    x, y = data()
    expected = model_grads(model, x, y, exact=True)
    for got in (model_grads(model, x, y, exact=False), stacked_grads(model, x, y)):
        for ours, want in zip(got, expected, strict=True):
            torch.testing.assert_close(ours, want, rtol=1e-10, atol=1e-12)


def test_sign_rules_without_arrangement_differ_from_bp():
    x, y = data(1)
    for rule in ("usf", "frsf", "brsf"):
        model = model_of(rule)
        ours, exact = model_grads(model, x, y, exact=False), model_grads(model, x, y, exact=True)
        assert not torch.allclose(ours[0], exact[0]), rule  # layer 1 learns from the rule
        torch.testing.assert_close(ours[-2], exact[-2])  # the readout from the loss itself


def test_brsf_matrix_is_the_draw_magnitudes_with_w_signs_and_draws_w_gives_w():
    rule, w = FEEDBACK_RULES["brsf"], torch.randn(5, 3, 2, 2, dtype=torch.float64)  # a kernel
    torch.testing.assert_close(rule.backward_matrix(w, None, w), w)
    draw = torch.randn_like(w)
    torch.testing.assert_close(rule.backward_matrix(w, None, draw), draw.abs() * torch.sign(w))


def test_brsf_layer_redraws_per_training_batch_and_measures_on_one_fixed_draw():
    layer = model_of("brsf").rule_layers[1]
    layer.eval()
    assert torch.equal(layer.draw(), layer.draw()), "eval mode: always the same draw"
    first = layer.draw(advance=True)
    assert not torch.equal(first, layer.draw(advance=True)), "train mode: a new draw per batch"
    assert torch.equal(model_of("brsf").rule_layers[1].draw(), first), "seeded by the model"
    layer = model_of("brsf").rule_layers[1].eval()  # never trained here: draw 0 is the matrix
    x, g = torch.randn(4, 6, dtype=torch.float64, requires_grad=True), torch.randn(4, 5)
    (layer(x) * g.double()).sum().backward()
    torch.testing.assert_close(x.grad, g.double() @ (first.abs() * torch.sign(layer.weight)))


def test_brsf_stacked_draws_come_from_the_runs_generator():
    model, (x, y) = model_of("brsf"), data(2)
    stack = StackedMLP([model], [torch.Generator().manual_seed(7)])
    stack.step_gradients(x.unsqueeze(0), y.unsqueeze(0))
    replay = torch.Generator().manual_seed(7)
    draws = {}
    for i in (2, 1):  # the backward visits the top layer first
        w = model.rule_layers[i].weight
        draws[i] = torch.empty_like(w).normal_(0.0, (2.0 / w.shape[1]) ** 0.5, generator=replay)
    for i, layer in enumerate(model.rule_layers):  # the autograd path, given those draws
        draw = draws.get(i, torch.zeros_like(layer.weight))
        layer.draw = lambda advance=False, draw=draw: draw
    expected = model_grads(model, x, y, exact=False)
    for ours, want in zip(stack.grads.views[: stack.num_params], expected, strict=True):
        torch.testing.assert_close(ours[0], want, rtol=1e-10, atol=1e-12)


def dfa_formula(model: MLP, x, y) -> list[torch.Tensor]:
    """DFA by hand (Nøkland 2016) for Linear-ReLU-Linear-ReLU-Linear, mean cross-entropy."""
    (w1, b1), (w2, b2), (w3, b3) = [(layer.weight, layer.bias) for layer in model.rule_layers]
    d2, d3 = model.rule_layers[1].fixed_feedback, model.rule_layers[2].fixed_feedback
    a1 = x @ w1.T + b1  # (N, h1)
    h1 = a1.relu()
    a2 = h1 @ w2.T + b2  # (N, h2)
    h2 = a2.relu()
    logits = h2 @ w3.T + b3  # (N, C)
    e = (logits.softmax(1) - F.one_hot(y, 4).double()) / len(x)  # dL/dlogits (N, C)
    delta2 = (e @ d3) * (a2 > 0)  # the output error straight to h2, through B3 (C, h2)
    delta1 = (e @ d2) * (a1 > 0)  # ... and to h1 through B2 (C, h1)
    return [delta1.T @ x, delta1.sum(0), delta2.T @ h1, delta2.sum(0), e.T @ h2, e.sum(0)]


def test_dfa_equals_the_hand_derived_formula_on_both_paths():
    model, (x, y) = model_of("dfa"), data(3)
    assert model.rule_layers[1].fixed_feedback.shape == (4, 6)  # (classes, width of h1)
    assert model.rule_layers[2].fixed_feedback.shape == (4, 5)
    with torch.no_grad():
        expected = dfa_formula(model, x, y)
    for got in (model_grads(model, x, y, exact=False), stacked_grads(model, x, y)):
        for ours, want in zip(got, expected, strict=True):
            torch.testing.assert_close(ours, want, rtol=1e-10, atol=1e-12)
    bp = model_grads(model, x, y, exact=True)
    assert not torch.allclose(bp[0], expected[0]), "DFA is not BP"


def test_dfa_signal_reaches_a_hidden_layer_through_autograd_grad():
    model, (x, y) = model_of("dfa"), data(4)
    hidden: list[torch.Tensor] = []
    loss = F.cross_entropy(model(x, hidden), y)
    grads = torch.autograd.grad(loss, hidden)
    with torch.no_grad():
        a1 = x @ model.rule_layers[0].weight.T + model.rule_layers[0].bias
        logits = model(x)
        e = (logits.softmax(1) - F.one_hot(y, 4).double()) / len(x)
    torch.testing.assert_close(grads[0], (e @ model.rule_layers[1].fixed_feedback) * (a1 > 0))


def kp_step(optimizer: OptimizerSpec):
    model, (x, y) = model_of("kp"), data(5)
    stack = StackedMLP([model], [torch.Generator()])
    step = StackedOptimizer(
        optimizer, stack.params, stack.grads, [optimizer.lr], run_views=stack.run_views
    )
    before_w = [w[0].clone() for w in stack.weights]
    before_b = [b[0].clone() for b in stack.feedback]
    for _ in range(3):
        stack.step_gradients(x.unsqueeze(0), y.unsqueeze(0))
        step.step()
    return stack, step, before_w, before_b


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_kp_feedback_takes_exactly_the_weights_update_without_decay(name):
    spec = OptimizerSpec(name=name, lr=0.05, momentum=0.5 if name == "sgd" else 0.0)
    stack, optimizer, before_w, before_b = kp_step(spec)
    assert len(optimizer.run_state(0)) == stack.num_params + stack.depth, "B's state is saved"
    for i in range(stack.depth):
        delta_w, delta_b = stack.weights[i][0] - before_w[i], stack.feedback[i][0] - before_b[i]
        assert delta_w.abs().max() > 0
        torch.testing.assert_close(delta_b, delta_w, rtol=1e-10, atol=1e-12)


def test_kp_weight_decay_shrinks_w_minus_b_by_one_minus_lr_decay_per_sgd_step():
    lr, decay = 0.05, 0.1
    stack, _, before_w, before_b = kp_step(OptimizerSpec(name="sgd", lr=lr, weight_decay=decay))
    for i in range(stack.depth):
        gap = stack.weights[i][0] - stack.feedback[i][0]
        torch.testing.assert_close(gap, (before_w[i] - before_b[i]) * (1 - lr * decay) ** 3)


def test_kp_on_the_autograd_path_gives_b_the_weights_gradient():
    model, (x, y) = model_of("kp"), data(6)
    buffers = trained_feedback(model)
    assert len(buffers) == 3 and all(b.requires_grad for b in buffers)
    F.cross_entropy(model(x), y).backward()
    for layer in rule_layers(model):
        torch.testing.assert_close(layer.trained_feedback.grad, layer.weight.grad)
    assert [n for n, _ in model.named_parameters()][:2] == ["layers.0.weight", "layers.0.bias"]


def test_a_fixed_feedback_in_a_stack_with_kp_never_moves():
    models, (x, y) = [model_of("kp"), model_of("fa", seed=1), model_of("bp")], data(7)
    stack = StackedMLP(models, [torch.Generator() for _ in models])
    optimizer = StackedOptimizer(
        OptimizerSpec(name="adam", lr=0.01, weight_decay=0.1),
        stack.params,
        stack.grads,
        [0.01] * 3,
        frozen=stack.frozen_views,
        run_views=stack.run_views,
    )
    fixed = [f[1].clone() for f in stack.feedback]
    trained = [f[0].clone() for f in stack.feedback]
    stack.step_gradients(x.expand(3, -1, -1), y.expand(3, -1))
    optimizer.step()
    for i in range(stack.depth):
        assert torch.equal(stack.feedback[i][1], fixed[i])
        assert not torch.equal(stack.feedback[i][0], trained[i])
    assert stack.run_views == [stack.num_params + 3, stack.num_params, stack.num_params]


def conv_model(seed: int) -> MLP:
    """A small conv net (1 × 6 × 6 images), float64: the stack of the autograd path."""
    config = MLPConfig(
        input_shape=(1, 6, 6),
        num_classes=4,
        hidden=[5],
        conv=[2],
        kernel_size=3,
        rule="bp",
        seed=seed,
    )
    return MLP(config).double()


@pytest.mark.parametrize("shape", ["mlp", "conv"])
@pytest.mark.parametrize("soft", [False, True], ids=["class indices", "probabilities"])
def test_a_stacked_step_returns_each_runs_loss_sum_and_the_mean_loss_gradients(shape, soft):
    """Both stacked paths match autograd of ``F.cross_entropy`` per run: the loss summed over
    the batch, the gradients of its mean. The MLP's explicit softmax (max, exp, sum) does
    not overflow on logits in the thousands."""
    generator = torch.Generator().manual_seed(1)
    if shape == "mlp":
        models = [model_of("bp", seed=seed) for seed in range(3)]
        x, y = data(seed=1)
    else:
        models = [conv_model(seed) for seed in range(3)]
        x = torch.randn(9, 1, 6, 6, dtype=torch.float64, generator=generator)
        y = torch.randint(4, (9,), generator=generator)
    with torch.no_grad():
        models[2].rule_layers[-1].weight.mul_(1e3)  # logits in the thousands
    xs = torch.stack([x, -x, 2 * x])  # (R, B, *input)
    labels = torch.stack([y, y.flip(0), (y + 1) % 4])  # (R, B)
    probabilities = F.softmax(
        torch.randn(3, len(x), 4, dtype=torch.float64, generator=generator), 2
    )
    target = probabilities if soft else labels
    stack = stack_models(models, [torch.Generator().manual_seed(0) for _ in models])
    assert isinstance(stack, StackedConvNet if shape == "conv" else StackedMLP)
    logits, loss_sums = stack.step_gradients(xs, target)
    for r, model in enumerate(models):
        model.zero_grad(set_to_none=True)
        with true_gradient(model):
            loss = F.cross_entropy(model(xs[r]), target[r])
            loss.backward()
        assert torch.allclose(loss_sums[r], loss * len(x), rtol=1e-12, atol=1e-9)
        views = stack.grads.views[: stack.num_params]
        for param, grad in zip(model.parameters(), views, strict=True):
            assert torch.allclose(grad[r], param.grad, rtol=1e-10, atol=1e-12)
    assert torch.isfinite(logits).all() and torch.isfinite(loss_sums).all()
