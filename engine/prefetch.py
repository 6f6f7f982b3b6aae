"""A phase's batches step by step through an epoch, each made ahead on a helper thread (CPU).

On one CPU core a step is its batch and then its arithmetic. The batch can be no small part:
64 × 784 normals from a run's CPU generator take ~200–450 µs on the dev boxes (most of it
the Mersenne Twister, not the transform), against ~300–450 µs of forward, backward and
Adam. Torch's kernels release the GIL, so a helper thread can make step t+1's batch while
the main thread computes step t.

The helper is not free, though: each of its ops takes the GIL back, which the main thread
needs after each of its own ~35 ops, so the two threads hand it back and forth. On the dev
box (2-core AMD EPYC, one torch thread) that costs the main thread more than a small batch
takes to make: a step of 64 × 64 noise (digits) went from ~265 to ~430 µs with the helper,
while 64 × 784 noise gained ~140 µs a step. A data batch's rows are gathered up to 16 steps
at a time (:mod:`.batches`), so a step pays its share of one gather: with 3 runs of 784
features (6 steps a chunk) the helper gained nothing (epoch medians 0.78 s with it, 0.76 s
without), with 9 (2 steps a chunk) ~9 % (2.07 against 2.27 s, 3 rounds). So a phase makes
its batches ahead only where making them costs the step more than the handoff would
(:func:`worth_making_ahead`) and the process has room for the helper beside its torch
threads (:func:`room_for_helper`), unless ``Settings.prefetch_batches`` forces it either way
(:mod:`.process_choices`; ``noisefa worker`` turns it off where its concurrent jobs leave no
room). Never on CUDA, where the step, batch included, is one captured graph.

The helper makes exactly the batches the main thread would, from the same generators in
the same order, and never reaches past the epoch's last step (the next epoch draws a new
order). Before anything reads a source's state or reshapes it (a run stopping mid-epoch is
checkpointed, a run leaving the stack), the pending batch is settled: waited for, and its
source wound back to before it, so every checkpoint is the one a run without the helper
would have written.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from queue import SimpleQueue

import torch

from .batches import Batch, DataBatches, NoiseBatches, steps_per_chunk
from .process_choices import CHOICES

Source = DataBatches | NoiseBatches
HELPER_NAME = "noisefa-prefetch"  # the helper thread's name


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


# What making a batch costs the main thread per input on the dev box (one thread): a noise
# draw (64 × 784 normals, ~200 µs) or a gather of float32 data rows (64 × 784, ~35 µs), the
# latter shared by the steps of a chunk; and the least of that worth a helper: below it,
# handing the GIL back and forth cost the step more than the batch.
NOISE_NS_PER_ELEMENT = 4.0
GATHER_NS_PER_ELEMENT = 0.7
WORTH_AHEAD_US = 100.0


def worth_making_ahead(*, noise: bool, elements: int) -> bool:
    """Whether a step's batch of ``elements`` inputs (all its runs' together) costs the step
    more to make than the helper's handoff would: noise from ~25,000 inputs; data where its
    chunks hold few steps (9 runs of 784 features: 2 a chunk)."""
    if noise:
        per_step_ns = elements * NOISE_NS_PER_ELEMENT
    else:
        step_bytes = elements * torch.float32.itemsize  # a Dataset's inputs are float32
        per_step_ns = elements * GATHER_NS_PER_ELEMENT / steps_per_chunk(step_bytes)
    return per_step_ns / 1000 >= WORTH_AHEAD_US


def prefetch_enabled(device: torch.device, *, noise: bool, elements: int) -> bool:
    """Whether a phase on ``device`` makes its batches (noise or data, ``elements`` inputs a
    step) ahead: on the CPU, always or never as the process's ``prefetch_batches`` choice
    says, else where they are worth it and there is room beside its torch threads."""
    if device.type != "cpu" or CHOICES.prefetch_batches is False:
        return False
    if CHOICES.prefetch_batches:
        return True
    return worth_making_ahead(noise=noise, elements=elements) and room_for_helper(
        torch.get_num_threads()
    )


class Helper:
    """One thread that makes one batch at a time: a request in, its batch (or error) out.

    Two C-implemented queues are all the handoff is, so the helper runs as few lines of
    Python as it can: each holds the GIL the main thread needs back after its ops. Against a
    ``ThreadPoolExecutor`` (a future, a work item and a condition per batch), 5 alternations
    on the dev box gave noise epochs of 0.642 against 0.663 s and data epochs (batches made
    ahead) of 0.601 against 0.655 s, medians: a little better, within that VM's spread.
    """

    def __init__(self) -> None:
        self.requests: SimpleQueue[tuple[Callable[[int], Batch], int] | None] = SimpleQueue()
        self.results: SimpleQueue[Batch | BaseException] = SimpleQueue()
        # Started by the first request: a phase that fails before its first step (a resume,
        # the initial metrics) and is never closed leaves no thread behind.
        self.thread: threading.Thread | None = None

    def _serve(self) -> None:
        requests, results = self.requests, self.results
        while (request := requests.get()) is not None:
            make, size = request
            try:
                made: Batch | BaseException = make(size)
            except BaseException as exc:  # noqa: BLE001 - handed to the step that needs it
                made = exc
            results.put(made)
            # Hold nothing between requests: a source that left (``take``) and its chunk of
            # gathered rows are freed now, not at the next batch.
            del request, make, made

    def request(self, make: Callable[[int], Batch], size: int) -> None:
        """Start making ``make(size)``; :meth:`collect` returns it."""
        if self.thread is None:
            thread = threading.Thread(target=self._serve, name=HELPER_NAME, daemon=True)
            thread.start()  # recorded only once started: stop() joins only a started one
            self.thread = thread
        self.requests.put((make, size))

    def collect(self) -> Batch:
        """The batch requested last (waits for it); raises what making it raised."""
        made = self.results.get()
        if isinstance(made, BaseException):
            raise made
        return made

    def discard(self) -> None:
        """Wait for the batch requested last and drop it, made or failed."""
        self.results.get()

    def stop(self) -> None:
        """End the thread, if it started (nothing may be pending), and wait for it."""
        if self.thread is not None:
            self.requests.put(None)
            self.thread.join()


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
        self.helper = Helper() if prefetch else None
        self.upcoming: deque[int] = deque()
        self.pending: object | None = None  # the source's state before the batch made ahead

    @property
    def generators(self) -> list[torch.Generator]:
        """The generators the batches draw from (registered with a CUDA graph)."""
        return self.source.generators

    def start_epoch(self, skip: int, sizes: Sequence[int]) -> None:
        """Start the epoch ``skip`` samples in; ``sizes``: its steps' batch sizes from there."""
        self.settle()
        self.source.start_epoch(skip)
        if self.helper is not None:
            self.upcoming = deque(sizes)

    def next(self, size: int) -> Batch:
        """This step's batch (x (R, B, *in), labels (R, B), target); then start the next."""
        helper = self.helper
        if helper is None:
            return self.source.next(size)
        expected = self.upcoming.popleft()
        assert size == expected, f"step of {size} samples where the epoch plans {expected}"
        if self.pending is None:
            batch = self.source.next(size)
        else:
            self.pending = None  # made or failed, it is no longer ahead
            batch = helper.collect()
        if self.upcoming:
            state = self.source.state()
            helper.request(self.source.next, self.upcoming[0])
            self.pending = state  # only once requested: settle() waits for its result
        return batch

    def settle(self) -> None:
        """Undo the batch made ahead, if any: its source's state is as if it was never made.

        The batch is thrown away made or failed: if making it failed, making it again in the
        step fails the same way, and a phase that has failed already keeps its own error.
        """
        if self.pending is not None and self.helper is not None:
            state, self.pending = self.pending, None
            self.helper.discard()
            self.source.restore(state)

    def take(self, keep: Sequence[int]) -> StepBatches:
        """The batches of the stacked runs ``keep`` only (the others left), mid-epoch included."""
        self.settle()
        self.source = self.source.take(keep)
        return self

    def close(self) -> None:
        """Settle and stop the helper thread (the phase is over, or failed)."""
        if self.helper is not None:
            self.settle()
            self.helper.stop()
