"""Adam and SGD over a stack of runs, each run with its own learning rate.

Both act elementwise, so a stacked parameter's state is exactly each run's own state; with
every parameter in one :class:`~.flat_stack.FlatStack` the update is a dozen kernels on one
flat tensor, with no host sync (the step count lives on the device). torch's fused
optimizers take one learning rate, hence this small implementation of the same update as
``torch.optim.Adam`` / ``SGD`` (L2 weight decay, no dampening, no Nesterov, no amsgrad).
Per-run state converts to and from torch's ``optimizer.state_dict()["state"]`` layout, so
checkpoints stay what :mod:`.checkpoint` has always written.

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

    ``frozen`` lists (view, run) pairs that never move (learning rate 0: a fixed feedback
    matrix sharing the layout of a trained one); ``run_views[r]`` is how many leading views
    run ``r`` owns in its checkpoints (default: all).
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
        self.lr = params.like().fill_per_run(lrs)
        for view, run in frozen:
            self.lr.views[view][run].zero_()
        self.run_views = list(run_views or [len(params.views)] * params.runs)
        device = params.flat.device
        # Steps taken (float32, as torch keeps Adam's ``step``); equal for every run of a stack.
        self.step_count = torch.zeros((), dtype=torch.float32, device=device)
        self.moments: dict[str, FlatStack] = {}
        if spec.name == "adam":
            self.moments = {"exp_avg": params.like(), "exp_avg_sq": params.like()}
        elif spec.momentum:
            self.moments = {"momentum_buffer": params.like()}

    @torch.no_grad()
    def step(self) -> None:
        """Apply one update from :attr:`grads` to :attr:`params`."""
        spec, p, g = self.spec, self.params.flat, self.grads.flat
        if spec.weight_decay:
            g = g.add(p, alpha=spec.weight_decay)
        self.step_count.add_(1)
        if spec.name == "adam":
            beta1, beta2 = spec.betas
            m, v = self.moments["exp_avg"].flat, self.moments["exp_avg_sq"].flat
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            step = self.step_count.double()
            step_size = (1 - torch.pow(beta1, step)).reciprocal().float()  # 1 / bias_c1
            bias2_sqrt = (1 - torch.pow(beta2, step)).sqrt().float()
            denom = v.sqrt().div_(bias2_sqrt).add_(ADAM_EPS)
            p.sub_(m.div(denom).mul_(self.lr.flat).mul_(step_size))
            return
        if spec.momentum:
            buf = self.moments["momentum_buffer"].flat
            buf.mul_(spec.momentum).add_(g)
            g = buf
        p.sub_(g * self.lr.flat)

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
        taken.lr = self.lr.take(keep, views)
        taken.run_views = [self.run_views[r] for r in keep]
        assert max(taken.run_views) <= views, "a remaining run owns views the new layout lacks"
        taken.step_count = self.step_count.clone()
        taken.moments = {name: stack.take(keep, views) for name, stack in self.moments.items()}
        return taken


class RunOptimizerState:
    """One run's optimizer state, shaped as :func:`~.checkpoint.save_checkpoint` reads it."""

    def __init__(self, state: dict[int, dict[str, Any]]):
        self._state = state

    def state_dict(self) -> dict[str, Any]:
        return {"state": self._state}
