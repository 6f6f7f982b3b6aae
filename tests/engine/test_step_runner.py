"""The step runner: eager on the CPU; on CUDA the captured graph replays the same training."""

from __future__ import annotations

import json

import pytest
import torch

from noisefa.engine.process_choices import CHOICES
from noisefa.engine.run import run_job
from noisefa.engine.step_runner import CudaGraphStep, EagerStep, make_step_runner


def test_the_cpu_gets_the_eager_runner_and_it_runs_every_step():
    calls = []
    runner = make_step_runner(lambda: calls.append(1), torch.device("cpu"))
    assert isinstance(runner, EagerStep) and not runner.captured
    for _ in range(5):
        runner()
    assert len(calls) == 5


def test_a_cuda_step_is_captured_unless_the_process_chose_eager_steps(monkeypatch):
    """Which runner a CUDA phase gets (building one touches no GPU)."""
    cuda = torch.device("cuda")
    monkeypatch.setattr(CHOICES, "cuda_graphs", True)
    assert isinstance(make_step_runner(lambda: None, cuda), CudaGraphStep)
    monkeypatch.setattr(CHOICES, "cuda_graphs", False)
    assert isinstance(make_step_runner(lambda: None, cuda), EagerStep)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graph capture needs a GPU")
def test_a_captured_step_trains_as_the_eager_step_does(tmp_path, small_spec, monkeypatch):
    spec = small_spec(device="cuda")
    monkeypatch.setattr(CHOICES, "cuda_graphs", False)
    run_job(spec, tmp_path / "eager")
    monkeypatch.setattr(CHOICES, "cuda_graphs", True)
    run_job(spec, tmp_path / "graph")
    eager = [json.loads(x) for x in (tmp_path / "eager" / "metrics.jsonl").read_text().splitlines()]
    graph = [json.loads(x) for x in (tmp_path / "graph" / "metrics.jsonl").read_text().splitlines()]
    assert [p["name"] for p in graph] == [p["name"] for p in eager]
    for a, b in zip(eager, graph, strict=True):
        assert b["value"] == pytest.approx(a["value"], rel=1e-5, abs=1e-4), a


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graph capture needs a GPU")
def test_the_graph_runner_captures_after_warmup_and_replays():
    counter = torch.zeros((), device="cuda")
    generator = torch.Generator(device="cuda").manual_seed(0)
    noise = torch.empty(4, device="cuda")

    def step():
        noise.normal_(generator=generator)
        counter.add_(1)

    runner = CudaGraphStep(step, [generator], warmup=2)
    for _ in range(6):
        runner()
    assert runner.captured
    assert counter.item() == 6
    expected = torch.Generator(device="cuda").manual_seed(0)
    reference = torch.empty(4, device="cuda")
    for _ in range(6):
        reference.normal_(generator=expected)
    torch.testing.assert_close(noise, reference)


def test_the_device_position_counter_gives_the_host_slicings_batches():
    """The CUDA path's batch position lives on the device; it must pick the same rows."""
    from noisefa.engine.batches import DataBatches
    from noisefa.engine.datasets import load_dataset

    data = load_dataset("digits", None, "cpu")
    sources = []
    for on_device in (False, True):
        source = DataBatches(data, [torch.Generator().manual_seed(s) for s in (1, 2)])
        source.on_device = on_device
        source.start_epoch(skip=64)
        sources.append(source)
    for size in (64, 64, 17):
        (x_host, y_host, _), (x_dev, y_dev, _) = (s.next(size) for s in sources)
        torch.testing.assert_close(x_dev, x_host)
        torch.testing.assert_close(y_dev, y_host)
