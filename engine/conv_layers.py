"""Conv layers that learn by a named rule: the kernel analogue of :mod:`.rules`' linear layers.

A conv rule layer convolves with its kernel ``W`` (out, in, k, k), padding that keeps the
size, and sends the error back through the kernel its rule names (:mod:`.feedback_rules`:
``W`` for bp, a fixed random kernel ``B`` of ``W``'s shape for fa, ``sign(W)`` for usf, ...):
``grad_x = conv2d_input(x.shape, M, g)``, i.e. the transposed convolution of the output
gradient with ``M``; ``grad_W = conv2d_weight(x, g)`` and ``grad_b = Σ g`` as in backprop.
The rule hooks are elementwise, so a kernel is handled exactly as a matrix; this module only
adds the convolution. A direct rule (DFA) sends the network's output error ``e`` (N, C) to
the layer's input through its ``B`` (C, in, H, W): ``grad_x = (e @ B.flatten(1)).view_as(x)``.
``tied`` makes the backward use ``W`` itself (exact backprop): the metrics' true gradient
and the ``B := W`` parity tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .feedback_rules import FEEDBACK_RULES
from .rule_layer import OutputError, RuleLayer, direct_input_grad, he_normal_


class FeedbackConv2dFunction(torch.autograd.Function):
    """``y = conv2d(x, W, b, padding)`` whose input gradient goes through ``matrix``.

    ``matrix`` has ``W``'s shape, or for a direct rule (``output_error`` given) it is
    (C, *x's sample shape) and the input gradient is the output error through it. A gradient
    for ``matrix`` is returned only when it asks for one (Kolen-Pollack trains its kernel): it
    is ``W``'s own gradient.
    """

    @staticmethod
    def forward(
        ctx,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        matrix: torch.Tensor,
        padding: int,
        output_error: OutputError | None = None,
    ) -> torch.Tensor:
        ctx.save_for_backward(x, matrix)
        ctx.padding, ctx.weight_shape, ctx.output_error = padding, weight.shape, output_error
        return F.conv2d(x, weight, bias, padding=padding)  # (B, out, H, W)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, matrix = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            if ctx.output_error is not None:  # (B, C) through (C, in, H, W)
                grad_x = direct_input_grad(ctx.output_error, matrix, x)  # (B, in, H, W)
            else:
                # (B, out, H, W) through M (out, in, k, k) -> (B, in, H, W)
                grad_x = torch.nn.grad.conv2d_input(x.shape, matrix, grad_out, padding=ctx.padding)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[3]:
            # (B, in, H, W) ⋆ (B, out, H, W) -> (out, in, k, k)
            grad_w = torch.nn.grad.conv2d_weight(x, ctx.weight_shape, grad_out, padding=ctx.padding)
        if ctx.needs_input_grad[2]:
            grad_b = grad_out.sum((0, 2, 3))  # (out,)
        grad_m = grad_w if ctx.needs_input_grad[3] else None
        return grad_x, grad_w if ctx.needs_input_grad[1] else None, grad_b, grad_m, None, None


class RuleConv2d(RuleLayer):
    """A same-padded convolution whose backward uses its rule's kernel.

    Built like the linear rule layers (:class:`~.rules.RuleLinear`; the rule's state is
    :class:`~.rule_layer.RuleLayer`'s): forward kernels drawn first from ``generator``
    (He-normal, fan-in ``in·k·k``), then the rule's buffer (if it owns one) and brSF's draw
    seed from ``feedback_generator``, so one seed gives one network under every rule.
    ``input_shape`` is one sample's input to this layer (a direct rule's buffer is
    (classes, *input_shape)).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        rule: str,
        generator: torch.Generator,
        feedback_generator: torch.Generator,
        feedback_scale: float = 1.0,
        num_classes: int,
        input_shape: Sequence[int],
    ):
        super().__init__()
        assert kernel_size % 2 == 1, f"kernel_size must be odd (same padding), got {kernel_size}"
        self.rule = FEEDBACK_RULES[rule]
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.padding = kernel_size, kernel_size // 2
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        self.weight = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        he_normal_(self.weight, generator)
        self._init_rule_state(input_shape, num_classes, feedback_generator, feedback_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in, H, W) -> (B, out, H, W)."""
        matrix, output_error = self.backward_inputs()
        return FeedbackConv2dFunction.apply(
            x, self.weight, self.bias, matrix, self.padding, output_error
        )

    def extra_repr(self) -> str:
        return (
            f"in={self.in_channels}, out={self.out_channels}, kernel={self.kernel_size}, "
            f"rule={self.rule.name}"
        )
