"""The training loop: phases of epochs of steps, with metrics, checkpoints and callbacks.

A phase draws its batches either from a dataset held on the device (one seeded permutation
per epoch, each batch the rows of one slice of it) or from a noise source (fresh on the
device every step). Steps never sync with the host: loss and accuracy are summed on the
device and read once per epoch. Every random choice comes from a generator whose state is
checkpointed, so a run stopped (or killed) and resumed ends with exactly the same metrics.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from .callbacks import RunCallbacks
from .checkpoint import (
    CHECKPOINT_DIR,
    Checkpoint,
    Progress,
    checkpoint_name,
    prune_checkpoints,
    save_checkpoint,
)
from .contract import metric_names as mn
from .contract.errors import RunStopped
from .contract.spec import JobSpec, OptimizerSpec
from .datasets import Dataset
from .metrics import evaluate, model_metrics
from .model import MLP
from .noise import NoiseSource

if TYPE_CHECKING:
    from .meta import MetaLoss

log = logging.getLogger(__name__)


def derive_seed(seed: int, tag: str) -> int:
    """An independent 63-bit seed per purpose, so streams never overlap across uses."""
    digest = hashlib.sha256(f"{seed}/{tag}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def make_optimizer(spec: OptimizerSpec, params) -> torch.optim.Optimizer:
    """Adam or SGD from a phase's settings, fused: one kernel updates every tensor, which
    matters at small batches where the per-step overhead rivals the matmuls."""
    if spec.name == "adam":
        return torch.optim.Adam(
            params, lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay, fused=True
        )
    return torch.optim.SGD(
        params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay, fused=True
    )


@dataclass
class Phase:
    """One phase's plan: where batches come from and how it optimises."""

    name: str
    epochs: int
    batch_size: int
    samples_per_epoch: int
    optimizer: OptimizerSpec
    dataset: Dataset | None = None
    noise: NoiseSource | None = None
    meta: MetaLoss | None = None

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.samples_per_epoch / self.batch_size)


class MetricsLog:
    """``metrics.jsonl``: one JSON object per metric point, appended once per epoch."""

    def __init__(self, path: Path):
        self.path = path

    def rewrite(self, points: list[dict[str, Any]]) -> None:
        """Replace the file with ``points`` (on resume: drop what came after the checkpoint)."""
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(json.dumps(p) + "\n" for p in points))
        os.replace(tmp, self.path)

    def append(self, points: list[dict[str, Any]]) -> None:
        with open(self.path, "a") as handle:
            handle.write("".join(json.dumps(p) + "\n" for p in points))


class Trainer:
    """Runs a job's phases on one model, writing metrics and checkpoints into ``out_dir``."""

    def __init__(
        self,
        spec: JobSpec,
        model: MLP,
        phases: list[Phase],
        out_dir: Path,
        *,
        readout_x: torch.Tensor,
        callbacks: RunCallbacks | None = None,
    ):
        self.spec = spec
        self.model = model
        self.phases = phases
        self.out_dir = Path(out_dir)
        self.readout_x = readout_x  # (R, *input_shape) fixed noise for the readout metrics
        self.callbacks = callbacks or RunCallbacks()
        self.device = readout_x.device
        self.progress = Progress(phase=phases[0].name, epoch=0)
        self.metrics_log = MetricsLog(self.out_dir / "metrics.jsonl")
        self.last_checkpoint: Path | None = None
        self.final_names = {checkpoint_name(p.name, p.epochs) for p in phases}

    def run(self, resume: Checkpoint | None = None) -> Progress:
        """Run every phase not yet done; continue from ``resume`` when given."""
        if resume is not None:
            self.progress = replace(resume.progress, phases_done=list(resume.progress.phases_done))
            self.last_checkpoint = resume.path
        self.metrics_log.rewrite(self.progress.history)
        for phase in self.phases:
            if phase.name in self.progress.phases_done:
                continue
            resumes_here = resume is not None and resume.progress.phase == phase.name
            self._run_phase(phase, resume if resumes_here else None)
        return self.progress

    # ----------------------------------------------------------------------------- phases
    def _run_phase(self, phase: Phase, resume: Checkpoint | None) -> None:
        optimizer = make_optimizer(phase.optimizer, self.model.parameters())
        order = torch.Generator().manual_seed(
            derive_seed(self.spec.model.seed, f"{phase.name}/order")
        )
        if phase.noise is not None:
            phase.noise.generator.manual_seed(
                derive_seed(self.spec.model.seed, f"{phase.name}/noise")
            )
        probe_x, probe_labels, probe_target = self.probe_batch(phase)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        if resume is not None:
            resume.load_optimizer(optimizer)
            order.set_state(resume.tensors["rng.order"])
            if phase.noise is not None:
                phase.noise.generator.set_state(resume.tensors["rng.noise"])
            loss_sum.copy_(resume.tensors["extra.loss_sum"])
            correct.copy_(resume.tensors["extra.correct"])
            log.info(
                "resuming %s at epoch %d step %d",
                phase.name,
                resume.progress.epoch,
                resume.progress.step,
            )
        else:
            self.progress.phase, self.progress.epoch, self.progress.step = phase.name, 0, 0
            train_loss, train_acc = self.initial_train_metrics(phase, probe_x, probe_labels)
            self.record_epoch(phase, train_loss, train_acc, probe_x, probe_target)
        self.callbacks.on_phase_start(phase.name, phase.epochs, phase.steps_per_epoch)
        self.model.train()
        while self.progress.epoch < phase.epochs:
            self._run_epoch(phase, optimizer, order, loss_sum, correct)
            self.progress.epoch += 1
            self.progress.step = 0
            train_loss = loss_sum.item() / phase.samples_per_epoch
            train_acc = correct.item() / phase.samples_per_epoch
            loss_sum.zero_()
            correct.zero_()
            self.record_epoch(phase, train_loss, train_acc, probe_x, probe_target)
            epoch = self.progress.epoch
            if epoch == phase.epochs:
                self.progress.phases_done.append(phase.name)
            if epoch % self.spec.checkpoint_every == 0 or epoch == phase.epochs:
                self._save(phase, optimizer, order.get_state(), loss_sum, correct)

    def _run_epoch(
        self,
        phase: Phase,
        optimizer: torch.optim.Optimizer,
        order: torch.Generator,
        loss_sum: torch.Tensor,
        correct: torch.Tensor,
    ) -> None:
        """Steps of one epoch, from ``progress.step`` on (non-zero when resumed mid-epoch)."""
        order_state = order.get_state()  # re-drawing from here gives this epoch's permutation
        if phase.dataset is not None:
            data = phase.dataset
            perm = torch.randperm(len(data.x_train), generator=order).to(self.device)
        steps, size = phase.steps_per_epoch, phase.batch_size
        for step in range(self.progress.step + 1, steps + 1):
            lo, hi = (step - 1) * size, min(step * size, phase.samples_per_epoch)
            if phase.dataset is not None:
                # Gathering each batch's rows as it is used keeps them in cache for the
                # matmul; gathering the whole split once per epoch measured ~15% slower
                # per epoch on CPU (benchmarks/bench_engine.py) for the same batches.
                index = perm[lo:hi]
                x = data.x_train.index_select(0, index)  # (B, *input_shape)
                labels = target = data.y_train.index_select(0, index)  # (B,)
            else:
                x, labels, target = phase.noise.batch(hi - lo)
            logits = self.model(x)  # (B, classes)
            loss = F.cross_entropy(logits, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                loss_sum.add_(loss.detach(), alpha=hi - lo)
                correct.add_((logits.argmax(1) == labels).sum())
            self.callbacks.on_progress(phase.name, self.progress.epoch + 1, step, steps)
            if self.callbacks.should_stop():
                self.progress.step = step
                path = self._save(phase, optimizer, order_state, loss_sum, correct)
                raise RunStopped(
                    f"stopped in {phase.name} epoch {self.progress.epoch + 1} step {step}; "
                    f"checkpoint {path}"
                )

    # ---------------------------------------------------------------------------- metrics
    def probe_batch(self, phase: Phase) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The phase's fixed probe batch for signal angles: noise, or a subset of the data."""
        size = self.spec.metrics.probe_size
        if phase.dataset is None:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(derive_seed(self.spec.model.seed, f"{phase.name}/probe"))
            probe = NoiseSource(
                phase.noise.spec,
                phase.noise.input_shape,
                phase.noise.num_classes,
                generator=generator,
            )
            return probe.batch(size)
        generator = torch.Generator().manual_seed(
            derive_seed(self.spec.model.seed, f"{phase.name}/probe")
        )
        index = torch.randperm(len(phase.dataset.x_train), generator=generator)[:size]
        index = index.to(self.device)
        labels = phase.dataset.y_train[index]
        return phase.dataset.x_train[index], labels, labels

    def initial_train_metrics(
        self, phase: Phase, probe_x: torch.Tensor, probe_labels: torch.Tensor
    ) -> tuple[float, float]:
        """Epoch-0 train loss/accuracy: on the whole train split, or on the noise probe."""
        batch = self.spec.metrics.eval_batch_size
        if phase.dataset is not None:
            return evaluate(self.model, phase.dataset.x_train, phase.dataset.y_train, batch)
        return evaluate(self.model, probe_x, probe_labels, batch)

    def record_epoch(
        self,
        phase: Phase,
        train_loss: float,
        train_acc: float,
        probe_x: torch.Tensor,
        probe_target: torch.Tensor,
    ) -> None:
        """Measure the epoch, append it to the history and ``metrics.jsonl``, tell callbacks."""
        metrics = {mn.TRAIN_LOSS: train_loss, mn.TRAIN_ACCURACY: train_acc}
        if phase.dataset is not None:
            data = phase.dataset
            test_loss, test_acc = evaluate(
                self.model, data.x_test, data.y_test, self.spec.metrics.eval_batch_size
            )
            metrics |= {
                mn.TEST_LOSS: test_loss,
                mn.TEST_ACCURACY: test_acc,
                mn.GEN_GAP: test_loss - train_loss,
            }
        metrics |= model_metrics(self.model, probe_x, probe_target, self.readout_x)
        names = mn.metric_names(len(self.model.rule_layers), with_data=phase.dataset is not None)
        metrics = {name: metrics[name] for name in names}  # the documented names, in order
        epoch = self.progress.epoch
        if phase.meta is not None and phase.meta.due(epoch, phase.epochs):
            metrics |= phase.meta.measure(self.model, self.spec.metrics.eval_batch_size)
        points = [
            {"name": name, "phase": phase.name, "epoch": epoch, "value": value}
            for name, value in metrics.items()
        ]
        self.progress.history.extend(points)
        self.metrics_log.append(points)
        self.callbacks.on_epoch_end(phase.name, epoch, metrics)

    # -------------------------------------------------------------------------- checkpoints
    def _save(
        self,
        phase: Phase,
        optimizer: torch.optim.Optimizer,
        order_state: torch.Tensor,
        loss_sum: torch.Tensor,
        correct: torch.Tensor,
    ) -> Path:
        """Write a checkpoint of the current state, prune old ones, tell callbacks."""
        progress = self.progress
        name = checkpoint_name(phase.name, progress.epoch, progress.step)
        generators = {"order": order_state}
        if phase.noise is not None:
            generators["noise"] = phase.noise.generator.get_state()
        path = save_checkpoint(
            self.out_dir / CHECKPOINT_DIR / name,
            spec=self.spec,
            model=self.model,
            progress=progress,
            optimizer=optimizer,
            generators=generators,
            extra={"loss_sum": loss_sum, "correct": correct},
        )
        self.last_checkpoint = path
        prune_checkpoints(self.out_dir, keep=self.final_names)
        self.callbacks.on_checkpoint(path)
        return path
