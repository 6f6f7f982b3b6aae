"""The stacked optimizer is torch's Adam / SGD run by run, whatever each run's learning rate."""

from __future__ import annotations

import pytest
import torch

from noisefa.engine.contract.spec import OptimizerSpec
from noisefa.engine.flat_stack import FlatStack
from noisefa.engine.stacked_optim import StackedOptimizer

SHAPES = [(5, 7), (5,), (3, 5)]
LRS = [1e-2, 3e-3, 1e-2]  # two runs share a rate, one does not


def torch_optimizer(spec: OptimizerSpec, params: list[torch.Tensor], lr: float):
    if spec.name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=spec.betas, weight_decay=spec.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=spec.momentum, weight_decay=spec.weight_decay)


@pytest.mark.parametrize(
    "spec",
    [
        OptimizerSpec(name="adam", lr=1e-2, weight_decay=1e-3),
        OptimizerSpec(name="sgd", lr=1e-2, momentum=0.9, weight_decay=1e-3),
        OptimizerSpec(name="sgd", lr=1e-2),
    ],
    ids=["adam", "sgd-momentum", "sgd"],
)
def test_each_run_steps_as_torch_does_with_its_own_rate(spec):
    gen = torch.Generator().manual_seed(0)
    start = [[torch.randn(s, generator=gen) for s in SHAPES] for _ in LRS]
    params = FlatStack.from_runs(start)
    grads = params.like()
    stacked = StackedOptimizer(spec, params, grads, LRS, frozen=[(2, 1)])
    alone = [[t.clone().requires_grad_() for t in run] for run in start]
    optimizers = [torch_optimizer(spec, run, lr) for run, lr in zip(alone, LRS, strict=True)]
    for _ in range(5):
        for r, (run, optimizer) in enumerate(zip(alone, optimizers, strict=True)):
            for k, tensor in enumerate(run):
                grad = torch.randn(tensor.shape, generator=gen)
                grads.views[k][r].copy_(grad)
                tensor.grad = grad.clone()
            optimizer.step()
        stacked.step()
    for r, run in enumerate(alone):
        for k, tensor in enumerate(run):
            if (k, r) == (2, 1):  # frozen: never moves
                assert torch.equal(params.views[k][r], start[r][k])
            else:
                torch.testing.assert_close(params.views[k][r], tensor.detach())
    assert stacked.step_count.item() == 5
