"""Adam and SGD over a stack of runs, each run with its own learning rate.

Both act elementwise, so a stacked parameter's state is exactly each run's own state. The
update is torch's own fused kernel (``_fused_adam_`` / ``_fused_sgd_``, what
``torch.optim.Adam(fused=True)`` and ``SGD(fused=True)`` call): one pass over every tensor
instead of a dozen elementwise kernels, with no host sync (the step count lives on the
device). The kernels take one learning rate, so each call gets the runs that share one, as
a list of their per-run slices; a run's slices are the same tensors whatever stack it is
in, so its update does not depend on its stack-mates. Same hyperparameters as the torch
optimizers (L2 weight decay, no dampening, no Nesterov, no amsgrad). Per-run state converts
to and from torch's ``optimizer.state_dict()["state"]`` layout, so checkpoints stay what
:mod:`.checkpoint` has always written.

A Kolen-Pollack run's feedback ``B`` is one more parameter here: it is handed ``W``'s
gradient, so "the same update" means the same gradient through the same optimizer and
hyperparameters (lr, betas, momentum, L2 weight decay ``λ·B`` on itself), with moments of
its own. Under SGD without momentum ``W - B`` then shrinks by ``(1 - lr·λ)`` every step; under
Adam (or momentum) with ``λ = 0`` both take identical steps, and with ``λ > 0`` the decay
terms differ only by ``λ·(W - B)`` inside the moments.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .contract.spec import OptimizerSpec
from .flat_stack import FlatStack

ADAM_EPS = 1e-8  # torch.optim.Adam's default, which every job has trained with


class StackedOptimizer:
    """One phase's optimizer for every run of a stack (runs differ only in ``lr``).

    ``frozen`` lists (view, run) pairs that never move (a fixed feedback matrix sharing the
    layout of a trained one): they are left out of the update. ``run_views[r]`` is how many
    leading views run ``r`` owns in its checkpoints (default: all).
    """

    def __init__(
        self,
        spec: OptimizerSpec,
        params: FlatStack,
        grads: FlatStack,
        lrs: Sequence[float],
        *,
        frozen: Sequence[tuple[int, int]] = (),
        run_views: Sequence[int] | None = None,
    ):
        self.spec = spec
        self.params, self.grads = params, grads
        self.lrs = list(lrs)
        self.frozen = set(frozen)
        self.run_views = list(run_views or [len(params.views)] * params.runs)
        device = params.flat.device
        # Steps taken (float32, as torch keeps Adam's ``step``); equal for every run of a stack.
        self.step_count = torch.zeros((), dtype=torch.float32, device=device)
        self.moments: dict[str, FlatStack] = {}
        if spec.name == "adam":
            self.moments = {"exp_avg": params.like(), "exp_avg_sq": params.like()}
        elif spec.momentum:
            self.moments = {"momentum_buffer": params.like()}
        self._group()

    def _group(self) -> None:
        """Per distinct learning rate: its runs' slices of the parameters, gradients and
        moments, in one order (view by view, run by run), for one fused call each."""
        self.groups: dict[float, dict[str, list[torch.Tensor]]] = {}
        stacks = {"params": self.params, "grads": self.grads, **self.moments}
        for k in range(len(self.params.views)):
            for r, lr in enumerate(self.lrs):
                if (k, r) in self.frozen:
                    continue
                group = self.groups.setdefault(lr, {name: [] for name in stacks})
                for name, stack in stacks.items():
                    group[name].append(stack.views[k][r])
        for group in self.groups.values():  # the kernels read one step count per tensor
            group["steps"] = [self.step_count] * len(group["params"])

    def step(self) -> None:
        """Apply one update from :attr:`grads` to :attr:`params` (none of them requires
        grad: no autograd mode to set per step)."""
        spec = self.spec
        self.step_count.add_(1)
        for lr, group in self.groups.items():
            if spec.name == "adam":
                beta1, beta2 = spec.betas
                torch._fused_adam_(
                    group["params"],
                    group["grads"],
                    group["exp_avg"],
                    group["exp_avg_sq"],
                    [],
                    group["steps"],
                    lr=lr,
                    beta1=beta1,
                    beta2=beta2,
                    weight_decay=spec.weight_decay,
                    eps=ADAM_EPS,
                    amsgrad=False,
                    maximize=False,
                )
            else:
                torch._fused_sgd_(
                    group["params"],
                    group["grads"],
                    group.get("momentum_buffer", []),
                    weight_decay=spec.weight_decay,
                    momentum=spec.momentum,
                    lr=lr,
                    dampening=0.0,
                    nesterov=False,
                    maximize=False,
                    # A zero buffer times momentum, plus the gradient, is the gradient:
                    # torch's first-step copy, so no step needs to be told apart.
                    is_first_step=False,
                )

    def run_state(self, r: int) -> dict[int, dict[str, Any]]:
        """Run ``r``'s state in ``torch.optim`` layout: parameter index → {name: tensor}."""
        if not self.moments:
            return {}
        state: dict[int, dict[str, Any]] = {}
        for k in range(self.run_views[r]):
            entry: dict[str, Any] = {
                name: stack.views[k][r] for name, stack in self.moments.items()
            }
            if self.spec.name == "adam":
                entry["step"] = self.step_count.detach().clone()
            state[k] = entry
        return state

    @torch.no_grad()
    def load_run_state(
        self, r: int, tensors: dict[str, torch.Tensor], scalars: dict[str, Any]
    ) -> None:
        """Restore run ``r`` from a checkpoint's ``optim.<index>.<name>`` tensors/scalars."""
        for key, tensor in tensors.items():
            index, name = key.split(".", 1)
            if name == "step":
                self.step_count.fill_(float(tensor))
            elif name in self.moments:
                self.moments[name].views[int(index)][r].copy_(tensor)
        for key, value in scalars.items():
            if key.split(".", 1)[1] == "step":
                self.step_count.fill_(float(value))

    def take(self, keep: Sequence[int], params: FlatStack, grads: FlatStack) -> StackedOptimizer:
        """The optimizer of the runs ``keep`` over their new stacks ``params``/``grads``.

        The new layout may be shorter: a stack whose last KP run left has no feedback views
        (:mod:`.stacked_params`); every remaining view keeps its index, so the state of the
        first ``len(params.views)`` views carries over.
        """
        views = len(params.views)
        assert params.shapes == self.params.shapes[:views], "a stack's new layout is a prefix"
        taken = StackedOptimizer.__new__(StackedOptimizer)
        taken.spec, taken.params, taken.grads = self.spec, params, grads
        taken.lrs = [self.lrs[r] for r in keep]
        position = {old: new for new, old in enumerate(keep)}
        taken.frozen = {(k, position[r]) for k, r in self.frozen if r in position and k < views}
        taken.run_views = [self.run_views[r] for r in keep]
        assert max(taken.run_views) <= views, "a remaining run owns views the new layout lacks"
        taken.step_count = self.step_count.clone()
        taken.moments = {name: stack.take(keep, views) for name, stack in self.moments.items()}
        taken._group()
        return taken


class RunOptimizerState:
    """One run's optimizer state, shaped as :func:`~.checkpoint.save_checkpoint` reads it."""

    def __init__(self, state: dict[int, dict[str, Any]]):
        self._state = state

    def state_dict(self) -> dict[str, Any]:
        return {"state": self._state}
