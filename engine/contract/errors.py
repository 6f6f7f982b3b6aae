"""Errors the engine raises, each mapped to a machine-readable failure reason.

The worker records ``error.reason`` from :attr:`EngineError.reason`; the CLI prints the
message. Reasons are the ones DESIGN.md lists for failed jobs.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base of engine failures a user can act on; ``reason`` is machine-readable."""

    reason = "internal"


class InvalidSpecError(EngineError):
    """The spec is valid on its own but cannot run (e.g. checkpoint shape mismatch)."""

    reason = "invalid_spec"


class DatasetUnavailableError(EngineError):
    """A dataset is unknown, missing from the data folder, or malformed."""

    reason = "dataset_unavailable"


class CheckpointError(EngineError):
    """A checkpoint is unreadable, not ours, or belongs to another spec."""

    reason = "invalid_spec"


class RunStopped(Exception):
    """The run stopped because ``should_stop()`` said so; its last checkpoint is on disk."""
