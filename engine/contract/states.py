"""Job states, job kinds and failure reasons: the one place each is spelled.

The service stores them, the worker sets them, the client and CLI read them. Each is a
``StrEnum``, so a member compares equal to its text (``JobState.QUEUED == "queued"``) and
serialises as it.
"""

from __future__ import annotations

from enum import StrEnum


class JobKind(StrEnum):
    """What a job does (the ``kind`` field of its body)."""

    PRETRAIN = "pretrain"
    TRAIN = "train"
    EVALUATE = "evaluate"
    EXPERIMENT = "experiment"


class JobState(StrEnum):
    """``queued → running → succeeded | failed | cancelled``; ``cancelling`` while a cancel of
    a running job is being honoured. Terminal states never change."""

    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """True for the states a job never leaves."""
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
"""States a job never leaves."""


class FailureReason(StrEnum):
    """Why a job failed, machine-readable (``error.reason``)."""

    INVALID_SPEC = "invalid_spec"
    DATASET_UNAVAILABLE = "dataset_unavailable"
    OUT_OF_MEMORY = "out_of_memory"
    WORKER_LOST = "worker_lost"
    # Every stored checkpoint a resumed attempt could start from failed its checksum.
    CHECKPOINT_CORRUPT = "checkpoint_corrupt"
    # The job ran past its wall-clock limit (``time_limit_s`` or ``max_job_seconds``); it
    # stopped at a step and kept its checkpoint.
    TIME_LIMIT = "time_limit"
    DIVERGED = "diverged"
    INTERNAL = "internal"
