"""Where a stack's batches come from: each run's own data order, or each run's own noise.

Both sources write into tensors that keep their place in memory from step to step, and
neither reads anything back to the host, so a step that uses them can be captured in a CUDA
graph: the dataset source's position in the epoch lives in a device tensor there (on the
CPU a host counter slices the permutation, which is cheaper), and noise is drawn by each
run's own device generator into its slice of a static buffer.

On the CPU, drawing noise is a large share of a pretraining step (64 × 784 normals from
torch's Mersenne Twister take about as long as the step's matmuls), and it needs nothing
from the step, so :class:`NoiseBatches` draws the next batch on a thread of its own while
the current step runs (the draw releases the GIL; most of a step's small ops leave a core
idle). The stream is unchanged: the same generators, drawn in the same order. Before
anything reads a generator's state (a checkpoint, a run leaving the stack, the phase's end)
:meth:`NoiseBatches.settle` waits for the draw ahead and winds the generators back to where
they stood before it, so what is saved is exactly the state of a source that never drew
ahead. Handing a draw to the thread costs ~0.1 ms, so only batches of at least
:data:`AHEAD_MIN_VALUES` values (all runs together) are drawn ahead: 64 × 784 gains ~0.15 ms
a step on the dev box, 3 × 64 × 64 loses ~0.08 ms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch

from .datasets import Dataset
from .noise import NoiseSource

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # x (R, B, *in), labels (R, B), target
AHEAD_MIN_VALUES = 32_768  # ~0.15 ms of normal_ on one core: more than the hand-off costs


class DataBatches:
    """Batches of the train split, run ``r`` following its own permutation (``orders[r]``).

    The permutations are drawn on the CPU from each run's order generator, as the
    single-run trainer drew them, so a run's batches do not depend on the stack it is in.
    """

    def __init__(self, dataset: Dataset, orders: Sequence[torch.Generator]):
        self.dataset = dataset
        self.orders = list(orders)
        self.device = dataset.x_train.device
        size = len(dataset.x_train)
        self.perms = torch.zeros((len(self.orders), size), dtype=torch.long, device=self.device)
        self.on_device = self.device.type == "cuda"
        self.offset = 0
        self.offset_t = torch.zeros((), dtype=torch.long, device=self.device)
        self.positions = torch.arange(size, device=self.device)

    def start_epoch(self, skip: int = 0) -> None:
        """Draw each run's permutation of this epoch; start ``skip`` samples in."""
        perms = torch.stack([torch.randperm(self.perms.shape[1], generator=g) for g in self.orders])
        self.perms.copy_(perms)  # (R, N)
        self.offset = skip
        self.offset_t.fill_(skip)

    def next(self, size: int) -> Batch:
        """The next ``size`` samples of every run: x (R, B, *in), labels = target (R, B)."""
        runs = len(self.orders)
        if self.on_device:
            where = (self.offset_t + self.positions[:size]).expand(runs, size)  # (R, B)
            index = self.perms.gather(1, where)
            self.offset_t.add_(size)
        else:
            index = self.perms[:, self.offset : self.offset + size]  # (R, B)
        self.offset += size
        flat = index.reshape(-1)
        x = self.dataset.x_train.index_select(0, flat).view(runs, size, *self.dataset.input_shape)
        labels = self.dataset.y_train.index_select(0, flat).view(runs, size)
        return x, labels, labels

    def take(self, keep: Sequence[int]) -> DataBatches:
        """The source of the runs ``keep`` (a member left the stack), mid-epoch included."""
        taken = DataBatches(self.dataset, [self.orders[r] for r in keep])
        taken.perms.copy_(self.perms[list(keep)])
        taken.offset = self.offset
        taken.offset_t.copy_(self.offset_t)
        return taken

    def settle(self) -> None:
        """Nothing is drawn ahead here: the permutations are drawn at each epoch's start."""

    def close(self) -> None:
        """Nothing to release."""


@dataclass
class _Ahead:
    """A batch being drawn ahead: its size, its buffers, the draw, and every generator's
    state from before it (to wind back to)."""

    size: int
    batch: Batch
    draw: Future
    states: list[torch.Tensor]


class NoiseBatches:
    """Fresh noise for every run from its own :class:`~.noise.NoiseSource` each step.

    ``batch_size`` and ``samples_per_epoch`` are the phase's, so the size of the next batch
    is known; with ``ahead`` (the CPU) it is drawn on a thread while the step runs, when a
    batch holds at least :data:`AHEAD_MIN_VALUES` values.
    """

    def __init__(
        self,
        sources: Sequence[NoiseSource],
        batch_size: int,
        samples_per_epoch: int,
        *,
        ahead: bool = False,
    ):
        self.sources = list(sources)
        self.batch_size, self.samples_per_epoch = batch_size, samples_per_epoch
        self.position = 0  # samples into the epoch
        self.buffers: dict[tuple[int, int], Batch] = {}  # (size, slot): two slots per size
        self.slot = 0  # the slot the next synchronous draw goes to
        self.ahead: _Ahead | None = None
        values = len(self.sources) * batch_size * math.prod(self.sources[0].input_shape)
        worth_it = ahead and values >= AHEAD_MIN_VALUES
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="noise") if worth_it else None

    def start_epoch(self, skip: int = 0) -> None:
        """Noise has no order to draw: each step continues each run's generator."""
        self.position = skip

    @property
    def generators(self) -> list[torch.Generator]:
        return [source.generator for source in self.sources]

    def _buffers(self, size: int, slot: int) -> Batch:
        if (size, slot) not in self.buffers:
            first = self.sources[0]
            runs, device = len(self.sources), first.device
            x = torch.empty((runs, size, *first.input_shape), device=device)
            labels = torch.empty((runs, size), dtype=torch.long, device=device)
            target = labels
            if first.spec.labels == "soft":
                target = torch.full(
                    (runs, size, first.num_classes), 1.0 / first.num_classes, device=device
                )
            self.buffers[size, slot] = (x, labels, target)
        return self.buffers[size, slot]

    def _fill(self, batch: Batch) -> Batch:
        x, labels, _ = batch
        for r, source in enumerate(self.sources):
            source.fill(x[r], labels[r])
        return batch

    def next(self, size: int) -> Batch:
        """Each run's next noise batch (the draws of ``NoiseSource.batch``, in place)."""
        if self.ahead is not None and self.ahead.size == size:
            batch = self.ahead.draw.result()
            self.ahead = None
        else:
            self.settle()
            batch = self._fill(self._buffers(size, self.slot))
            self.slot = 1 - self.slot
        self.position += size
        upcoming = min(self.batch_size, self.samples_per_epoch - self.position)
        if self.executor is not None and upcoming > 0:
            # The other slot: the batch just returned stays untouched while its step runs.
            states = [g.get_state() for g in self.generators]
            following = self._buffers(upcoming, self.slot)
            self.slot = 1 - self.slot
            self.ahead = _Ahead(
                upcoming, following, self.executor.submit(self._fill, following), states
            )
        return batch

    def settle(self) -> None:
        """Drop the batch drawn ahead, if any: wait for it, then wind every generator back
        to its state before it (the next :meth:`next` draws it again)."""
        if self.ahead is None:
            return
        self.ahead.draw.result()
        for generator, state in zip(self.generators, self.ahead.states, strict=True):
            generator.set_state(state)
        self.ahead = None

    def close(self) -> None:
        """Settle and stop the drawing thread (the phase is over)."""
        self.settle()
        if self.executor is not None:
            self.executor.shutdown()

    def take(self, keep: Sequence[int]) -> NoiseBatches:
        """The source of the runs ``keep``, at the same place in the epoch."""
        self.close()
        taken = NoiseBatches(
            [self.sources[r] for r in keep],
            self.batch_size,
            self.samples_per_epoch,
            ahead=self.executor is not None,
        )
        taken.position = self.position
        return taken
