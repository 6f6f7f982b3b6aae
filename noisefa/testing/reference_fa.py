"""The plain reference FA layer the benchmarks time the engine against: FA as it is commonly
written, an ``nn.Linear`` whose forward calls the engine's own FA autograd Function (the
same maths, none of the engine's stacking)."""

from __future__ import annotations

import torch
import torch.nn as nn

from noisefa.engine.rules import FeedbackLinearFunction


class RefFALinear(nn.Linear):
    """nn.Linear with a fixed random (He-normal) feedback matrix."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__(n_in, n_out)
        self.register_buffer("feedback", torch.randn(n_out, n_in) * (2.0 / n_in) ** 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return FeedbackLinearFunction.apply(x, self.weight, self.bias, self.feedback)
