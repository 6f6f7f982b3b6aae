"""Errors the engine raises, each mapped to a machine-readable failure reason.

The worker records ``error.reason`` from :attr:`EngineError.reason`; the CLI prints the
message. Reasons are the ones docs/design.md lists for failed jobs.
"""

from __future__ import annotations

from .states import FailureReason


class EngineError(Exception):
    """Base of engine failures a user can act on; ``reason`` is machine-readable."""

    reason: FailureReason = FailureReason.INTERNAL


class InvalidSpecError(EngineError):
    """The spec is valid on its own but cannot run (e.g. checkpoint shape mismatch)."""

    reason = FailureReason.INVALID_SPEC


class DatasetUnavailableError(EngineError):
    """A dataset is unknown, missing from the data folder, or malformed."""

    reason = FailureReason.DATASET_UNAVAILABLE


class CheckpointError(EngineError):
    """A checkpoint is not ours, of an unsupported format, or belongs to another spec."""

    reason = FailureReason.INVALID_SPEC


class CorruptCheckpointError(CheckpointError):
    """A checkpoint's bytes are damaged (truncated, garbled, or failing their checksum).

    A resume skips such a file for an older intact one; only when none is left does the run
    fail with this error. Messages name the file, never the folder it lies in.
    """

    reason = FailureReason.CHECKPOINT_CORRUPT


class TrainingDiverged(EngineError):
    """A run's epoch loss was NaN or infinite (e.g. a learning rate too large for the rule);
    its last checkpoint is the last good state."""

    reason = FailureReason.DIVERGED


class RunStopped(Exception):
    """The run stopped because ``should_stop()`` said so; its last checkpoint is on disk."""
