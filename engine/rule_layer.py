"""What every layer that learns by a rule keeps, whatever it computes: the rule's state.

:class:`RuleLayer` is the base of the linear layers (:mod:`.rules`) and the conv layers
(:mod:`.conv_layers`): the rule object, the buffer it owns (FA's fixed ``B``, KP's trained
``B``), brSF's draws on the autograd path, the ``tied`` switch (exact backprop, for the
metrics' true gradient and the ``B := W`` tests), and the output-error cell a direct rule
(DFA) shares among a model's layers. A subclass builds its ``weight`` and calls
:meth:`RuleLayer._init_rule_state`; its autograd Function asks :meth:`RuleLayer.backward_inputs`
what the input gradient goes through, so no rule logic is written per layer type.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from .feedback_rules import FeedbackRule, he_std

_DRAW_STRIDE = 1_000_003  # spaces the seeds of successive brSF draws on the autograd path


def he_normal_(tensor: torch.Tensor, generator: torch.Generator, scale: float = 1.0) -> None:
    """He-normal init (std = sqrt(2 / fan_in), fan_in = prod(shape[1:]): kernels too), drawn
    from ``generator`` for reproducibility."""
    with torch.no_grad():
        tensor.normal_(0.0, he_std(tensor.shape, scale), generator=generator)


class OutputError:
    """The network's output error ``e = dL/dlogits`` (N, C) of the backward pass under way,
    shared by one model's layers under a direct rule: the readout stores it, the others
    read it (autograd runs the readout's backward first)."""

    def __init__(self) -> None:
        self.error: torch.Tensor | None = None


def direct_input_grad(
    output_error: OutputError, feedback: torch.Tensor, x: torch.Tensor
) -> torch.Tensor:
    """A direct rule's input gradient: the output error through ``feedback`` (C, *sample),
    ``(e @ feedback.flatten(1)).view_as(x)``: (N, C) @ (C, in…) -> x's shape."""
    error = output_error.error
    assert error is not None, "a direct rule needs the readout's backward first"
    return (error @ feedback.flatten(1)).view_as(x)


def link_rule_layers(layers: Sequence[nn.Module]) -> None:
    """Share one :class:`OutputError` among a model's rule layers (in forward order) and
    mark the last as the readout; a model calls it once after building its layers."""
    shared = OutputError()
    for layer in layers:
        layer.output_error = shared
        layer.is_readout = False
    layers[-1].is_readout = True


class RuleLayer(nn.Module):
    """A layer whose backward sends the error through the matrix (or kernel) its rule names.

    Subclasses set :attr:`rule`, create ``weight`` (drawn first, from the weight generator)
    and then call :meth:`_init_rule_state`, which draws the rule's buffer and brSF's draw
    seed from the feedback generator in that order, so one seed gives one network under
    every rule.
    """

    rule: FeedbackRule
    weight: nn.Parameter

    def _init_rule_state(
        self,
        input_shape: Sequence[int],
        num_classes: int | None,
        feedback_generator: torch.Generator,
        feedback_scale: float,
    ) -> None:
        """``input_shape`` is one sample's input to this layer (a direct rule's buffer is
        (classes, *input_shape)); ``num_classes`` is needed by direct rules only."""
        assert num_classes is not None or not self.rule.direct, "a direct rule needs classes"
        self.input_shape = tuple(input_shape)
        self.feedback_scale = feedback_scale
        self.tied = False
        self.output_error: OutputError | None = None  # set by link_rule_layers
        self.is_readout = False
        weight_shape = self.weight.shape
        shape = self.rule.feedback_shape(weight_shape, self.input_shape, num_classes)
        if shape is not None:
            # A buffer: saved in checkpoints and moved with .to(), never seen by the
            # module's optimizer (KP's trains through the stacked optimizer).
            buffer = self.rule.init_feedback(
                shape, weight_shape, feedback_generator, feedback_scale
            )
            self.register_buffer(self.rule.buffer_name, buffer)
        # brSF on this path: draw k of the layer is seeded (draw_seed + k·stride); k moves
        # only with a train-mode forward, so eval-mode forwards (metrics) repeat the current
        # draw. The stacked trainer never advances it (it draws from its own generator into
        # ``given_draw`` of a private copy), so a model it trains is measured with draw 0.
        self.draw_seed = 0
        if self.rule.redraws:
            self.draw_seed = int(torch.randint(2**62, (), generator=feedback_generator))
        self.draws_taken = 0
        self.given_draw: torch.Tensor | None = None

    @property
    def feedback_buffer(self) -> torch.Tensor | None:
        """The rule's own matrix or kernel (FA's fixed ``B``, KP's trained ``B``), if any."""
        name = self.rule.buffer_name
        return None if name is None else getattr(self, name)

    def draw(self, *, advance: bool = False) -> torch.Tensor | None:
        """brSF's N(0, He std²) draw of the weight's shape for one batch (else ``None``):
        :attr:`given_draw` when the stacked trainer fills one each step (no host sync, so
        the step can be captured in a CUDA graph), else the layer's own seeded draw."""
        if not self.rule.redraws:
            return None
        if self.given_draw is not None:
            return self.given_draw
        seed = (self.draw_seed + self.draws_taken * _DRAW_STRIDE) % 2**63
        if advance:
            self.draws_taken += 1
        generator = torch.Generator(device=self.weight.device).manual_seed(seed)
        draw = torch.empty_like(self.weight, memory_format=torch.contiguous_format)
        return draw.normal_(
            0.0, he_std(self.weight.shape, self.feedback_scale), generator=generator
        )

    @property
    def feedback(self) -> torch.Tensor:
        """What the input gradient goes through now (brSF: its eval-mode draw)."""
        return self.rule.backward_matrix(self.weight.detach(), self.feedback_buffer, self.draw())

    def backward_inputs(self) -> tuple[torch.Tensor, OutputError | None]:
        """For this forward: the matrix the input gradient goes through, and the shared
        output-error cell when the rule is direct (else ``None``). Tied: the weight, not
        direct (exact backprop). A training forward advances brSF's draw."""
        if self.tied:
            return self.weight.detach(), None
        draw = self.draw(advance=self.training)
        matrix = self.rule.backward_matrix(self.weight.detach(), self.feedback_buffer, draw)
        return matrix, self.output_error if self.rule.direct else None
