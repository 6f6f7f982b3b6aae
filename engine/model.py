"""The network whose layers learn by a named rule (``bp``, ``fa``, ...): optional conv blocks,
then an MLP.

Input shape and class count come from the dataset. Each conv block (``config.conv``) is a
same-padded convolution, the activation and a 2×2 max-pool; the blocks' output (or, without
blocks, the input) is flattened into the fully connected layers. Layers are numbered 1..L for
metrics: the conv layers first, then the linear layers; layer L is the readout.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from .contract.conv_shape import POOL, conv_blocks, feature_size, image_shape
from .contract.spec import ModelSpec
from .conv_layers import RuleConv2d
from .rule_layer import RuleLayer, link_rule_layers
from .rules import RULES


@dataclass
class MLPConfig:
    """Everything that fixes the network's shape and initial weights."""

    input_shape: tuple[int, ...]
    num_classes: int
    hidden: list[int] = field(default_factory=lambda: [100])
    conv: list[int] = field(default_factory=list)
    kernel_size: int = 5
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
            conv=list(spec.conv),
            kernel_size=spec.kernel_size,
            activation=spec.activation,
            rule=spec.rule,
            batch_norm=spec.batch_norm,
            seed=spec.seed,
            feedback_seed=spec.resolved_feedback_seed,
            feedback_scale=spec.feedback_scale,
        )


ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}


class MLP(nn.Module):
    """Conv → activation → max-pool, repeated (none by default); then linear → (batch norm) →
    activation, repeated; then a linear readout.

    Weights are drawn on the CPU from generators seeded by the config, in layer order, so the
    same seed gives the same network on every device and for every rule. The conv layers are
    registered first: ``parameters()`` is conv kernels and biases, then linear weights and
    biases, then batch norm (the stacked trainer and checkpoints' ``optim.<index>`` rely on it).
    """

    def __init__(self, config: MLPConfig):
        super().__init__()
        assert config.rule in RULES, f"unknown rule {config.rule!r}; known: {sorted(RULES)}"
        assert config.activation in ACTIVATIONS, f"unknown activation {config.activation!r}"
        self.config = config
        layer_cls = RULES[config.rule]
        weights = torch.Generator().manual_seed(config.seed)
        feedback = torch.Generator().manual_seed(config.feedback_seed)
        blocks = conv_blocks(config.input_shape, config.conv, config.kernel_size)
        self.image_shape = image_shape(config.input_shape) if blocks else None
        self.convs = nn.ModuleList(
            RuleConv2d(
                block.in_channels,
                block.out_channels,
                block.kernel_size,
                rule=config.rule,
                generator=weights,
                feedback_generator=feedback,
                feedback_scale=config.feedback_scale,
                num_classes=config.num_classes,
                input_shape=(block.in_channels, block.height, block.width),
            )
            for block in blocks
        )
        features = feature_size(config.input_shape, config.conv, config.kernel_size)
        widths = [features, *config.hidden, config.num_classes]
        self.layers = nn.ModuleList(
            layer_cls(
                n_in,
                n_out,
                generator=weights,
                feedback_generator=feedback,
                feedback_scale=config.feedback_scale,
                num_classes=config.num_classes,
            )
            for n_in, n_out in zip(widths[:-1], widths[1:], strict=True)
        )
        link_rule_layers(self.rule_layers)  # direct rules (DFA) share the output error
        self.norms = nn.ModuleList(
            nn.BatchNorm1d(width) if config.batch_norm else nn.Identity() for width in config.hidden
        )
        self.act = ACTIVATIONS[config.activation]()

    @property
    def rule_layers(self) -> list[RuleLayer]:
        """Layers 1..L in order (index l-1 is metric layer l): conv layers, then linear."""
        return [*self.convs, *self.layers]

    def forward(
        self, x: torch.Tensor, hidden_out: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Logits (B, classes). ``hidden_out``, if given, collects each hidden layer's output
        (conv and linear, before the activation)."""
        h = x
        if self.image_shape is not None:
            h = x.reshape(len(x), *self.image_shape)  # (B, C, H, W)
            for conv in self.convs:
                h = conv(h)  # (B, out, H, W)
                if hidden_out is not None:
                    hidden_out.append(h)
                h = F.max_pool2d(self.act(h), POOL)  # (B, out, H/2, W/2)
        h = h.flatten(1)  # (B, features)
        for layer, norm in zip(self.layers[:-1], self.norms, strict=True):
            h = layer(h)  # (B, width)
            if hidden_out is not None:
                hidden_out.append(h)
            h = self.act(norm(h))
        return self.layers[-1](h)  # (B, classes)

    def linear_path(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        """The linear part of the network from rule layer ``layer``'s input (0-based) to the
        logits, applied to ``h`` (N, *that input): biases, batch norm and activations left
        out, each 2×2 max-pool replaced by a 2×2 average pool (its backward is max-pool's
        expected one when the maximum is equally likely anywhere in its window). A direct
        rule's feedback is compared with this map (docs/rules.md)."""
        for conv in self.convs[layer:]:
            weight = conv.weight.detach().to(h.dtype)
            h = F.avg_pool2d(F.conv2d(h, weight, padding=conv.padding), POOL)  # (N, out, H/2, W/2)
        h = h.flatten(1)  # (N, features)
        for linear in self.layers[max(layer - len(self.convs), 0) :]:
            h = h @ linear.weight.detach().to(h.dtype).T  # (N, in) @ (in, out) -> (N, out)
        return h  # (N, classes)


def build_model(
    spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int, device: str | torch.device
) -> MLP:
    """A job's freshly initialised model on ``device``."""
    return MLP(MLPConfig.from_spec(spec, input_shape, num_classes)).to(device)
