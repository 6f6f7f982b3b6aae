"""The sizes a resource estimate reads: a dataset's, and a network's under its rule. No torch.

:class:`Network` counts what one network holds: weights, biases and batch-norm affine
(``parameters``), the feedback its learning rule keeps beside them (``feedback_entries``),
what the optimizer updates (``trained_entries``: KP trains its feedback like a weight) and
brSF's per-batch draws (``draw_entries``). :data:`RULE_FEEDBACK` is the torch-free mirror of
what ``engine/feedback_rules.py`` allocates per rule (tests/engine/test_estimates.py checks
the two agree), so the API can estimate a job without loading the training stack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from .catalogue import builtin_shape, builtin_split_sizes, known_datasets
from .conv_shape import ConvBlock, conv_blocks
from .spec import ModelSpec

FLOAT_BYTES = 4  # float32 tensors
LABEL_BYTES = 8  # int64 labels
SVD_BYTES = 8 * 3  # float64 weight, its working copy and the factors


@dataclass(frozen=True)
class DatasetSize:
    """What an estimate needs to know of a dataset: its sample shape, classes and splits."""

    input_shape: tuple[int, ...]
    num_classes: int
    train_size: int
    test_size: int

    @property
    def input_size(self) -> int:
        return math.prod(self.input_shape)  # features of one (flattened) sample

    @property
    def device_bytes(self) -> int:
        """Both splits on the device: float32 inputs and int64 labels."""
        return (self.train_size + self.test_size) * (FLOAT_BYTES * self.input_size + LABEL_BYTES)


def builtin_size(name: str) -> DatasetSize:
    """The :class:`DatasetSize` of built-in ``name`` (one of ``known_datasets()``)."""
    input_shape, num_classes = builtin_shape(name)
    return DatasetSize(tuple(input_shape), num_classes, *builtin_split_sizes(name))


def builtin_sizes() -> dict[str, DatasetSize]:
    """Every built-in dataset's size, by name."""
    return {name: builtin_size(name) for name in known_datasets()}


@dataclass(frozen=True)
class RuleFeedback:
    """What a rule keeps per layer beside the weight: a buffer of the weight's shape
    (``"weight"``: fa, frsf, kp), of shape (classes, *one sample's input to the layer)
    (``"direct"``: dfa) or none; whether it redraws a weight-shaped matrix every batch
    (brsf) and whether the optimizer trains its buffer (kp)."""

    buffer: Literal["weight", "direct"] | None
    redraws: bool = False
    trains: bool = False


RULE_FEEDBACK: dict[str, RuleFeedback] = {
    "bp": RuleFeedback(None),
    "fa": RuleFeedback("weight"),
    "dfa": RuleFeedback("direct"),
    "usf": RuleFeedback(None),
    "brsf": RuleFeedback(None, redraws=True),
    "frsf": RuleFeedback("weight"),
    "kp": RuleFeedback("weight", trains=True),
}


@dataclass(frozen=True)
class Network:
    """The sizes of one network that every formula reads: its conv blocks (none for an MLP)
    and its fully connected widths."""

    input_shape: tuple[int, ...]
    widths: tuple[int, ...]  # first FC input (the input, or the conv features), hidden..., classes
    rule: str
    batch_norm: bool
    convs: tuple[ConvBlock, ...] = ()

    @classmethod
    def of(cls, model: ModelSpec, shape: DatasetSize) -> Network:
        """``ValueError`` naming ``model.conv`` when the input cannot take the conv blocks."""
        convs = tuple(conv_blocks(shape.input_shape, model.conv, model.kernel_size))
        features = convs[-1].pooled_size if convs else shape.input_size
        widths = (features, *model.hidden, shape.num_classes)
        return cls(tuple(shape.input_shape), widths, model.rule, model.batch_norm, convs)

    @property
    def input_size(self) -> int:
        return math.prod(self.input_shape)

    def fitted_bytes(self, data: DatasetSize, samples: int) -> int:
        """A copy of ``samples`` of ``data`` resized to the model's input (none when the
        shapes already agree: the engine then uses the data as it is)."""
        if tuple(data.input_shape) == self.input_shape:
            return 0
        return FLOAT_BYTES * samples * self.input_size

    @property
    def layers(self) -> list[tuple[int, int]]:
        """``(in, out)`` of every linear layer."""
        return list(zip(self.widths[:-1], self.widths[1:], strict=True))

    @property
    def hidden(self) -> tuple[int, ...]:
        return self.widths[1:-1]

    @property
    def macs(self) -> int:
        """Multiply-adds of one sample's forward pass (M): convolutions and linear layers."""
        return sum(b.macs for b in self.convs) + self.linear_macs

    @property
    def linear_macs(self) -> int:
        return sum(n_in * n_out for n_in, n_out in self.layers)

    @property
    def kernel_entries(self) -> int:
        """Conv kernel entries."""
        return sum(b.kernel_entries for b in self.convs)

    @property
    def parameters(self) -> int:
        """Weights, biases and batch-norm scales and shifts (P)."""
        norm = 2 * sum(self.hidden) if self.batch_norm else 0
        conv = self.kernel_entries + sum(b.out_channels for b in self.convs)
        return self.linear_macs + sum(n_out for _, n_out in self.layers) + norm + conv

    @property
    def layer_inputs(self) -> list[int]:
        """Floats of one sample's input to each rule layer, in forward order (conv, then linear)."""
        return [b.in_channels * b.height * b.width for b in self.convs] + list(self.widths[:-1])

    @property
    def feedback_entries(self) -> int:
        """The rule's feedback buffers (F): one entry per weight entry (fa, frsf, kp),
        classes × each layer's input (dfa: the output error goes straight to every layer,
        the readout's buffer included as the engine allocates it), or none."""
        buffer = RULE_FEEDBACK[self.rule].buffer
        if buffer == "weight":
            return self.linear_macs + self.kernel_entries
        if buffer == "direct":
            return self.widths[-1] * sum(self.layer_inputs)
        return 0

    @property
    def trained_entries(self) -> int:
        """What the optimizer updates, with a gradient and its state each: the parameters,
        plus KP's feedback (it receives the weight's gradient through the same optimizer)."""
        trained_feedback = self.feedback_entries if RULE_FEEDBACK[self.rule].trains else 0
        return self.parameters + trained_feedback

    @property
    def draw_entries(self) -> int:
        """brSF's per-batch draws: one weight-shaped matrix per layer, alive through a step
        (the stacked MLP skips the first layer's, which only the input would receive: an
        upper bound by that layer)."""
        if not RULE_FEEDBACK[self.rule].redraws:
            return 0
        return self.linear_macs + self.kernel_entries

    @property
    def state_bytes(self) -> int:
        """Parameters, the rule's feedback buffers and batch-norm running statistics."""
        stats = 2 * sum(self.hidden) if self.batch_norm else 0
        return FLOAT_BYTES * (self.parameters + self.feedback_entries + stats)

    @property
    def kept_per_sample(self) -> int:
        """Floats one training sample holds at the backward's peak (A)."""
        per_hidden = 3 if self.batch_norm else 2
        kept = self.input_size + per_hidden * sum(self.hidden) + 2 * self.widths[-1]
        # Each conv block: its output, activation and their gradient, then the pooled map.
        kept += sum(3 * b.output_size + b.pooled_size for b in self.convs)
        return kept + 2 * max(self.widths[1:])  # the backward's gradient buffers

    @property
    def eval_per_sample(self) -> int:
        """Floats alive per sample in a forward pass without gradients."""
        return 3 * max([*self.widths[1:], *(b.output_size for b in self.convs)])

    @property
    def svd_bytes(self) -> int:
        return SVD_BYTES * max(n_in * n_out for n_in, n_out in self.matrices)

    @property
    def svd_macs(self) -> int:
        return sum(min(n_in, n_out) ** 2 * max(n_in, n_out) for n_in, n_out in self.matrices)

    @property
    def matrices(self) -> list[tuple[int, int]]:
        """The shape of every weight as the metrics see it (a kernel as (out, in·k·k))."""
        kernels = [(b.out_channels, b.kernel_entries // b.out_channels) for b in self.convs]
        return kernels + self.layers
