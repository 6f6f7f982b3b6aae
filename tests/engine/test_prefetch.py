"""Batches made ahead on a helper thread are the batches made in the step, and a run that
stops or leaves mid-epoch is checkpointed as if nothing had been made ahead."""

from __future__ import annotations

import threading

import pytest
import torch

from noisefa.engine.batches import DataBatches, NoiseBatches
from noisefa.engine.contract.errors import RunStopped
from noisefa.engine.contract.spec import NoiseSpec
from noisefa.engine.noise import NoiseSource
from noisefa.engine.prefetch import (
    HELPER_NAME,
    StepBatches,
    prefetch_enabled,
    room_for_helper,
)
from noisefa.engine.process_choices import CHOICES
from noisefa.engine.run import run_jobs

from .test_stack import StopAt, mixed_specs, points

SIZES = [64, 64, 64, 17]  # an epoch of 209 samples


def noise_batches(slots: int) -> NoiseBatches:
    sources = [
        NoiseSource(NoiseSpec(), (8,), 3, generator=torch.Generator().manual_seed(seed))
        for seed in (1, 2)
    ]
    return NoiseBatches(sources, slots)


def data_batches() -> DataBatches:
    from noisefa.engine.datasets import Dataset

    data_rng = torch.Generator().manual_seed(0)
    x = torch.randn(300, 8, generator=data_rng)
    y = torch.randint(0, 3, (300,), generator=data_rng)
    data = Dataset("toy", x, y, x[:10], y[:10], num_classes=3)
    return DataBatches(data, [torch.Generator().manual_seed(s) for s in (1, 2)])


def epoch(batches: StepBatches, sizes: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every step's (x, labels), copied: a noise buffer is reused two steps on."""
    batches.start_epoch(0, sizes)
    return [tuple(t.clone() for t in batches.next(size)[:2]) for size in sizes]


@pytest.mark.parametrize("make", [lambda p: noise_batches(1 + p), lambda p: data_batches()])
def test_batches_made_ahead_are_the_batches_made_in_the_step(make):
    made = {}
    for prefetch in (False, True):
        batches = StepBatches(make(prefetch), prefetch=prefetch)
        made[prefetch] = [epoch(batches, SIZES), epoch(batches, SIZES)]
        assert batches.pending is None, "nothing is made past the epoch's last step"
        batches.close()
    for ahead, inline in zip(made[True], made[False], strict=True):
        for (xa, ya), (xi, yi) in zip(ahead, inline, strict=True):
            assert torch.equal(xa, xi) and torch.equal(ya, yi)


def test_without_prefetch_a_batch_is_made_when_asked_whatever_the_plan():
    """A CUDA graph's replays run no Python: the step's calls skip most of the epoch."""
    batches = StepBatches(noise_batches(1), prefetch=False)
    batches.start_epoch(0, SIZES)
    x, labels, _ = batches.next(17)  # the epoch's last step, the first called
    assert x.shape == (2, 17, 8) and labels.shape == (2, 17)


def test_settling_winds_the_noise_generators_back_to_before_the_batch_made_ahead():
    ahead = StepBatches(noise_batches(2), prefetch=True)
    inline = noise_batches(1)
    ahead.start_epoch(0, SIZES)
    ahead.next(64)
    inline.next(64)
    assert ahead.pending is not None, "the second step's batch is being made"
    ahead.settle()
    for a, b in zip(ahead.source.generators, inline.generators, strict=True):
        assert torch.equal(a.get_state(), b.get_state())
    # A run left: the rest go on from where they stood, the next batch made in the step.
    kept = ahead.take([1])
    assert torch.equal(kept.next(64)[0][0], inline.next(64)[0][1])
    ahead.close()


def test_a_batch_drawn_ahead_has_buffers_of_its_own():
    ahead, inline = noise_batches(2), noise_batches(1)
    assert ahead.next(64)[0].data_ptr() != ahead.next(64)[0].data_ptr()
    assert inline.next(64)[0].data_ptr() == inline.next(64)[0].data_ptr()


class FailingNoise(NoiseBatches):
    """Noise whose ``fail_at``-th batch cannot be made."""

    def __init__(self, fail_at: int):
        super().__init__(noise_batches(2).sources, 2)
        self.fail_at, self.made = fail_at, 0

    def next(self, size):
        self.made += 1
        if self.made == self.fail_at:
            raise RuntimeError("no memory for the batch")
        return super().next(size)


def test_a_batch_that_fails_ahead_fails_its_own_step():
    batches = StepBatches(FailingNoise(fail_at=2), prefetch=True)
    batches.start_epoch(0, SIZES)
    batches.next(64)
    with pytest.raises(RuntimeError, match="no memory"):
        batches.next(64)
    batches.close()  # nothing pending: the failure was collected by its step


@pytest.mark.parametrize("source", [lambda: noise_batches(2), lambda: FailingNoise(fail_at=2)])
def test_closing_a_failed_phase_winds_back_and_stops_the_helper(source):
    """The step failed with a batch pending (made, or failed too): closing raises nothing
    (the phase's own error stands), winds the generators back and joins the thread."""
    batches, inline = StepBatches(source(), prefetch=True), noise_batches(1)
    batches.start_epoch(0, SIZES)
    batches.next(64)
    inline.next(64)
    batches.close()
    assert batches.pending is None
    for a, b in zip(batches.source.generators, inline.generators, strict=True):
        assert torch.equal(a.get_state(), b.get_state())
    assert not batches.helper.thread.is_alive()


def test_the_helper_thread_starts_with_the_first_batch_made_ahead():
    """A phase that fails before its first step (its resume, its initial metrics) and is
    never closed leaves no thread behind."""

    def helpers() -> int:
        return sum(thread.name == HELPER_NAME for thread in threading.enumerate())

    before = helpers()
    StepBatches(noise_batches(2), prefetch=True).close()  # never started: nothing to stop
    batches = StepBatches(noise_batches(2), prefetch=True)
    assert batches.helper.thread is None and helpers() == before
    batches.start_epoch(0, SIZES)
    batches.next(64)  # the second step's batch is being made
    assert batches.helper.thread.is_alive() and helpers() == before + 1
    batches.close()
    assert not batches.helper.thread.is_alive() and helpers() == before


def test_a_helper_that_cannot_start_fails_its_step_and_closing_does_not_wait(monkeypatch):
    """A thread the OS refuses (a container's process limit): the step fails with that
    error, and closing the failed phase neither waits for a batch nor joins a thread."""

    def refuse(thread):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    batches = StepBatches(noise_batches(2), prefetch=True)
    batches.start_epoch(0, SIZES)
    with pytest.raises(RuntimeError, match="start new thread"):
        batches.next(64)
    assert batches.pending is None and batches.helper.thread is None
    batches.close()


def test_settling_puts_the_data_offset_back():
    batches = StepBatches(data_batches(), prefetch=True)
    batches.start_epoch(0, SIZES)
    batches.next(64)
    batches.settle()
    assert batches.source.offset == 64
    batches.close()


@pytest.fixture
def prefetch_choice(monkeypatch):
    """Sets the process's ``prefetch_batches`` choice, put back after the test."""
    return lambda choice: monkeypatch.setattr(CHOICES, "prefetch_batches", choice)


def test_a_stack_trains_and_resumes_the_same_with_and_without_batches_made_ahead(
    tmp_path, small_spec, prefetch_choice
):
    """Stops in a noise epoch (step 5) and in a data epoch (step 40), then resumes."""
    specs = mixed_specs(small_spec)
    seen = {}
    for ahead in (False, True):
        prefetch_choice(ahead)  # forced: these batches are far too small to be worth it
        assert prefetch_enabled(torch.device("cpu"), noise=False, elements=1) == ahead
        out = [tmp_path / str(ahead) / str(i) for i in range(len(specs))]
        outcomes = run_jobs(specs, out, callbacks=[None, StopAt(40), None, StopAt(5)])
        assert [type(o) for o in outcomes] == [dict, RunStopped, dict, RunStopped]
        resumed = run_jobs([specs[1], specs[3]], [out[1], out[3]])
        assert all(isinstance(r, dict) for r in resumed), resumed
        seen[ahead] = [points(folder) for folder in out]
    assert seen[True] == seen[False]


MNIST_NOISE = 64 * 784  # a step's 64 × 784 normals: ~200 µs to draw, worth a helper


def test_made_ahead_only_on_the_cpu_and_as_the_setting_says(prefetch_choice):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    prefetch_choice(True)
    assert prefetch_enabled(cpu, noise=True, elements=1)
    assert not prefetch_enabled(cuda, noise=True, elements=MNIST_NOISE)
    prefetch_choice(False)
    assert not prefetch_enabled(cpu, noise=True, elements=MNIST_NOISE)
    prefetch_choice(None)
    room = room_for_helper(torch.get_num_threads())
    assert prefetch_enabled(cpu, noise=True, elements=MNIST_NOISE) == room


def test_room_for_a_helper_only_where_each_job_has_twice_its_threads(monkeypatch):
    """A helper's gather may be split among the job's threads: it needs as many again."""
    monkeypatch.setattr("noisefa.engine.prefetch.usable_cores", lambda: 4)
    assert room_for_helper(1) and room_for_helper(2) and room_for_helper(1, jobs=2)
    assert not room_for_helper(3) and not room_for_helper(1, jobs=3)
    assert not room_for_helper(2, jobs=2)


@pytest.mark.parametrize(
    ("noise", "elements", "ahead"),
    [
        (True, MNIST_NOISE, True),
        (True, 64 * 64, False),  # digits' noise: ~20 µs, less than the handoff costs
        (True, 9 * 64 * 64, True),  # 9 digits runs' noise: the model's call, not measured
        (False, 64 * 784, False),  # one run's rows: 16 steps a chunk
        (False, 3 * 64 * 784, False),  # 6 steps a chunk: measured, no gain
        (False, 9 * 64 * 784, True),  # 2 steps a chunk: measured, ~9 % faster
    ],
)
def test_unset_only_batches_that_cost_the_step_more_than_the_handoff_are_made_ahead(
    prefetch_choice, monkeypatch, noise, elements, ahead
):
    prefetch_choice(None)
    monkeypatch.setattr("noisefa.engine.prefetch.usable_cores", lambda: 64)  # room to spare
    assert prefetch_enabled(torch.device("cpu"), noise=noise, elements=elements) is ahead


def test_a_phase_weighs_the_batch_of_all_its_runs(tmp_path, small_spec, monkeypatch):
    """The trainer asks with every run's inputs of a step: runs × batch × features (two
    pretrained digits runs: 2 × 64 × 64, in their noise phase and in their data phase)."""
    asked = []

    def recording(device, *, noise, elements):
        asked.append((noise, elements))
        return prefetch_enabled(device, noise=noise, elements=elements)

    monkeypatch.setattr("noisefa.engine.trainer.prefetch_enabled", recording)
    specs = [small_spec(model={"seed": seed}) for seed in (2, 3)]
    run_jobs(specs, [tmp_path / str(i) for i in range(len(specs))])
    assert asked == [(True, 2 * 64 * 64), (False, 2 * 64 * 64)]


class ReplayedStep:
    """A CUDA graph's runner, as the trainer sees it: the step's Python runs for the warm-up
    and capture calls only; the replays after run none."""

    def __init__(self, step, device, generators):
        self.step, self.calls = step, 0

    def __call__(self):
        self.calls += 1
        if self.calls <= 4:
            self.step()


def test_a_phase_trains_where_replays_run_no_python(
    tmp_path, small_spec, monkeypatch, prefetch_choice
):
    """The data phase's last, smaller step comes after replays of the full-size step (on
    CUDA, where nothing is made ahead)."""
    prefetch_choice(False)
    monkeypatch.setattr("noisefa.engine.trainer.make_step_runner", ReplayedStep)
    spec = small_spec(pretrain=None)
    [result] = run_jobs([spec], [tmp_path / "run"])
    assert isinstance(result, dict), result
