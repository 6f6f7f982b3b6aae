"""What each learning rule sends the error back through: shape-agnostic hooks per rule.

A rule is a :class:`FeedbackRule` object in :data:`FEEDBACK_RULES`. Layer types (the linear
layers of :mod:`.rules`, the stacked trainer of :mod:`.stacked_model`, conv layers) ask it
for the one buffer it owns, how to draw that buffer, and the matrix (or kernel) the input
gradient is computed with; none of them branches on a rule's name. Every hook works
elementwise, so the same code serves a matrix (out, in), a kernel (out, in, k, k) and a
stack of either with a leading run dimension. The rules (see docs/rules.md):

- ``bp``: the forward weight itself (weight transport, the baseline);
- ``fa``: a fixed random ``B`` of the weight's shape (Lillicrap et al. 2016);
- ``dfa``: each layer's input receives the *output* error through a fixed ``B`` of shape
  (classes, *input) (Nøkland 2016); the readout learns from its local error;
- ``usf``: ``sign(W)``, unit magnitudes (Liao et al. 2016; Moskovitz et al. 2018);
- ``brsf``: ``|R| ∘ sign(W)`` with ``R`` redrawn every batch;
- ``frsf``: ``|B| ∘ sign(W)`` with ``B`` fixed;
- ``kp``: Kolen-Pollack (Akrout et al. 2019), a ``B`` that receives the weight's gradient
  and weight decay, so ``W - B`` decays and the two converge.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def he_std(weight_shape: Sequence[int], scale: float = 1.0) -> float:
    """``scale · sqrt(2 / fan_in)`` with ``fan_in = prod(weight_shape[1:])`` (kernels too)."""
    return scale * math.sqrt(2.0 / math.prod(weight_shape[1:]))


class FeedbackRule:
    """A learning rule's backward hooks; subclasses override :meth:`backward_matrix`.

    ``buffer_name`` is the per-layer buffer the rule owns (``None``: it owns none);
    ``direct`` rules send the network's output error to every layer's input, not the
    layer's own output gradient; ``redraws`` rules need a fresh ``draw`` of the weight's
    shape each batch; ``trains_feedback`` rules train their buffer with the weight's
    gradient (and the phase's weight decay on the buffer itself).
    """

    name = ""
    buffer_name: str | None = None
    direct = False
    redraws = False
    trains_feedback = False

    def feedback_shape(
        self, weight_shape: Sequence[int], input_shape: Sequence[int], num_classes: int | None
    ) -> tuple[int, ...] | None:
        """The buffer's shape: the weight's, or (classes, *one sample's input) if direct
        (``num_classes`` is read only then)."""
        if self.buffer_name is None:
            return None
        if self.direct:
            return (num_classes, *input_shape)
        return tuple(weight_shape)

    def init_feedback(
        self,
        shape: Sequence[int],
        weight_shape: Sequence[int],
        generator: torch.Generator,
        scale: float,
    ) -> torch.Tensor:
        """He-normal with the *layer's* fan-in × ``scale``, as FA's ``B`` always was."""
        buffer = torch.empty(tuple(shape))
        return buffer.normal_(0.0, he_std(weight_shape, scale), generator=generator)

    def backward_matrix(
        self, weight: torch.Tensor, feedback: torch.Tensor | None, draw: torch.Tensor | None
    ) -> torch.Tensor:
        """What the input gradient goes through, elementwise from the weight (any shape),
        the rule's buffer and this batch's draw (``None`` unless :attr:`redraws`)."""
        raise NotImplementedError


class Backprop(FeedbackRule):
    name = "bp"

    def backward_matrix(self, weight, feedback, draw):
        return weight


class FeedbackAlignment(FeedbackRule):
    name = "fa"
    buffer_name = "fixed_feedback"

    def backward_matrix(self, weight, feedback, draw):
        return feedback


class DirectFeedbackAlignment(FeedbackAlignment):
    name = "dfa"
    direct = True


class UniformSignFeedback(FeedbackRule):
    name = "usf"

    def backward_matrix(self, weight, feedback, draw):
        return torch.sign(weight)


class BatchRandomSignFeedback(FeedbackRule):
    name = "brsf"
    redraws = True

    def backward_matrix(self, weight, feedback, draw):
        return draw.abs() * torch.sign(weight)


class FixedRandomSignFeedback(FeedbackRule):
    name = "frsf"
    buffer_name = "fixed_feedback"

    def backward_matrix(self, weight, feedback, draw):
        return feedback.abs() * torch.sign(weight)


class KolenPollack(FeedbackRule):
    name = "kp"
    buffer_name = "trained_feedback"
    trains_feedback = True

    def backward_matrix(self, weight, feedback, draw):
        return feedback


FEEDBACK_RULES: dict[str, FeedbackRule] = {
    rule.name: rule
    for rule in (
        Backprop(),
        FeedbackAlignment(),
        DirectFeedbackAlignment(),
        UniformSignFeedback(),
        BatchRandomSignFeedback(),
        FixedRandomSignFeedback(),
        KolenPollack(),
    )
}
