"""Where a stack's batches come from: each run's own data order, or each run's own noise.

On CUDA neither source reads anything back to the host, so a step that uses them can be
captured in a CUDA graph: the dataset source's position in the epoch lives in a device
tensor, its gather allocates from the graph's own pool, and noise is drawn by each run's
own device generator into its slice of a static buffer (on the CPU, where a batch may be
drawn ahead, into two in turn: :mod:`.prefetch`).

On the CPU a host counter slices the permutation instead, and the rows of up to
:data:`CHUNK_STEPS` steps are gathered at once: a step of a small model is mostly the cost
of its ~35 ops, and a gather is six of them (on the dev box the steps of a 4-4-10 model took
~190 µs instead of ~230 µs, a 784-100-10 data epoch ~3 % less).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .datasets import Dataset
from .noise import NoiseSource

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # x (R, B, *in), labels (R, B), target
CHUNK_STEPS = 16  # steps of CPU batches gathered at once ...
CHUNK_BYTES = 4 << 20  # ... while their inputs take at most this (at least one step)


def steps_per_chunk(step_bytes: int) -> int:
    """How many steps of ``step_bytes`` of inputs (all runs') one CPU gather covers, before
    the epoch's end cuts a chunk short."""
    return max(1, min(CHUNK_STEPS, CHUNK_BYTES // step_bytes))


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
        # CPU: the batches (x, labels) of the steps from sample ``chunk_start``, of one size
        self.chunk: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.chunk_start = self.chunk_size = 0

    @property
    def generators(self) -> list[torch.Generator]:
        """No generator: a step draws nothing (the orders are drawn once an epoch, on the CPU)."""
        return []

    def start_epoch(self, skip: int = 0) -> None:
        """Draw each run's permutation of this epoch; start ``skip`` samples in."""
        perms = torch.stack([torch.randperm(self.perms.shape[1], generator=g) for g in self.orders])
        self.perms.copy_(perms)  # (R, N)
        self.offset = skip
        self.offset_t.fill_(skip)
        self.chunk = []  # gathered by the old order

    def next(self, size: int) -> Batch:
        """The next ``size`` samples of every run: x (R, B, *in), labels = target (R, B)."""
        if not self.on_device:
            x, labels = self._next_gathered(size)
            self.offset += size
            return x, labels, labels
        runs = len(self.orders)
        where = (self.offset_t + self.positions[:size]).expand(runs, size)  # (R, B)
        index = self.perms.gather(1, where).reshape(-1)
        self.offset_t.add_(size)
        self.offset += size
        x = self.dataset.x_train.index_select(0, index).view(runs, size, *self.dataset.input_shape)
        labels = self.dataset.y_train.index_select(0, index).view(runs, size)
        return x, labels, labels

    def _next_gathered(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The CPU batch at :attr:`offset`, from the chunk, gathering the next chunk first
        where it does not hold it (a new epoch, a step of another size, an offset past it or
        wound back before it)."""
        into, between = divmod(self.offset - self.chunk_start, size)
        if size != self.chunk_size or between or not 0 <= into < len(self.chunk):
            self._gather_chunk(size)
            into = 0
        return self.chunk[into]

    def _gather_chunk(self, size: int) -> None:
        """Gather the rows of up to :data:`CHUNK_STEPS` steps of ``size`` from
        :attr:`offset`, never past the epoch's end, laid out step by step so that each
        step's (R, B, *in) batch is a contiguous view."""
        runs, data = len(self.orders), self.dataset
        step_bytes = runs * size * data.x_train[0].numel() * data.x_train.element_size()
        rows_left = self.perms.shape[1] - self.offset
        assert size <= rows_left, f"a step of {size} samples where {rows_left} are left"
        steps = min(steps_per_chunk(step_bytes), rows_left // size)
        index = self.perms[:, self.offset : self.offset + steps * size]  # (R, K·B)
        index = index.reshape(runs, steps, size).transpose(0, 1).reshape(-1)  # (K·R·B,)
        x = data.x_train.index_select(0, index).view(steps, runs, size, *data.input_shape)
        labels = data.y_train.index_select(0, index).view(steps, runs, size)
        self.chunk = list(zip(x.unbind(), labels.unbind(), strict=True))
        self.chunk_start, self.chunk_size = self.offset, size

    def state(self) -> int:
        """Where the epoch stands (for :meth:`restore`: a batch made ahead, undone)."""
        return self.offset

    def restore(self, offset: int) -> None:
        self.offset = offset
        self.offset_t.fill_(offset)

    def take(self, keep: Sequence[int]) -> DataBatches:
        """The source of the runs ``keep`` (a member left the stack), mid-epoch included."""
        taken = DataBatches(self.dataset, [self.orders[r] for r in keep])
        taken.perms.copy_(self.perms[list(keep)])
        taken.offset = self.offset
        taken.offset_t.copy_(self.offset_t)
        return taken


class NoiseBatches:
    """Fresh noise for every run from its own :class:`~.noise.NoiseSource` each step.

    Each batch size has ``slots`` sets of buffers, used in turn: with two, a batch can be
    drawn ahead (:mod:`.prefetch`) while a step still reads the one before.
    """

    def __init__(self, sources: Sequence[NoiseSource], slots: int = 1):
        self.sources = list(sources)
        self.slots = slots
        self.turn = 0
        self.buffers: dict[tuple[int, int], Batch] = {}  # (size, slot) -> batch
        # Each run's views of each buffer, made once.
        self.run_slices: dict[tuple[int, int], list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def start_epoch(self, skip: int = 0) -> None:
        """Noise has no order to draw: each step continues each run's generator."""

    @property
    def generators(self) -> list[torch.Generator]:
        return [source.generator for source in self.sources]

    def _buffers(self, key: tuple[int, int]) -> Batch:
        if key not in self.buffers:
            size = key[0]
            first = self.sources[0]
            runs, device = len(self.sources), first.device
            x = torch.empty((runs, size, *first.input_shape), device=device)
            labels = torch.empty((runs, size), dtype=torch.long, device=device)
            target = labels
            if first.spec.labels == "soft":
                target = torch.full(
                    (runs, size, first.num_classes), 1.0 / first.num_classes, device=device
                )
            self.buffers[key] = (x, labels, target)
            self.run_slices[key] = list(zip(x.unbind(), labels.unbind(), strict=True))
        return self.buffers[key]

    def next(self, size: int) -> Batch:
        """Each run's next noise batch (the draws of ``NoiseSource.batch``, in place)."""
        key = (size, self.turn % self.slots)
        self.turn += 1
        batch = self._buffers(key)
        for source, (x, labels) in zip(self.sources, self.run_slices[key], strict=True):
            source.fill(x, labels)
        return batch

    def state(self) -> list[torch.Tensor]:
        """Each run's generator state (for :meth:`restore`: a batch drawn ahead, undone)."""
        return [generator.get_state() for generator in self.generators]

    def restore(self, states: list[torch.Tensor]) -> None:
        for generator, state in zip(self.generators, states, strict=True):
            generator.set_state(state)

    def take(self, keep: Sequence[int]) -> NoiseBatches:
        return NoiseBatches([self.sources[r] for r in keep], self.slots)
