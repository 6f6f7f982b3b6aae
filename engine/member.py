"""One run of a stack: its plan, model, outputs and observers, everything that is its own.

The stacked loop (:mod:`.trainer`) trains many runs at once; what makes each run *itself*
lives here: its spec, its phases (its own noise source, meta-loss), its unstacked
:class:`~.model.MLP` (the weights are copied back into it every epoch, and every metric is
measured on it, as for a run trained alone), its progress and metric history,
``metrics.jsonl``, its checkpoints and its callbacks.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .callbacks import RunCallbacks
from .checkpoint import (
    CHECKPOINT_DIR,
    InputNormalisation,
    Progress,
    checkpoint_name,
    final_checkpoint_names,
    prune_checkpoints,
    save_checkpoint,
)
from .contract import metric_names as mn
from .contract.spec import JobSpec, OptimizerSpec
from .convergence import converged_epoch
from .datasets import Dataset
from .metrics import evaluate, evaluate_calibrated, model_metrics, reliability_metrics
from .model import MLP
from .noise import NoiseSource
from .result import write_result
from .stacked_optim import RunOptimizerState

if TYPE_CHECKING:
    from .meta import MetaLoss


def derive_seed(seed: int, tag: str) -> int:
    """An independent 63-bit seed per purpose, so streams never overlap across uses."""
    digest = hashlib.sha256(f"{seed}/{tag}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


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

    def batch_sizes(self) -> list[int]:
        """Each step's batch size in an epoch: ``batch_size``, the last step what is left."""
        full, rest = divmod(self.samples_per_epoch, self.batch_size)
        return [self.batch_size] * full + ([rest] if rest else [])

    def stack_key(self) -> tuple:
        """What runs must share to take this phase's steps together (the lr may differ)."""
        source: tuple = ("data", id(self.dataset))
        if self.noise is not None:
            source = ("noise", self.noise.input_shape, self.noise.spec.labels)
        return (
            self.name,
            self.epochs,
            self.batch_size,
            self.samples_per_epoch,
            self.optimizer.model_dump(exclude={"lr"}).__repr__(),
            source,
        )


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


class Member:
    """A run's own state and outputs while it trains in a stack (a stack of one included)."""

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
        self.phases = {phase.name: phase for phase in phases}
        self.out_dir = Path(out_dir)
        self.readout_x = readout_x  # (R, *input_shape) fixed noise for the readout metrics
        self.callbacks = callbacks or RunCallbacks()
        data = next((phase.dataset for phase in phases if phase.dataset is not None), None)
        # The training data's input normalisation, recorded in every checkpoint (none when
        # the run sees no data: noise has no raw scale to undo).
        self.normalisation = (
            None
            if data is None
            else InputNormalisation(data.norm_mean, data.norm_std, model.config.input_shape)
        )
        self.device = readout_x.device
        self.progress = Progress(phase=phases[0].name, epoch=0)
        self.metrics_log = MetricsLog(self.out_dir / "metrics.jsonl")
        self.last_checkpoint: Path | None = None
        self.outcome: dict | BaseException | None = None  # set once, by :meth:`end`
        self.final_names = final_checkpoint_names(spec)
        self.probe: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

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

    def record_initial(self, phase: Phase) -> None:
        """Epoch 0: train loss/accuracy on the whole train split, or on the noise probe."""
        self.progress.phase, self.progress.epoch, self.progress.step = phase.name, 0, 0
        probe_x, probe_labels, _ = self.probe
        batch = self.spec.metrics.eval_batch_size
        if phase.dataset is not None:
            loss, accuracy = evaluate(
                self.model, phase.dataset.x_train, phase.dataset.y_train, batch
            )
        else:
            loss, accuracy = evaluate(self.model, probe_x, probe_labels, batch)
        self.record_epoch(phase, loss, accuracy)

    def record_epoch(self, phase: Phase, train_loss: float, train_acc: float) -> None:
        """Measure the epoch, append it to the history and ``metrics.jsonl``, tell callbacks."""
        probe_x, _, probe_target = self.probe
        metrics = {mn.TRAIN_LOSS: train_loss, mn.TRAIN_ACCURACY: train_acc}
        if phase.dataset is not None:
            data = phase.dataset
            test_loss, test_acc, ece = evaluate_calibrated(
                self.model, data.x_test, data.y_test, self.spec.metrics.eval_batch_size
            )
            metrics |= {
                mn.TEST_LOSS: test_loss,
                mn.TEST_ACCURACY: test_acc,
                mn.GEN_GAP: test_loss - train_loss,
                mn.ECE: ece,
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
        if phase.dataset is not None and (epoch == phase.epochs or self.converged(phase)):
            # The phase's last epoch: its reliability bins, once per run (a diagram's worth).
            data, batch = phase.dataset, self.spec.metrics.eval_batch_size
            bins = reliability_metrics(self.model, data.x_test, data.y_test, batch)
            more = [
                {"name": name, "phase": phase.name, "epoch": epoch, "value": value}
                for name, value in bins.items()
            ]
            self.progress.history.extend(more)
            points, metrics = points + more, metrics | bins
        self.metrics_log.append(points)
        self.callbacks.on_epoch_end(phase.name, epoch, metrics)

    def end(self, left: BaseException | None = None) -> dict | BaseException:
        """End the run once: ``left`` (why it left its stack) or, when None, its result
        (``result.json`` written). The callbacks hear it at once (``on_run_end``)."""
        if self.outcome is None:
            self.outcome = left or write_result(
                self.spec, self.progress.history, self.last_checkpoint, self.out_dir
            )
            self.callbacks.on_run_end(self.outcome)
        return self.outcome

    @property
    def done(self) -> bool:
        """Every phase of the run is trained."""
        return all(name in self.progress.phases_done for name in self.phases)

    def converged(self, phase: Phase) -> bool:
        """Whether the phase's ``early_stop`` rule says the run may stop after this epoch."""
        early_stop = getattr(getattr(self.spec, phase.name), "early_stop", None)
        if early_stop is None or phase.dataset is None:
            return False
        accuracies = [
            p["value"]
            for p in self.progress.history
            if p["phase"] == phase.name and p["name"] == mn.TEST_ACCURACY
        ]
        return converged_epoch(accuracies, early_stop) is not None

    # -------------------------------------------------------------------------- checkpoints
    def save(
        self,
        phase: Phase,
        optimizer_state: dict[int, dict[str, Any]],
        order_state: torch.Tensor,
        loss_sum: torch.Tensor,
        correct: torch.Tensor,
        *,
        draw_state: torch.Tensor | None = None,
    ) -> Path:
        """Write a checkpoint of the run's current state, prune old ones, tell callbacks.

        The layout is the single-run trainer's: ``optimizer_state`` is in ``torch.optim``
        form, ``loss_sum`` (float64) and ``correct`` (int64) are this run's 0-dim sums;
        ``draw_state`` is the state of the run's generator of feedback draws (brSF).
        """
        progress = self.progress
        name = checkpoint_name(phase.name, progress.epoch, progress.step)
        generators = {"order": order_state}
        if phase.noise is not None:
            generators["noise"] = phase.noise.generator.get_state()
        if draw_state is not None:
            generators["feedback"] = draw_state
        path = save_checkpoint(
            self.out_dir / CHECKPOINT_DIR / name,
            spec=self.spec,
            model=self.model,
            progress=progress,
            optimizer=RunOptimizerState(optimizer_state),
            generators=generators,
            extra={"loss_sum": loss_sum, "correct": correct},
            normalisation=self.normalisation,
        )
        self.last_checkpoint = path
        prune_checkpoints(self.out_dir, keep=self.final_names)
        self.callbacks.on_checkpoint(path)
        return path
