"""How this process's engine runs its steps: two choices, made once per process from
``Settings``, process-wide as ``torch.set_num_threads`` is.

- ``cuda_graphs``: a CUDA step is captured in a graph and replayed (:mod:`.step_runner`);
  off gives eager steps, for a benchmark's on/off ratio or a way round a driver problem.
- ``prefetch_batches``: a CPU step's batch is made ahead on a helper thread
  (:mod:`.prefetch`): always, never, or (``None``) where it is worth its handoff and the
  cores leave room for it.

The worker's job processes, ``noisefa run``, ``noisefa compare`` and the in-process
benchmarks apply them with :func:`apply_settings`; the engine reads no environment variable
itself. Until then the defaults hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class EngineSettings(Protocol):
    """The fields of ``Settings`` the engine's steps follow."""

    cuda_graphs: bool
    prefetch_batches: bool | None


@dataclass
class Choices:
    cuda_graphs: bool = True
    prefetch_batches: bool | None = None


CHOICES = Choices()


def apply_settings(settings: EngineSettings) -> None:
    """Take this process's choices from ``settings``."""
    CHOICES.cuda_graphs = settings.cuda_graphs
    CHOICES.prefetch_batches = settings.prefetch_batches
