"""R conv networks of one shape as one stack: stacked tensors, each run stepped in turn.

The stacked trainer's interface (:class:`~.stacked_model.StackedMLP`'s): every parameter of
R runs (and, with a KP run, every rule layer's feedback) in the layout of
:class:`~.stacked_params.StackedParameters`, ``step_gradients`` writing one step's gradients
into :attr:`grads`, and ``write_back``. Each run's step is its own single-run model's forward
and rule backward (:mod:`.conv_layers`, :mod:`.rules`), called on that run's slice of the
stack with :func:`torch.func.functional_call`, so every rule behaves here exactly as it does
alone.

Why a per-run loop and not one grouped convolution (``groups=R``): measured on the CPU, 1
thread, batch 64, R = 4, a LeNet layer's forward plus both backward convolutions took
13.8 ms as four convolutions vs 14.7 ms grouped (1→6 channels, 28×28) and 7.9 ms vs 15.7 ms
(6→16, 14×14): at these sizes a conv step is compute-bound and grouped kernels are slower
(``benchmarks/bench_conv.py`` measures the whole pack against sequential runs).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.func import functional_call

from .feedback_rules import FEEDBACK_RULES, FeedbackRule, he_std
from .model import MLP
from .stacked_params import StackedParameters


class RunRules:
    """Each run's rule, and the draw generators a step uses (which the trainer registers with
    a CUDA graph, as for :class:`~.stacked_rules.StackedFeedback`)."""

    def __init__(self, rules: Sequence[FeedbackRule], generators: Sequence[torch.Generator]):
        self.rules, self.generators = list(rules), list(generators)

    def __getitem__(self, r: int) -> FeedbackRule:
        return self.rules[r]

    @property
    def used_generators(self) -> list[torch.Generator]:
        return [g for rule, g in zip(self.rules, self.generators, strict=True) if rule.redraws]


class StackedConvNet(StackedParameters):
    """The weights of R conv networks (``params.views[k][r]``) and one step's gradients.

    Built from each run's :class:`~.model.MLP` (the runs' source of truth between phases and
    for metrics); each run steps a private copy of it whose parameters are the run's views of
    the stack, and :meth:`write_back` copies the stacked values (and batch-norm statistics)
    back. The layout of :attr:`params` is :class:`~.stacked_params.StackedParameters`'. A
    brSF run's draws come from ``draw_generators[r]`` each step, straight into buffers that
    its copy's layers read (:attr:`~.rule_layer.RuleLayer.given_draw`): no host sync, and
    they resume with the generator's checkpointed state.
    """

    def __init__(self, models: Sequence[MLP], draw_generators: Sequence[torch.Generator]):
        rules = [FEEDBACK_RULES[m.config.rule] for m in models]
        super().__init__(models, rules)
        self.replicas = [copy.deepcopy(m) for m in models]
        self.param_names = [name for name, _ in models[0].named_parameters()]
        self.layer_names = [
            name for name, module in models[0].named_modules() if module in models[0].rule_layers
        ]
        self.rules = RunRules(rules, draw_generators)
        # Per redrawing run: each layer's draw buffer and its std (He × the run's scale).
        self.draws: dict[int, list[tuple[torch.Tensor, float]]] = {}
        for r in range(self.runs):
            if not rules[r].redraws:
                continue
            layers = self.replicas[r].rule_layers
            for layer in layers:
                layer.given_draw = torch.zeros_like(layer.weight)
            self.draws[r] = [
                (layer.given_draw, he_std(layer.weight.shape, layer.feedback_scale))
                for layer in layers
            ]

    def _run_tensors(self, r: int) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
        """Run ``r``'s parameters (and trained feedback) as leaves sharing the stack's
        storage, by module name; the list is what its gradients are taken with respect to."""
        views = self.params.views
        leaves = {
            name: view[r].detach().requires_grad_()
            for name, view in zip(self.param_names, views, strict=False)
        }
        wrt = list(leaves.values())
        rule = self.rules[r]
        if rule.trains_feedback:
            for i, name in enumerate(self.layer_names):
                feedback = views[self.num_params + i][r].detach().requires_grad_()
                leaves[f"{name}.{rule.buffer_name}"] = feedback
                wrt.append(feedback)
        return leaves, wrt

    def _draw(self, r: int) -> None:
        """A brSF run's R for this step, from its own generator (checkpointed)."""
        generator = self.rules.generators[r]
        for buffer, std in self.draws.get(r, ()):
            buffer.normal_(0.0, std, generator=generator)

    def step_gradients(
        self, x: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write one step's gradients into :attr:`grads`; return logits and per-run loss sums.

        ``x`` (R, B, *input); ``target`` (R, B) class indices or (R, B, C) probabilities;
        each run's gradient is that of ``F.cross_entropy`` (mean over its batch), and its
        loss is returned summed over the batch, as :class:`~.stacked_model.StackedMLP` does.
        """
        logits, losses = [], []
        for r, model in enumerate(self.replicas):
            leaves, wrt = self._run_tensors(r)
            self._draw(r)
            with torch.enable_grad():
                out = functional_call(model, leaves, (x[r],))  # (B, C)
                loss = F.cross_entropy(out, target[r])
                grads = torch.autograd.grad(loss, wrt)
            with torch.no_grad():
                for k, grad in enumerate(grads):
                    self.grads.views[k][r].copy_(grad)
            logits.append(out.detach())
            losses.append(loss.detach())
        return torch.stack(logits), torch.stack(losses).mul_(x.shape[1])  # (R, B, C), (R,)

    @torch.no_grad()
    def write_back(self, models: Sequence[MLP]) -> None:
        """Copy run ``r``'s slice of every stacked tensor (and its statistics) into
        ``models[r]``."""
        self.write_back_parameters(models)
        for model, replica in zip(models, self.replicas, strict=True):
            for own, trained in zip(model.norms, replica.norms, strict=True):
                for name, buffer in own.named_buffers():
                    buffer.copy_(trained.get_buffer(name))
