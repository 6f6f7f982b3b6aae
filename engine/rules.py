"""Learning rules on linear layers: how a linear layer sends the error backwards.

Every rule is a :class:`RuleLinear` whose backward pass computes the input gradient with
the matrix its :class:`~.feedback_rules.FeedbackRule` derives from the weight, the rule's
own buffer (FA's fixed ``B``, KP's trained ``B``) and, for brSF, this batch's draw. One
``torch.autograd.Function`` does the arithmetic for every rule that passes the layer's
output gradient back (``grad_x = g @ M``), one for the direct rule (DFA: ``grad_x = e @ B``
with ``e`` the network's output error). :data:`RULES` maps a rule name to its layer class,
so the model and the training loop look rules up by name and never branch on them. The
stacked trainer (:mod:`.stacked_model`) asks the same rule objects for the same matrices
over a stack of runs. The per-rule state every layer type keeps (buffer, brSF draws, the
direct rule's output-error cell) is :class:`~.rule_layer.RuleLayer`'s. This single-run path
serves metrics (signal angles against :func:`true_gradient`), meta-loss adaptation and
evaluation.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn

from .feedback_rules import FEEDBACK_RULES, FeedbackRule
from .rule_layer import OutputError, RuleLayer, direct_input_grad, he_normal_


def _linear_grads(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``grad_W = g^T @ x`` (leading dims flattened) and ``grad_b = sum(g)`` where needed."""
    x = ctx.saved_tensors[0]
    g2 = grad_out.reshape(-1, grad_out.shape[-1])  # (N, out)
    grad_w = grad_b = None
    if ctx.needs_input_grad[1] or ctx.needs_input_grad[3]:
        grad_w = g2.T @ x.reshape(-1, x.shape[-1])  # (out, in)
    if ctx.has_bias and ctx.needs_input_grad[2]:
        grad_b = g2.sum(0)  # (out,)
    return grad_w, grad_b


class FeedbackLinearFunction(torch.autograd.Function):
    """``y = x W^T + b`` whose input gradient goes through ``feedback`` instead of ``W``.

    ``grad_x = g @ feedback``, ``grad_W = g^T @ x``, ``grad_b = sum(g)``. Leading dims of
    ``x`` are flattened for the weight gradient, so (B, T, in) inputs work like (B, in).
    ``feedback`` gets a gradient only when it requires one (Kolen-Pollack's trained ``B``):
    the weight's own, ``g^T @ x``.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, feedback):
        ctx.save_for_backward(x, feedback)
        ctx.has_bias = bias is not None
        return torch.nn.functional.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        feedback = ctx.saved_tensors[1]
        grad_x = grad_out @ feedback if ctx.needs_input_grad[0] else None  # (..., in)
        grad_w, grad_b = _linear_grads(ctx, grad_out)
        grad_feedback = grad_w if ctx.needs_input_grad[3] else None
        return grad_x, grad_w if ctx.needs_input_grad[1] else None, grad_b, grad_feedback


class DirectFeedbackLinearFunction(torch.autograd.Function):
    """``y = x W^T + b`` whose input gradient is the output error through ``feedback``:
    ``grad_x = e @ feedback`` (feedback (C, in)); ``grad_W = g^T @ x`` with the layer's own
    output gradient ``g``. At the readout ``g`` is ``e`` (its ``feedback`` is FA's ``B``)."""

    @staticmethod
    def forward(ctx, x, weight, bias, feedback, output_error: OutputError, is_readout: bool):
        ctx.save_for_backward(x, feedback)
        ctx.has_bias = bias is not None
        ctx.output_error, ctx.is_readout = output_error, is_readout
        return torch.nn.functional.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, feedback = ctx.saved_tensors
        if ctx.is_readout:
            ctx.output_error.error = grad_out.reshape(-1, grad_out.shape[-1])  # (N, C)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = direct_input_grad(ctx.output_error, feedback, x)  # (..., in)
        grad_w, grad_b = _linear_grads(ctx, grad_out)
        grad_w = grad_w if ctx.needs_input_grad[1] else None
        return grad_x, grad_w, grad_b, None, None, None


class RuleLinear(RuleLayer):
    """A linear layer that learns by its class's :attr:`rule` (state: :class:`RuleLayer`).

    Every rule takes the same constructor arguments, so the model builds any of them alike;
    forward weights are drawn first from ``generator`` so one seed gives one network under
    every rule, and the rule's buffer comes from ``feedback_generator``. ``num_classes``
    sizes a direct rule's buffer (classes, in).
    """

    rule: FeedbackRule = FEEDBACK_RULES["bp"]

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        generator: torch.Generator,
        feedback_generator: torch.Generator,
        feedback_scale: float = 1.0,
        num_classes: int | None = None,
    ):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        he_normal_(self.weight, generator)
        self._init_rule_state((in_features,), num_classes, feedback_generator, feedback_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in) -> (..., out)."""
        matrix, output_error = self.backward_inputs()
        if output_error is not None:
            return DirectFeedbackLinearFunction.apply(
                x, self.weight, self.bias, matrix, output_error, self.is_readout
            )
        return FeedbackLinearFunction.apply(x, self.weight, self.bias, matrix)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, rule={self.rule.name}"


class BPLinear(RuleLinear):
    """Backprop: the feedback is the forward weight (weight transport)."""

    rule = FEEDBACK_RULES["bp"]


class FALinear(RuleLinear):
    """Feedback alignment: a fixed random ``B`` (He-normal × scale) carries the error back."""

    rule = FEEDBACK_RULES["fa"]


class DFALinear(RuleLinear):
    """Direct feedback alignment: the output error reaches the input through ``B`` (C, in)."""

    rule = FEEDBACK_RULES["dfa"]


class USFLinear(RuleLinear):
    """Uniform sign-concordant feedback: ``sign(W)``."""

    rule = FEEDBACK_RULES["usf"]


class BRSFLinear(RuleLinear):
    """Batchwise random-magnitude sign-concordant feedback: ``|R| ∘ sign(W)``, R per batch."""

    rule = FEEDBACK_RULES["brsf"]


class FRSFLinear(RuleLinear):
    """Fixed random-magnitude sign-concordant feedback: ``|B| ∘ sign(W)``, B fixed."""

    rule = FEEDBACK_RULES["frsf"]


class KPLinear(RuleLinear):
    """Kolen-Pollack: ``B`` is trained with ``W``'s gradient and weight decay."""

    rule = FEEDBACK_RULES["kp"]


RULES: dict[str, type[RuleLinear]] = {
    cls.rule.name: cls
    for cls in (BPLinear, FALinear, DFALinear, USFLinear, BRSFLinear, FRSFLinear, KPLinear)
}


def rule_layers(model: nn.Module) -> list[RuleLayer]:
    """The model's rule layers in forward order (layer ``l`` of the metrics is index l-1):
    the model's own list where it keeps one (``MLP.rule_layers``: conv layers included)."""
    if hasattr(model, "rule_layers"):
        return list(model.rule_layers)
    return [m for m in model.modules() if isinstance(m, RuleLayer)]


def trained_feedback(model: nn.Module) -> list[torch.Tensor]:
    """The buffers that learn with the weights (KP's ``B``), made to require grad, for a
    plain torch optimizer training ``model`` on this path (meta-loss adaptation)."""
    buffers = []
    for layer in rule_layers(model):
        if layer.rule.trains_feedback:
            buffers.append(layer.feedback_buffer.requires_grad_(True))
    return buffers


@contextmanager
def true_gradient(model: nn.Module) -> Iterator[None]:
    """Inside this block every rule layer backpropagates through its weight (exact BP)."""
    layers = rule_layers(model)
    previous = [layer.tied for layer in layers]
    for layer in layers:
        layer.tied = True
    try:
        yield
    finally:
        for layer, tied in zip(layers, previous, strict=True):
            layer.tied = tied
