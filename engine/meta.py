"""Meta-loss: how well the current weights adapt to a set of tasks in a few steps.

For each task, a copy of the model (same rule, same feedback matrices) takes ``steps``
optimizer steps on batches of the task's train split, then its loss on the task's held-out
test samples is measured. The batches are the same at every measurement (their generator is
re-seeded from the run's seed each time), so the curve over epochs reflects the weights
alone, and no random stream of the run itself is touched: resumed runs stay exact.
"""

from __future__ import annotations

import copy
import statistics

import torch
import torch.nn.functional as F

from .contract import metric_names as mn
from .contract.errors import InvalidSpecError
from .contract.spec import MetaLossSpec, OptimizerSpec
from .datasets import Dataset
from .images import fit_inputs
from .metrics import evaluate
from .model import MLP
from .rules import trained_feedback
from .trainer import derive_seed, make_optimizer


class MetaLoss:
    """Measures ``meta_loss`` and ``meta_loss/<task>`` for one phase of one run."""

    def __init__(
        self,
        spec: MetaLossSpec,
        tasks: dict[str, Dataset],
        *,
        input_shape: tuple[int, ...],
        num_classes: int,
        seed: int,
    ):
        for name, task in tasks.items():
            if task.num_classes != num_classes:
                raise InvalidSpecError(
                    f"meta_loss.tasks: {name!r} has {task.num_classes} classes, "
                    f"the model {num_classes}"
                )
        self.spec = spec
        self.seed = seed
        # Inputs fitted to the model once; the held-out part is the test split's head.
        self.tasks = {
            name: (
                fit_inputs(task.x_train, input_shape),
                task.y_train,
                fit_inputs(task.x_test[: spec.eval_size], input_shape),
                task.y_test[: spec.eval_size],
            )
            for name, task in tasks.items()
        }

    def due(self, epoch: int, last_epoch: int) -> bool:
        """Measured at epoch 0, every ``every`` epochs, and at the phase's last epoch."""
        return epoch % self.spec.every == 0 or epoch == last_epoch

    def measure(self, model: MLP, eval_batch_size: int) -> dict[str, float]:
        """``{meta_loss: mean, meta_loss/<task>: loss}`` after adapting a copy per task."""
        losses = {
            mn.meta_task_metric(name): self._adapted_loss(model, name, eval_batch_size)
            for name in self.tasks
        }
        return {mn.META_LOSS: statistics.fmean(losses.values()), **losses}

    def _adapted_loss(self, model: MLP, name: str, eval_batch_size: int) -> float:
        x_train, y_train, x_eval, y_eval = self.tasks[name]
        learner = copy.deepcopy(model)
        learner.train()
        optimizer = make_optimizer(  # KP's B learns with W on the copy too
            OptimizerSpec(name=self.spec.optimizer, lr=self.spec.lr),
            [*learner.parameters(), *trained_feedback(learner)],
        )
        generator = torch.Generator().manual_seed(derive_seed(self.seed, f"meta/{name}"))
        size = min(self.spec.batch_size, len(x_train))
        with torch.enable_grad():
            for _ in range(self.spec.steps):
                index = torch.randperm(len(x_train), generator=generator)[:size]
                index = index.to(x_train.device)
                loss = F.cross_entropy(learner(x_train[index]), y_train[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        return evaluate(learner, x_eval, y_eval, eval_batch_size)[0]
