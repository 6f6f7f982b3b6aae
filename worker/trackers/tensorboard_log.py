"""A job's per-epoch metrics as a TensorBoard event file, uploaded with its artifacts.

``tensorboard --logdir <downloaded job>/tensorboard`` then shows one scalar series per metric
name. TensorBoard has one step axis, so the phases are laid on it in order: pretrain epoch
``e`` is step ``e`` and train epoch ``e`` is step ``pretrain.epochs + 1 + e`` (each phase
records epochs 0..N, epoch 0 being before its first step), so pretraining comes first and
no two points of one series share a step.
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from noisefa.engine.contract.spec import JobSpec

log = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"


def phase_step_offsets(spec: JobSpec) -> dict[str, int]:
    """The global step of each phase's epoch 0 (pretrain first, then train)."""
    pretrain_points = spec.pretrain.epochs + 1 if spec.pretrain is not None else 0
    return {"pretrain": 0, "train": pretrain_points}


def global_step(offsets: dict[str, int], phase: str, epoch: int) -> int:
    """The TensorBoard step of ``phase``'s epoch ``epoch``."""
    return offsets[phase] + epoch


class TensorBoardLog:
    """Writes each epoch's metrics under ``<out_dir>/tensorboard`` as soon as they are known."""

    def __init__(self, out_dir: Path, spec: JobSpec) -> None:
        self.folder = out_dir / TENSORBOARD_DIR
        self.offsets = phase_step_offsets(spec)
        self._writer = SummaryWriter(log_dir=str(self.folder))

    def add_epoch(self, phase: str, epoch: int, metrics: dict[str, float]) -> None:
        """One scalar point per metric of the epoch, flushed so a crash keeps what was seen."""
        step = global_step(self.offsets, phase, epoch)
        for name, value in metrics.items():
            self._writer.add_scalar(name, value, step)
        self._writer.flush()

    def close(self) -> list[Path]:
        """Close the writer; the event files to upload (as ``tensorboard/<file>``)."""
        self._writer.close()
        return sorted(path for path in self.folder.iterdir() if path.is_file())
