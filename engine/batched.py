"""Many runs of one shape trained as one batched computation on one device.

An experiment's children often differ only in seed, rule (FA or BP) and whether they
pretrain on noise. Their weights stack into (R, out, in) tensors; one ``bmm`` forward and
one FA/BP backward (explicit, see :class:`StackedMLP`) per step serve all R runs, and one
optimizer updates every run at once (Adam and SGD act elementwise, so stacked state is
exactly per-run state). What stays per
run is what makes each run *itself*: its data order (its own permutation generator, seeded
as the single-run trainer seeds it), its noise (its own generator), its metrics (measured on
its own unstacked :class:`~.model.MLP` by the single-run trainer's code) and its outputs
(``metrics.jsonl``, ``result.json``, a checkpoint at the end of each phase). Results equal
:func:`~.run.run_job`'s to float tolerance (bmm and mm may round differently).

Runs without noise pretraining sit out the ``pretrain`` phase; all runs train together.
Batched runs start fresh (no resume, no callbacks): a worker that must stop or resume a run
runs it alone with :func:`~.run.run_job`, which continues from the phase-end checkpoints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn as nn

from .checkpoint import CHECKPOINT_DIR, checkpoint_name, list_checkpoints, save_checkpoint
from .contract.errors import CheckpointError, InvalidSpecError
from .contract.spec import JobSpec
from .datasets import dataset_info
from .model import MLP, build_model
from .run import _data_and_shape, build_trainer, resolve_device, write_result
from .trainer import Phase, Trainer, derive_seed, make_optimizer

BATCHABLE_RULES = ("bp", "fa")


# d(activation)/d(input) from the activation's output, which the forward pass keeps anyway.
ACTIVATION_GRADS = {
    "relu": lambda grad, out: grad * (out > 0),
    "tanh": lambda grad, out: grad * (1 - out * out),
}


class StackedMLP(nn.Module):
    """R MLPs of one shape as stacked tensors (R, out, in), trained by explicit gradients.

    :meth:`step_gradients` runs the forward pass and the learning rule's backward pass by
    hand: the same formulas as :class:`~.rules.FeedbackLinearFunction` (``grad_x = g @ F``,
    ``grad_W = g^T @ x``, ``grad_b = sum(g)``) per run with ``bmm``, where ``F`` is the
    run's fixed ``B`` under FA and its weight under BP. Skipping the autograd engine matters
    here: at these sizes a step's cost is mostly per-op dispatch, not arithmetic.
    """

    def __init__(self, models: Sequence[MLP]):
        super().__init__()
        layers = [m.rule_layers for m in models]
        depth = len(layers[0])
        self.weights = nn.ParameterList(
            nn.Parameter(torch.stack([run[i].weight.detach() for run in layers]).clone())
            for i in range(depth)
        )
        self.biases = nn.ParameterList(
            nn.Parameter(torch.stack([run[i].bias.detach() for run in layers]).clone())
            for i in range(depth)
        )
        # FA runs' fixed B; a BP run's slot holds zeros and is never read.
        for i in range(depth):
            feedback = [
                run[i].feedback.detach() if run[i].rule == "fa" else torch.zeros_like(run[i].weight)
                for run in layers
            ]
            self.register_buffer(f"feedback{i}", torch.stack(feedback))
        rules = {m.config.rule for m in models}
        # Known on the host, so choosing the backward matrix never syncs with the device.
        self.rules = rules.pop() if len(rules) == 1 else "mixed"
        is_bp = torch.tensor([m.config.rule == "bp" for m in models]).view(-1, 1, 1)
        self.register_buffer("bp_mask", is_bp.to(self.weights[0].device))
        self.act = models[0].act
        self.act_grad = ACTIVATION_GRADS[models[0].config.activation]

    def backward_matrix(self, i: int) -> torch.Tensor:
        """(R, out, in): what layer ``i`` sends the error back through, per run's rule."""
        if self.rules == "bp":
            return self.weights[i]
        feedback = getattr(self, f"feedback{i}")
        if self.rules == "fa":
            return feedback
        return torch.where(self.bp_mask, self.weights[i], feedback)

    @torch.no_grad()
    def step_gradients(
        self, x: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Set every parameter's ``.grad`` for one step; return logits and per-run losses.

        ``x`` (R, B, *input); ``target`` (R, B) class indices or (R, B, C) probabilities.
        Each run's loss is the mean cross-entropy over its batch, as in the single-run loop.
        """
        batch = x.shape[1]
        h = x.flatten(2)  # (R, B, features)
        inputs = []
        last = len(self.weights) - 1
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            inputs.append(h)
            h = torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))  # (R, B, out)
            if i < last:
                h = self.act(h)
        logits = h  # (R, B, C)
        log_probs = logits.log_softmax(2)
        grad = log_probs.exp()  # softmax; minus the target, over B, is d(mean loss)/d(logits)
        if target.dim() == 2:
            index = target.unsqueeze(2)  # (R, B, 1)
            losses = -log_probs.gather(2, index).squeeze(2).mean(1)  # (R,)
            grad.scatter_add_(2, index, torch.full_like(index, -1, dtype=grad.dtype))
        else:
            losses = -(target * log_probs).sum(2).mean(1)
            grad.sub_(target)
        grad.div_(batch)
        for i in range(last, -1, -1):
            self.weights[i].grad = torch.bmm(grad.transpose(1, 2), inputs[i])  # (R, out, in)
            self.biases[i].grad = grad.sum(1)  # (R, out)
            if i > 0:
                grad = self.act_grad(torch.bmm(grad, self.backward_matrix(i)), inputs[i])
        return logits, losses

    @torch.no_grad()
    def write_back(self, models: Sequence[MLP]) -> None:
        """Copy each run's slice of the stacked weights into its own model."""
        for r, model in enumerate(models):
            for layer, weight, bias in zip(
                model.rule_layers, self.weights, self.biases, strict=True
            ):
                layer.weight.copy_(weight[r])
                layer.bias.copy_(bias[r])


def can_batch(specs: Sequence[JobSpec]) -> bool:
    """True when ``specs`` can train as one batch: one network shape and one schedule.

    Runs may differ in seed, feedback seed/scale, rule (``bp``/``fa``), whether they
    pretrain on noise, and meta-loss settings. They must share hidden sizes, activation,
    the ``train`` block (dataset, epochs, batch size, optimizer), the ``pretrain`` block of
    those that have one, metrics settings and device; no batch norm, no ``init_from``.
    """
    if not specs:
        return False
    first = specs[0]

    def without_meta(block) -> dict | None:
        return None if block is None else block.model_dump(exclude={"meta_loss"})

    pretrains = {str(without_meta(s.pretrain)) for s in specs if s.pretrain is not None}
    return len(pretrains) <= 1 and all(
        s.init_from is None
        and not s.model.batch_norm
        and s.model.rule in BATCHABLE_RULES
        and s.model.hidden == first.model.hidden
        and s.model.activation == first.model.activation
        and without_meta(s.train) == without_meta(first.train)
        and s.metrics == first.metrics
        and s.device == first.device
        for s in specs
    )


def run_batched(
    specs: Sequence[JobSpec],
    out_dirs: Sequence[Path],
    *,
    device: str | None = None,
    data_dir: Path | None = None,
    dataset_files: Mapping[str, Path] | None = None,
) -> list[dict]:
    """Train ``specs`` as one batch, run ``i`` into ``out_dirs[i]``; their ``result.json``s.

    Each folder gets what :func:`~.run.run_job` writes: ``metrics.jsonl``, ``result.json``
    and ``checkpoints/<phase>-<epochs>.safetensors`` at the end of each phase (loadable by
    :func:`~.checkpoint.model_from_checkpoint`; the train checkpoint holds no optimizer
    state). Folders must hold no checkpoints yet.
    """
    if len(specs) != len(out_dirs):
        raise ValueError(f"{len(specs)} specs but {len(out_dirs)} output folders")
    if not can_batch(specs):
        raise InvalidSpecError("these specs cannot train as one batch (see can_batch)")
    device = resolve_device(device or specs[0].device)
    dataset, input_shape, num_classes = _data_and_shape(specs[0], data_dir, device, dataset_files)
    trainers = []
    for spec, out_dir in zip(specs, out_dirs, strict=True):
        out_dir = Path(out_dir)
        if list_checkpoints(out_dir):
            raise CheckpointError(f"{out_dir} holds checkpoints; batched runs start fresh")
        out_dir.mkdir(parents=True, exist_ok=True)
        if spec.shape_dataset != specs[0].shape_dataset:
            shape = dataset_info(spec.shape_dataset, data_dir, dataset_files)
            if (tuple(shape[0]), shape[1]) != (tuple(input_shape), num_classes):
                raise InvalidSpecError(
                    f"batched runs need one input shape: {spec.shape_dataset!r} has "
                    f"{shape}, {specs[0].shape_dataset!r} ({input_shape}, {num_classes})"
                )
        model = build_model(spec.model, input_shape, num_classes, device)
        trainer = build_trainer(
            spec,
            model,
            dataset,
            out_dir,
            device=device,
            data_dir=data_dir,
            dataset_files=dataset_files,
        )
        trainer.metrics_log.rewrite([])
        trainers.append(trainer)
    for name in ("pretrain", "train"):
        members = [t for t in trainers if name in t.spec.phases()]
        if members:
            _run_phase(members, name)
    return [
        write_result(t.spec, t.progress.history, t.last_checkpoint, t.out_dir) for t in trainers
    ]


def _phase(trainer: Trainer, name: str) -> Phase:
    return next(p for p in trainer.phases if p.name == name)


def _run_phase(trainers: list[Trainer], name: str) -> None:
    """One phase of every run in ``trainers``, stacked; metrics per run after each epoch."""
    phases = [_phase(t, name) for t in trainers]
    plan, device = phases[0], trainers[0].device
    models = [t.model for t in trainers]
    stacked = StackedMLP(models)
    optimizer = make_optimizer(plan.optimizer, stacked.parameters())
    orders = [
        torch.Generator().manual_seed(derive_seed(t.spec.model.seed, f"{name}/order"))
        for t in trainers
    ]
    for trainer, phase in zip(trainers, phases, strict=True):
        if phase.noise is not None:
            phase.noise.generator.manual_seed(derive_seed(trainer.spec.model.seed, f"{name}/noise"))
    probes = []
    for trainer, phase in zip(trainers, phases, strict=True):
        probe_x, probe_labels, probe_target = trainer.probe_batch(phase)
        probes.append((probe_x, probe_target))
        trainer.progress.phase, trainer.progress.epoch, trainer.progress.step = name, 0, 0
        train_loss, train_acc = trainer.initial_train_metrics(phase, probe_x, probe_labels)
        trainer.record_epoch(phase, train_loss, train_acc, probe_x, probe_target)
    runs = len(trainers)
    for epoch in range(1, plan.epochs + 1):
        loss_sum = torch.zeros(runs, dtype=torch.float64, device=device)
        correct = torch.zeros(runs, dtype=torch.int64, device=device)
        _run_epoch(stacked, optimizer, phases, orders, loss_sum, correct)
        stacked.write_back(models)
        losses = (loss_sum / plan.samples_per_epoch).tolist()
        accuracies = (correct.double() / plan.samples_per_epoch).tolist()
        for r, (trainer, phase) in enumerate(zip(trainers, phases, strict=True)):
            trainer.progress.epoch = epoch
            trainer.record_epoch(phase, losses[r], accuracies[r], *probes[r])
            if epoch == plan.epochs:
                trainer.progress.phases_done.append(name)
                _save(trainer, phase, orders[r], loss_sum[r], correct[r])


def _run_epoch(
    stacked: StackedMLP,
    optimizer: torch.optim.Optimizer,
    phases: list[Phase],
    orders: list[torch.Generator],
    loss_sum: torch.Tensor,
    correct: torch.Tensor,
) -> None:
    """One epoch of steps for every run; sums each run's loss and hits on the device."""
    plan = phases[0]
    data = plan.dataset
    if data is not None:
        device = data.x_train.device
        perms = torch.stack([torch.randperm(len(data.x_train), generator=g) for g in orders])
        perms = perms.to(device)  # (R, N): each run's own order
    for step in range(plan.steps_per_epoch):
        lo = step * plan.batch_size
        hi = min(lo + plan.batch_size, plan.samples_per_epoch)
        if data is not None:
            index = perms[:, lo:hi]  # (R, B)
            x = data.x_train[index]  # (R, B, *input_shape)
            labels = target = data.y_train[index]  # (R, B)
        else:
            batches = [phase.noise.batch(hi - lo) for phase in phases]  # each run's own noise
            x, labels, target = (torch.stack(parts) for parts in zip(*batches, strict=True))
        logits, per_run = stacked.step_gradients(x, target)  # (R, B, C), (R,)
        optimizer.step()
        loss_sum.add_(per_run, alpha=hi - lo)
        correct.add_((logits.argmax(2) == labels).sum(1))


def _save(
    trainer: Trainer,
    phase: Phase,
    order: torch.Generator,
    loss_sum: torch.Tensor,
    correct: torch.Tensor,
) -> None:
    """The run's phase-end checkpoint (weights, feedback, generators; no optimizer state)."""
    generators = {"order": order.get_state()}
    if phase.noise is not None:
        generators["noise"] = phase.noise.generator.get_state()
    path = save_checkpoint(
        trainer.out_dir / CHECKPOINT_DIR / checkpoint_name(phase.name, phase.epochs),
        spec=trainer.spec,
        model=trainer.model,
        progress=trainer.progress,
        generators=generators,
        extra={"loss_sum": torch.zeros_like(loss_sum), "correct": torch.zeros_like(correct)},
    )
    trainer.last_checkpoint = path
