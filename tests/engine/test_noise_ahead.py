"""Noise drawn ahead on a thread is the stream drawn in place: same batches, same states."""

from __future__ import annotations

import threading

import pytest
import torch

from noisefa.engine import batches
from noisefa.engine.batches import NoiseBatches
from noisefa.engine.contract.spec import NoiseSpec
from noisefa.engine.noise import NoiseSource

BATCH, SAMPLES = 8, 20  # batches of 8, 8 and 4 per epoch


@pytest.fixture(autouse=True)
def draw_small_batches_ahead(monkeypatch, request):
    """These batches are far below the size worth a thread; draw them ahead anyway."""
    if "real_threshold" not in request.node.name:
        monkeypatch.setattr(batches, "AHEAD_MIN_VALUES", 0)


def sources(labels: str = "uniform") -> list[NoiseSource]:
    return [
        NoiseSource(NoiseSpec(labels=labels), (3, 2), 5, generator=torch.Generator().manual_seed(s))
        for s in (1, 2, 3)
    ]


def epoch_sizes() -> list[int]:
    return [min(BATCH, SAMPLES - start) for start in range(0, SAMPLES, BATCH)]


def draw(source: NoiseBatches, epochs: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every batch of ``epochs`` epochs (copied: the buffers are reused), settling at each
    epoch's end as the trainer does before its checkpoint."""
    seen = []
    for _ in range(epochs):
        source.start_epoch()
        for size in epoch_sizes():
            x, labels, _ = source.next(size)
            seen.append((x.clone(), labels.clone()))
        source.settle()
    return seen


@pytest.mark.parametrize("labels", ["uniform", "soft"])
def test_drawing_ahead_gives_the_same_batches_and_generator_states(labels):
    in_place = NoiseBatches(sources(labels), BATCH, SAMPLES)
    ahead = NoiseBatches(sources(labels), BATCH, SAMPLES, ahead=True)
    for (x1, y1), (x2, y2) in zip(draw(in_place, 2), draw(ahead, 2), strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    for g1, g2 in zip(in_place.generators, ahead.generators, strict=True):
        assert torch.equal(g1.get_state(), g2.get_state())
    ahead.close()


def test_the_next_batch_is_drawn_on_another_thread_while_the_step_runs():
    ahead = NoiseBatches(sources(), BATCH, SAMPLES, ahead=True)
    drawn_on: list[str] = []
    fill = ahead._fill
    ahead._fill = lambda batch: (drawn_on.append(threading.current_thread().name), fill(batch))[1]
    ahead.start_epoch()
    ahead.next(BATCH)  # drawn here, and the second batch is started on the thread
    assert ahead.ahead is not None
    ahead.next(BATCH)
    ahead.close()
    assert drawn_on[0] == threading.current_thread().name
    assert all(name.startswith("noise") for name in drawn_on[1:]) and len(drawn_on) == 3


def test_settling_mid_epoch_winds_back_the_draw_ahead():
    """A checkpoint mid-epoch (a stop) saves the state of a source that never drew ahead,
    so a source restored from it continues with the very next batch."""
    ahead = NoiseBatches(sources(), BATCH, SAMPLES, ahead=True)
    ahead.start_epoch()
    ahead.next(BATCH)
    ahead.settle()
    saved = [g.get_state() for g in ahead.generators]
    expected = ahead.next(BATCH)[0].clone()
    ahead.close()
    restored = NoiseBatches(sources(), BATCH, SAMPLES)
    for generator, state in zip(restored.generators, saved, strict=True):
        generator.set_state(state)
    restored.start_epoch(skip=BATCH)
    assert torch.equal(restored.next(BATCH)[0], expected)


def test_a_stack_that_loses_a_run_keeps_the_others_streams():
    ahead = NoiseBatches(sources(), BATCH, SAMPLES, ahead=True)
    in_place = NoiseBatches(sources(), BATCH, SAMPLES)
    for source in (ahead, in_place):
        source.start_epoch()
        source.next(BATCH)
    ahead, in_place = ahead.take([0, 2]), in_place.take([0, 2])
    for size in epoch_sizes()[1:]:
        assert torch.equal(ahead.next(size)[0], in_place.next(size)[0])
    ahead.close()


def test_small_batches_are_drawn_in_place_at_the_real_threshold():
    small = NoiseBatches(sources(), BATCH, SAMPLES, ahead=True)  # 3 × 8 × 6 values
    assert small.executor is None
    small.start_epoch()
    small.next(BATCH)
    assert small.ahead is None
    wide = [NoiseSource(NoiseSpec(), (784,), 10, generator=torch.Generator().manual_seed(0))]
    large = NoiseBatches(wide, 64, 640, ahead=True)  # 64 × 784 values
    assert large.executor is not None
    large.close()
