"""Hooks the training loop calls, so the CLI and the worker observe a run the same way.

The loop owns no I/O beyond its output folder; a caller that wants progress bars, database
rows, heartbeats or cancellation subclasses :class:`RunCallbacks` and overrides what it needs.
"""

from __future__ import annotations

from pathlib import Path


class RunCallbacks:
    """No-op base. Every hook runs on the training thread: keep them cheap."""

    def on_phase_start(self, phase: str, epochs: int, steps_per_epoch: int) -> None:
        """A phase (``pretrain`` or ``train``) begins (also when resumed mid-phase)."""

    def on_progress(self, phase: str, epoch: int, step: int, steps_per_epoch: int) -> None:
        """Progress inside an epoch; called every step (``step`` counts from 1 in the epoch)."""

    def on_epoch_end(self, phase: str, epoch: int, metrics: dict[str, float]) -> None:
        """Metrics of one epoch (epoch 0 = before the phase's first step)."""

    def on_checkpoint(self, path: Path) -> None:
        """A checkpoint file was written completely (atomically) at ``path``."""

    def on_run_end(self, outcome: dict | BaseException) -> None:
        """The run is over for good: its ``result.json`` content, or the exception it left
        with (:class:`RunStopped`, :class:`TrainingDiverged`). Called once, the moment it
        leaves its stack (the stack's other runs go on after), so a caller can end a job
        without waiting for the rest; ``run_jobs`` returns the same outcome at the end."""

    def should_stop(self) -> bool:
        """Polled between steps; return True to stop gracefully (checkpoint, then RunStopped)."""
        return False
