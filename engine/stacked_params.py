"""The parameter layout every stacked model shares: R runs' parameters, then trained feedback.

:class:`~.stacked_model.StackedMLP` and :class:`~.stacked_conv.StackedConvNet` keep every
parameter of R runs as views into one :class:`~.flat_stack.FlatStack`, in the order of
``MLP.parameters()``, so the optimizer's per-parameter index (a checkpoint's
``optim.<index>.*``) means the same as on a single model. When a run's rule trains its
feedback (KP), every rule layer's feedback joins the stack after the parameters (checkpoint
index ``len(parameters) + layer``) for every run: a run without a buffer of the weight's
shape gets zeros there, and the optimizer leaves the views of runs whose rule keeps their
feedback fixed alone (learning rate 0). Without a KP run there are no feedback views, so a
stack that loses its KP runs has another layout (the optimizer follows it:
:meth:`~.stacked_optim.StackedOptimizer.take`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .feedback_rules import FeedbackRule
from .flat_stack import FlatStack
from .model import MLP


class StackedParameters:
    """R runs' parameters (and trained feedback) in one FlatStack, and their gradients.

    ``buffers[r][i]`` is run ``r``'s layer-``i`` feedback buffer as the stack was built from
    it (zeros of the weight's shape where the rule owns none).
    """

    def __init__(self, models: Sequence[MLP], rules: Sequence[FeedbackRule]):
        self.runs = len(models)
        self.depth = depth = len(models[0].rule_layers)
        self.trains_feedback = any(rule.trains_feedback for rule in rules)
        self.buffers = [
            [
                (
                    layer.feedback_buffer
                    if layer.feedback_buffer is not None
                    else torch.zeros_like(layer.weight)
                ).detach()
                for layer in m.rule_layers
            ]
            for m in models
        ]
        self.num_params = n = len(list(models[0].parameters()))
        extra = self.buffers if self.trains_feedback else [[] for _ in models]
        self.params = FlatStack.from_runs(
            [
                [p.detach() for p in m.parameters()] + own
                for m, own in zip(models, extra, strict=True)
            ]
        )
        self.grads = self.params.like()
        self.run_views, self.frozen_views = optimizer_views(rules, n, depth)

    @property
    def feedback_views(self) -> list[torch.Tensor]:
        """Layer ``i``'s stacked trained feedback (R, *weight shape); empty without KP."""
        return self.params.views[self.num_params :]

    @torch.no_grad()
    def write_back_parameters(self, models: Sequence[MLP]) -> None:
        """Copy run ``r``'s parameters, and its feedback buffers when they were stacked, into
        ``models[r]`` (a fixed buffer's view was frozen, so it copies back unchanged)."""
        n = self.num_params
        for r, model in enumerate(models):
            for param, view in zip(model.parameters(), self.params.views[:n], strict=True):
                param.copy_(view[r])
            if self.trains_feedback:
                for layer, stacked in zip(model.rule_layers, self.feedback_views, strict=True):
                    if layer.feedback_buffer is not None:  # else zeros stood in for it
                        layer.feedback_buffer.copy_(stacked[r])


def optimizer_views(
    rules: Sequence[FeedbackRule], num_params: int, depth: int
) -> tuple[list[int], list[tuple[int, int]]]:
    """How a stack's optimizer treats the runs' views: per run, how many leading views it owns
    in its checkpoints (its ``num_params`` parameters, plus its ``depth`` layers' feedback
    when its rule trains it), and the (view, run) pairs to leave alone: the feedback a run's
    rule keeps fixed, in a stack where another run's rule trains its own (then every run's
    feedback sits after the parameters, layer by layer)."""
    trains = any(rule.trains_feedback for rule in rules)
    run_views = [num_params + depth if rule.trains_feedback else num_params for rule in rules]
    frozen_views = [
        (num_params + i, r)
        for r, rule in enumerate(rules)
        if trains and not rule.trains_feedback
        for i in range(depth)
    ]
    return run_views, frozen_views
