"""The backward matrices of a stack of runs, each run learning by its own rule.

:class:`~.stacked_model.StackedMLP` asks :class:`StackedFeedback` for layer ``i``'s (R, ...)
matrix once per step. Each run's rule (:mod:`.feedback_rules`) derives it from the run's
stacked weight, its stacked buffer and, for a rule that redraws (brSF), a fresh draw from
the run's own device generator: one generator per run, seeded per phase, checkpointed with
the run and registered with the CUDA graph, so a run's draws do not depend on the stack it
is in. Which run follows which rule is known on the host, so no step branches on the device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .feedback_rules import FeedbackRule, he_std


class StackedFeedback:
    """Layer matrices for R runs: ``rules[r]`` is run ``r``'s rule.

    ``weights[i]`` (R, out, in) and ``buffers[i]`` (R, *buffer shape, or ``None`` when no
    run's rule owns a buffer) are the stack's tensors, read afresh each step: the weights
    are views the optimizer updates in place, and so are the buffers when a run trains its
    feedback (KP); otherwise the buffers are a fixed stacked copy of the runs' own.
    ``draw_generators[r]`` and ``scales[r]`` give run ``r``'s brSF draws.
    """

    def __init__(
        self,
        rules: Sequence[FeedbackRule],
        weights: Sequence[torch.Tensor],
        buffers: Sequence[torch.Tensor | None],
        draw_generators: Sequence[torch.Generator],
        scales: Sequence[float],
    ):
        self.weights, self.buffers = list(weights), list(buffers)
        self.generators = list(draw_generators)
        device = self.weights[0].device
        kinds = list(dict.fromkeys(rules))
        ones = [1] * (self.weights[0].dim() - 1)  # a mask broadcasts over (R, *weight shape)
        self.rule_masks = [
            (rule, torch.tensor([r is rule for r in rules], device=device).view(-1, *ones))
            for rule in kinds
        ]
        self.redrawing = [r for r, rule in enumerate(rules) if rule.redraws]
        # Per layer: where each redrawing run's draw lands, and its std (He × the run's scale).
        self.draws = [
            torch.zeros_like(w) if self.redrawing and i > 0 else None
            for i, w in enumerate(self.weights)
        ]
        self.draw_stds = [
            [he_std(w.shape[1:], scales[r]) for w in self.weights] for r in range(len(rules))
        ]

    @property
    def used_generators(self) -> list[torch.Generator]:
        """The generators a step draws from (to register with a CUDA graph)."""
        return [self.generators[r] for r in self.redrawing]

    def matrix(self, i: int) -> torch.Tensor:
        """(R, ...): the matrix layer ``i`` sends each run's error back through (``i`` > 0:
        layer 0's would multiply the gradient w.r.t. the network's input, which nothing uses).
        """
        draw = self.draws[i]
        for r in self.redrawing:
            draw[r].normal_(0.0, self.draw_stds[r][i], generator=self.generators[r])
        (rule, _), *others = self.rule_masks
        matrix = rule.backward_matrix(self.weights[i], self.buffers[i], draw)
        for rule, mask in others:
            matrix = torch.where(
                mask, rule.backward_matrix(self.weights[i], self.buffers[i], draw), matrix
            )
        return matrix
