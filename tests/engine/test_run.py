"""Running a job: outputs, resume after a stop, refusals, starting from a checkpoint."""

from __future__ import annotations

import gc
import json

import pytest
import torch

from noisefa.engine.callbacks import RunCallbacks
from noisefa.engine.checkpoint import load_checkpoint
from noisefa.engine.contract.errors import CheckpointError, InvalidSpecError, RunStopped
from noisefa.engine.run import run_job
from noisefa.engine.trainer import PhaseStack


class StopAfter(RunCallbacks):
    """Asks the loop to stop after ``steps`` steps in all; records checkpoints written."""

    def __init__(self, steps: int):
        self.steps, self.seen, self.checkpoints = steps, 0, []

    def on_progress(self, phase, epoch, step, steps_per_epoch):
        self.seen += 1

    def on_checkpoint(self, path):
        self.checkpoints.append(path.name)

    def should_stop(self):
        return self.seen >= self.steps


def test_run_writes_metrics_checkpoints_and_result(tmp_path, small_spec):
    spec = small_spec(train={"epochs": 4})
    result = run_job(spec, tmp_path)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    # The last two plus each phase's final checkpoint survive.
    assert names == [
        "pretrain-0002.safetensors",
        "train-0003.safetensors",
        "train-0004.safetensors",
    ]
    assert result["final_checkpoint"] == "checkpoints/train-0004.safetensors"
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved == result
    assert run_job(spec, tmp_path) == result, "rerunning a finished job changes nothing"
    assert result["spec"] == json.loads(spec.canonical_json())
    assert [p["name"] for p in result["phases"]] == ["pretrain", "train"]
    points = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {p["epoch"] for p in points if p["phase"] == "pretrain"} == {0, 1, 2}
    assert {p["epoch"] for p in points if p["phase"] == "train"} == {0, 1, 2, 3, 4}
    assert not any(p["name"] == "test_loss" for p in points if p["phase"] == "pretrain")
    final = {p["name"]: p["value"] for p in points if p["phase"] == "train" and p["epoch"] == 4}
    assert result["final_metrics"] == final
    assert final["gen_gap"] == pytest.approx(final["test_loss"] - final["train_loss"])
    summary = result["summary"]
    assert (
        summary["pretrain"]["alignment_angle_first"] > summary["pretrain"]["alignment_angle_last"]
    )
    assert 0 < summary["train"]["best_test_accuracy"] <= 1

    checkpoint = load_checkpoint(tmp_path / "checkpoints" / "train-0004.safetensors")
    assert checkpoint.progress.phases_done == ["pretrain", "train"]
    assert "model.layers.0.fixed_feedback" in checkpoint.tensors
    assert any(k.startswith("optim.") and k.endswith("exp_avg") for k in checkpoint.tensors)
    assert checkpoint.tensors["rng.order"].dtype == torch.uint8


@pytest.mark.parametrize("stop_after", [5, 32, 50, 70])
def test_a_stopped_and_resumed_run_ends_with_exactly_the_same_metrics(
    tmp_path, stop_after, small_spec
):
    # 32 steps per noise epoch, 23 per digits epoch: stops mid-epoch and on a boundary.
    spec = small_spec(checkpoint_every=2)
    run_job(spec, tmp_path / "whole")
    callbacks = StopAfter(stop_after)
    with pytest.raises(RunStopped):
        run_job(spec, tmp_path / "resumed", callbacks=callbacks)
    assert callbacks.checkpoints, "a stop writes a checkpoint"
    result = run_job(spec, tmp_path / "resumed")
    whole = (tmp_path / "whole" / "metrics.jsonl").read_text()
    assert (tmp_path / "resumed" / "metrics.jsonl").read_text() == whole
    assert result == json.loads((tmp_path / "whole" / "result.json").read_text())


def test_a_folder_holding_another_spec_is_refused(tmp_path, small_spec):
    run_job(small_spec(train={"epochs": 1}), tmp_path)
    with pytest.raises(CheckpointError, match="different spec"):
        run_job(small_spec(train={"epochs": 1}, model={"seed": 1}), tmp_path)


def test_init_checkpoint_loads_weights_and_feedback_and_refuses_other_shapes(tmp_path, small_spec):
    pretrain = small_spec(kind="pretrain", train=None, pretrain={"dataset": "digits"})
    run_job(pretrain, tmp_path / "pre")
    final = tmp_path / "pre" / "checkpoints" / "pretrain-0002.safetensors"
    spec = small_spec(pretrain=None, init_from=str(final), train={"epochs": 1})
    run_job(spec, tmp_path / "train")
    pre = json.loads((tmp_path / "pre" / "result.json").read_text())
    first = [json.loads(line) for line in (tmp_path / "train" / "metrics.jsonl").open()]
    angle0 = next(p["value"] for p in first if p["name"] == "alignment_angle/2")
    assert angle0 == pre["final_metrics"]["alignment_angle/2"]
    wider = small_spec(pretrain=None, model={"hidden": [40]}, train={"epochs": 1})
    with pytest.raises(InvalidSpecError, match="does not fit"):
        run_job(wider, tmp_path / "wider", init_checkpoint=final)


def test_pretraining_on_another_datasets_shape_is_refused(tmp_path, small_spec):
    spec = small_spec(pretrain={"dataset": "mnist"})
    with pytest.raises(InvalidSpecError, match="pretrain.dataset 'mnist'"):
        run_job(spec, tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message where CUDA is absent")
def test_asking_for_cuda_without_a_gpu_is_a_clear_error(tmp_path, small_spec):
    with pytest.raises(InvalidSpecError, match="no CUDA device"):
        run_job(small_spec(), tmp_path, device="cuda")


def test_a_finished_phase_frees_its_stack_without_waiting_for_the_garbage_collector(
    tmp_path, small_spec
):
    """A phase's stack (its weights, moments, a CUDA graph's pool) is gone when the phase
    ends, not left in a reference cycle for the collector: the next phase, or a pack
    retried in halves after running out of memory, has the memory back."""
    gc.collect()
    gc.disable()
    try:
        run_job(small_spec(train={"epochs": 1}), tmp_path)  # a noise phase, then data
        alive = [obj for obj in gc.get_objects() if type(obj) is PhaseStack]
    finally:
        gc.enable()
    assert alive == []
