"""Learning rules: how a linear layer sends the error backwards.

Every rule is a linear layer whose backward pass uses a ``feedback`` matrix of the weight's
shape: backprop (``bp``) uses the weight itself, feedback alignment (``fa``) a fixed random
matrix ``B`` (a buffer, never trained). Both go through one ``torch.autograd.Function``, so
the only difference between the rules is which matrix is handed to it. New rules (DFA,
sign-symmetry, a conv FA layer) register a layer class in :data:`RULES`; the model and the
training loop look rules up by name and never branch on them. The stacked trainer
(:mod:`.stacked_model`) asks the same class for its backward matrix over a stack of runs
(:meth:`RuleLinear.stacked_feedback`), so a new rule plugs into both paths at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn


class FeedbackLinearFunction(torch.autograd.Function):
    """``y = x W^T + b`` whose input gradient goes through ``feedback`` instead of ``W``.

    ``grad_x = g @ feedback``, ``grad_W = g^T @ x``, ``grad_b = sum(g)``. Leading dims of
    ``x`` are flattened for the weight gradient, so (B, T, in) inputs work like (B, in).
    """

    @staticmethod
    def forward(
        ctx,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        feedback: torch.Tensor,
    ) -> torch.Tensor:
        ctx.save_for_backward(x, feedback)
        ctx.has_bias = bias is not None
        return torch.nn.functional.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, feedback = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_out @ feedback  # (..., in)
        g2 = grad_out.reshape(-1, grad_out.shape[-1])  # (N, out)
        if ctx.needs_input_grad[1]:
            grad_w = g2.T @ x.reshape(-1, x.shape[-1])  # (out, in)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g2.sum(0)
        return grad_x, grad_w, grad_b, None


def he_normal_(tensor: torch.Tensor, generator: torch.Generator, scale: float = 1.0) -> None:
    """He-normal init (std = sqrt(2 / fan_in)), drawn from ``generator`` for reproducibility."""
    fan_in = tensor.shape[1]
    with torch.no_grad():
        tensor.normal_(0.0, scale * math.sqrt(2.0 / fan_in), generator=generator)


class RuleLinear(nn.Module):
    """Base of rule layers: a weight, a bias, and the matrix the backward pass uses.

    Every rule takes the same constructor arguments, so the model builds any of them alike;
    forward weights are drawn first from ``generator`` so one seed gives one network under
    every rule. ``tied`` makes the backward use the weight itself (exact backprop): metrics
    switch it on briefly to get the true gradient, and it is the ``B := W`` check mode of the
    unit tests.
    """

    rule = ""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        generator: torch.Generator,
        feedback_generator: torch.Generator,
        feedback_scale: float = 1.0,
    ):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        he_normal_(self.weight, generator)
        self.tied = False

    @property
    def feedback(self) -> torch.Tensor:
        """The matrix the input gradient is multiplied by."""
        return self.weight

    @property
    def fixed_matrix(self) -> torch.Tensor | None:
        """The rule's own untrained matrix (a buffer), if it has one; stacked with the run."""
        return None

    @staticmethod
    def stacked_feedback(weight: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        """(R, out, in): the backward matrix of a stack of runs of this rule, from their
        stacked weights and stacked :attr:`fixed_matrix` (zeros where a rule has none)."""
        return weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feedback = self.weight if self.tied else self.feedback
        return FeedbackLinearFunction.apply(x, self.weight, self.bias, feedback)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, rule={self.rule}"


class BPLinear(RuleLinear):
    """Backprop: the feedback is the forward weight (weight transport)."""

    rule = "bp"


class FALinear(RuleLinear):
    """Feedback alignment: a fixed random ``B`` (He-normal × scale) carries the error back."""

    rule = "fa"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        generator: torch.Generator,
        feedback_generator: torch.Generator,
        feedback_scale: float = 1.0,
    ):
        super().__init__(
            in_features,
            out_features,
            generator=generator,
            feedback_generator=feedback_generator,
            feedback_scale=feedback_scale,
        )
        # A buffer: saved in checkpoints and moved with .to(), never seen by the optimizer.
        self.register_buffer("fixed_feedback", torch.empty(out_features, in_features))
        he_normal_(self.fixed_feedback, feedback_generator, feedback_scale)

    @property
    def feedback(self) -> torch.Tensor:
        return self.fixed_feedback

    @property
    def fixed_matrix(self) -> torch.Tensor | None:
        return self.fixed_feedback

    @staticmethod
    def stacked_feedback(weight: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        return fixed


RULES: dict[str, type[RuleLinear]] = {"bp": BPLinear, "fa": FALinear}


def rule_layers(model: nn.Module) -> list[RuleLinear]:
    """The model's rule layers in forward order (layer ``l`` of the metrics is index l-1)."""
    return [m for m in model.modules() if isinstance(m, RuleLinear)]


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
