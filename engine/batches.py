"""Where a stack's batches come from: each run's own data order, or each run's own noise.

Both sources write into tensors that keep their place in memory from step to step (noise,
where a batch is drawn ahead on the CPU, into two in turn: :mod:`.prefetch`), and
neither reads anything back to the host, so a step that uses them can be captured in a CUDA
graph: the dataset source's position in the epoch lives in a device tensor there (on the
CPU a host counter slices the permutation, which is cheaper), and noise is drawn by each
run's own device generator into its slice of a static buffer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .datasets import Dataset
from .noise import NoiseSource

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # x (R, B, *in), labels (R, B), target


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
