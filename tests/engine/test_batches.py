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


def test_a_chunk_is_bounded_by_its_bytes(digits, monkeypatch):
    monkeypatch.setattr(batches, "CHUNK_BYTES", len(SEEDS) * 64 * 64 * 4)  # one step's inputs
    source = DataBatches(digits, [torch.Generator().manual_seed(s) for s in SEEDS])
    source.start_epoch(0)
    source.next(64)
    assert len(source.chunk) == 1


def test_an_offset_wound_back_gives_those_steps_rows_again(digits, monkeypatch):
    """A batch made ahead is undone by restoring the offset: within the chunk, to before it
    (the chunk after a boundary), and the steps go on from there unchanged."""
    monkeypatch.setattr(batches, "CHUNK_STEPS", 4)
    source = DataBatches(digits, [torch.Generator().manual_seed(s) for s in SEEDS])
    source.start_epoch(0)
    reference = one_step_at_a_time(digits, 0, [64] * 10)
    offsets = []

    def step(k):
        offsets.append(source.offset)
        x, labels, _ = source.next(64)
        assert torch.equal(x, reference[k][0]) and torch.equal(labels, reference[k][1]), k

    for k in range(3):
        step(k)
    source.restore(offsets[1])  # inside the first chunk (steps 0-3)
    offsets = offsets[:1]
    for k in range(1, 6):  # crosses into the second chunk (steps 4-7)
        step(k)
    assert source.chunk_start == 4 * 64
    source.restore(offsets[3])  # before the chunk now held
    offsets = offsets[:3]
    for k in range(3, 10):
        step(k)


def test_runs_that_stay_after_others_leave_mid_chunk_keep_their_rows(digits):
    source = DataBatches(digits, [torch.Generator().manual_seed(s) for s in SEEDS])
    source.start_epoch(0)
    reference = one_step_at_a_time(digits, 0, [64] * 5)
    for _ in range(2):
        source.next(64)
    kept = source.take([1])  # the first run left the stack
    for x, labels in reference[2:]:
        got_x, got_labels, _ = kept.next(64)
        assert torch.equal(got_x, x[1:]) and torch.equal(got_labels, labels[1:])


def test_a_new_epoch_gathers_by_its_new_order(digits):
    source = DataBatches(digits, [torch.Generator().manual_seed(s) for s in SEEDS])
    source.start_epoch(0)
    first, _, _ = source.next(64)
    source.start_epoch(0)  # the order generators have moved on: another permutation
    second, _, _ = source.next(64)
    assert not torch.equal(first, second)
