"""CPU batches gathered a chunk of steps at a time are the rows a step-by-step gather picks."""

from __future__ import annotations

import pytest
import torch

from noisefa.engine import batches
from noisefa.engine.batches import DataBatches
from noisefa.engine.datasets import load_dataset

SEEDS = (1, 2)  # two stacked runs, each with its own order


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", None, "cpu")  # 1,797 train rows: 28 steps of 64, then 5


def one_step_at_a_time(data, skip: int, sizes: list[int]) -> list[tuple[torch.Tensor, ...]]:
    """Each step's rows gathered alone, by the epoch's permutations (the CUDA path's way)."""
    rows = len(data.x_train)
    orders = [torch.Generator().manual_seed(seed) for seed in SEEDS]
    perms = torch.stack([torch.randperm(rows, generator=order) for order in orders])
    out, offset = [], skip
    for size in sizes:
        index = perms[:, offset : offset + size]
        out.append((data.x_train[index], data.y_train[index]))
        offset += size
    return out


def epoch_sizes(data, batch: int, skip: int = 0) -> list[int]:
    full, last = divmod(len(data.x_train) - skip, batch)
    return [batch] * full + ([last] if last else [])


@pytest.mark.parametrize("chunk_steps", [1, 3, 16])
@pytest.mark.parametrize("skip", [0, 192])  # a whole epoch, and one resumed 3 steps in
def test_chunked_batches_are_the_rows_of_each_steps_own_gather(
    digits, monkeypatch, chunk_steps, skip
):
    monkeypatch.setattr(batches, "CHUNK_STEPS", chunk_steps)
    source = DataBatches(digits, [torch.Generator().manual_seed(s) for s in SEEDS])
    source.start_epoch(skip)
    sizes = epoch_sizes(digits, 64, skip)
    for size, (x, labels) in zip(sizes, one_step_at_a_time(digits, skip, sizes), strict=True):
        got_x, got_labels, target = source.next(size)
        assert got_x.is_contiguous() and got_x.shape == (len(SEEDS), size, 64)
        assert torch.equal(got_x, x) and torch.equal(got_labels, labels)
        assert target is got_labels
    assert source.offset == len(digits.x_train)


def test_a_chunk_is_bounded_by_its_bytes_and_regathered_after_a_restore(digits, monkeypatch):
    """At most CHUNK_BYTES of inputs are held (here one step's worth), and a source wound
    back a step (a batch made ahead, undone) gives that step's rows again."""
    monkeypatch.setattr(batches, "CHUNK_BYTES", len(SEEDS) * 64 * 64 * 4)
    source = DataBatches(digits, [torch.Generator().manual_seed(s) for s in SEEDS])
    source.start_epoch(0)
    reference = one_step_at_a_time(digits, 0, [64, 64, 64])
    source.next(64)
    assert len(source.chunk) == 1
    before = source.offset
    source.next(64)
    source.restore(before)
    for x, labels in reference[1:]:
        got_x, got_labels, _ = source.next(64)
        assert torch.equal(got_x, x) and torch.equal(got_labels, labels)


def test_a_new_epoch_gathers_by_its_new_order(digits):
    source = DataBatches(digits, [torch.Generator().manual_seed(s) for s in SEEDS])
    source.start_epoch(0)
    first, _, _ = source.next(64)
    source.start_epoch(0)  # the order generators have moved on: another permutation
    second, _, _ = source.next(64)
    assert not torch.equal(first, second)
