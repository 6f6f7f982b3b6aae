"""The MLP whose layers learn by a named rule (``bp``, ``fa``, ...).

Input shape and class count come from the dataset; the input is flattened. Layers are
numbered 1..L for metrics: layer 1 is the first linear layer, layer L the readout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from .contract.spec import ModelSpec
from .rules import RULES, RuleLinear


@dataclass
class MLPConfig:
    """Everything that fixes the network's shape and initial weights."""

    input_shape: tuple[int, ...]
    num_classes: int
    hidden: list[int] = field(default_factory=lambda: [100])
    activation: str = "relu"
    rule: str = "fa"
    batch_norm: bool = False
    seed: int = 0
    feedback_seed: int = 1_000_003
    feedback_scale: float = 1.0

    @classmethod
    def from_spec(
        cls, spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int
    ) -> MLPConfig:
        """The config of a job's model, given the dataset's input shape and classes."""
        return cls(
            input_shape=tuple(input_shape),
            num_classes=num_classes,
            hidden=list(spec.hidden),
            activation=spec.activation,
            rule=spec.rule,
            batch_norm=spec.batch_norm,
            seed=spec.seed,
            feedback_seed=spec.resolved_feedback_seed,
            feedback_scale=spec.feedback_scale,
        )


ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}


class MLP(nn.Module):
    """Linear → (batch norm) → activation, repeated; then a linear readout.

    Weights are drawn on the CPU from generators seeded by the config, so the same seed gives
    the same network on every device and for every rule.
    """

    def __init__(self, config: MLPConfig):
        super().__init__()
        assert config.rule in RULES, f"unknown rule {config.rule!r}; known: {sorted(RULES)}"
        assert config.activation in ACTIVATIONS, f"unknown activation {config.activation!r}"
        self.config = config
        layer_cls = RULES[config.rule]
        weights = torch.Generator().manual_seed(config.seed)
        feedback = torch.Generator().manual_seed(config.feedback_seed)
        widths = [math.prod(config.input_shape), *config.hidden, config.num_classes]
        self.layers = nn.ModuleList(
            layer_cls(
                n_in,
                n_out,
                generator=weights,
                feedback_generator=feedback,
                feedback_scale=config.feedback_scale,
            )
            for n_in, n_out in zip(widths[:-1], widths[1:], strict=True)
        )
        self.norms = nn.ModuleList(
            nn.BatchNorm1d(width) if config.batch_norm else nn.Identity() for width in config.hidden
        )
        self.act = ACTIVATIONS[config.activation]()

    @property
    def rule_layers(self) -> list[RuleLinear]:
        """Layers 1..L in order (index l-1 is metric layer l)."""
        return list(self.layers)

    def forward(
        self, x: torch.Tensor, hidden_out: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Logits (B, classes). ``hidden_out``, if given, collects each hidden linear output."""
        h = x.flatten(1)  # (B, features)
        for layer, norm in zip(self.layers[:-1], self.norms, strict=True):
            h = layer(h)  # (B, width)
            if hidden_out is not None:
                hidden_out.append(h)
            h = self.act(norm(h))
        return self.layers[-1](h)  # (B, classes)


def build_model(
    spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int, device: str | torch.device
) -> MLP:
    """A job's freshly initialised model on ``device``."""
    return MLP(MLPConfig.from_spec(spec, input_shape, num_classes)).to(device)
