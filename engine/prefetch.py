"""A phase's batches step by step through an epoch, each made ahead on a helper thread (CPU).

On one CPU core a step is its batch and then its arithmetic. The batch is no small part:
64 × 784 normals from a run's CPU generator take ~200–450 µs on the dev boxes (most of it
the Mersenne Twister, not the transform), and a gather of 64 random rows of the data
~60–90 µs, against ~300–450 µs of forward, backward and Adam. Torch's kernels release the
GIL, so a helper thread can make step t+1's batch while the main thread computes step t.
That takes cores of its own, so it is on only where the process has room for it beside its
torch threads (:func:`room_for_helper`), or as ``Settings.prefetch_batches`` says
(:mod:`.process_choices`; ``noisefa worker`` turns it off where its concurrent jobs leave
no room). Never on CUDA, where the step, batch included, is one captured graph.

The helper makes exactly the batches the main thread would, from the same generators in
the same order, and never reaches past the epoch's last step (the next epoch draws a new
order). Before anything reads a source's state or reshapes it (a run stopping mid-epoch is
checkpointed, a run leaving the stack), the pending batch is settled: waited for, and its
source wound back to before it, so every checkpoint is the one a run without the helper
would have written.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from .batches import Batch, DataBatches, NoiseBatches
from .process_choices import CHOICES

Source = DataBatches | NoiseBatches


def usable_cores() -> int:
    """The cores this process may run on: its affinity where the OS has one (Linux), else
    the machine's count."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else os.cpu_count() or 1


def room_for_helper(threads: int, jobs: int = 1) -> bool:
    """Whether ``jobs`` concurrent jobs of ``threads`` torch threads each leave room for a
    helper. A helper's data gather is split among the job's torch threads as the main
    thread's ops are (``index_select`` of 64 rows or more, with more than one thread), so
    each job may need as many cores again: twice its threads (a noise draw needs one)."""
    return 2 * threads * jobs <= usable_cores()


def prefetch_enabled(device: torch.device) -> bool:
    """Whether a phase on ``device`` makes its batches ahead: on the CPU, always, never, or
    where there is room beside this process's torch threads, as the process's
    ``prefetch_batches`` choice says."""
    if device.type != "cpu" or CHOICES.prefetch_batches is False:
        return False
    return CHOICES.prefetch_batches or room_for_helper(torch.get_num_threads())


class StepBatches:
    """The batches of a phase's steps, from its dataset or noise source, made one step ahead
    on a helper thread when ``prefetch``.

    ``start_epoch`` says the sizes of the steps left in the epoch; with ``prefetch`` each
    :meth:`next` must ask for the next of them (the trainer's loop does), and the helper
    makes the one after. Without it, :meth:`next` is the source's own: a CUDA graph's
    replays run no Python, so there the calls are not one per step.
    """

    def __init__(self, source: Source, *, prefetch: bool):
        self.source = source
        self.pool = ThreadPoolExecutor(1, "noisefa-prefetch") if prefetch else None
        self.upcoming: deque[int] = deque()
        self.pending: tuple[object, Future[Batch]] | None = None  # state before, the batch

    @property
    def generators(self) -> list[torch.Generator]:
        """The generators the batches draw from (registered with a CUDA graph)."""
        return self.source.generators

    def start_epoch(self, skip: int, sizes: Sequence[int]) -> None:
        """Start the epoch ``skip`` samples in; ``sizes``: its steps' batch sizes from there."""
        self.settle()
        self.source.start_epoch(skip)
        if self.pool is not None:
            self.upcoming = deque(sizes)

    def next(self, size: int) -> Batch:
        """This step's batch (x (R, B, *in), labels (R, B), target); then start the next."""
        if self.pool is None:
            return self.source.next(size)
        expected = self.upcoming.popleft()
        assert size == expected, f"step of {size} samples where the epoch plans {expected}"
        if self.pending is None:
            batch = self.source.next(size)
        else:
            _, made = self.pending
            self.pending = None  # made or failed, it is no longer ahead
            batch = made.result()
        if self.upcoming:
            state = self.source.state()
            self.pending = (state, self.pool.submit(self.source.next, self.upcoming[0]))
        return batch

    def settle(self) -> None:
        """Undo the batch made ahead, if any: its source's state is as if it was never made.

        The batch is thrown away made or failed: if making it failed, making it again in the
        step fails the same way, and a phase that has failed already keeps its own error.
        """
        if self.pending is not None:
            state, made = self.pending
            self.pending = None
            made.exception()  # waits for it
            self.source.restore(state)

    def take(self, keep: Sequence[int]) -> StepBatches:
        """The batches of the stacked runs ``keep`` only (the others left), mid-epoch included."""
        self.settle()
        self.source = self.source.take(keep)
        return self

    def close(self) -> None:
        """Settle and stop the helper thread (the phase is over, or failed)."""
        if self.pool is not None:
            self.settle()
            self.pool.shutdown()
