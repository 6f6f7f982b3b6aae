"""Edges of stacks of mixed rules: a KP run leaving a stack, brSF's draws and their seed,
rule masks over kernels, batch norm beside KP's feedback views."""

from __future__ import annotations

import logging

import pytest
import torch

from noisefa.engine.contract.errors import RunStopped
from noisefa.engine.feedback_rules import FEEDBACK_RULES
from noisefa.engine.model import build_model
from noisefa.engine.process_choices import CHOICES
from noisefa.engine.run import run_job, run_jobs
from noisefa.engine.stacked_rules import StackedFeedback
from noisefa.engine.stacking import stack_models

from .test_stack import StopAt, assert_same_metrics, points

SHAPES = {"mlp": {"hidden": [32, 16]}, "conv": {"conv": [3], "kernel_size": 3, "hidden": [16]}}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_kp_run_stopping_mid_epoch_leaves_its_fa_partner_training_as_alone(
    tmp_path, small_spec, shape
):
    # With the KP run gone, the stack is rebuilt without feedback views: the optimizer
    # must follow that layout (it crashed in step() with the old one).
    specs = [
        small_spec(model={**SHAPES[shape], "rule": rule, "seed": i}, pretrain=None)
        for i, rule in enumerate(("kp", "fa"))
    ]
    run_job(specs[1], tmp_path / "fa_alone")
    folders = [tmp_path / "kp", tmp_path / "fa"]
    outcomes = run_jobs(specs, folders, callbacks=[StopAt(5), None])  # of 23 steps an epoch
    assert isinstance(outcomes[0], RunStopped), outcomes[0]
    assert isinstance(outcomes[1], dict), outcomes[1]
    assert_same_metrics(points(tmp_path / "fa_alone"), points(tmp_path / "fa"))


def train_losses(folder) -> list[float]:
    return [p["value"] for p in points(folder) if p["name"] == "train_loss"]


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_brsf_draws_follow_the_feedback_seed(tmp_path, small_spec, shape):
    def spec(feedback_seed: int):
        model = {**SHAPES[shape], "rule": "brsf", "feedback_seed": feedback_seed}
        return small_spec(model=model, pretrain=None, train={"epochs": 1})

    specs = [spec(5), spec(6), spec(5)]
    folders = [tmp_path / str(i) for i in range(3)]
    run_jobs(specs, folders)
    first, other, again = (train_losses(f) for f in folders)
    assert again == first, "one feedback seed, one training"
    assert other[-1] != first[-1], "another feedback seed draws other R"


def test_a_conv_brsf_step_draws_from_its_runs_generator(small_spec):
    # Each step's R comes straight from the run's (checkpointed) generator into a buffer
    # that keeps its address, so the step needs no host sync and can be captured.
    spec = small_spec(model={**SHAPES["conv"], "rule": "brsf"}, pretrain=None)
    model = build_model(spec.model, (64,), 10, "cpu")
    generator = torch.Generator().manual_seed(7)
    stack = stack_models([model], [generator])
    replica = stack.replicas[0]
    buffers = [layer.draw() for layer in replica.rule_layers]
    replay = torch.Generator().set_state(generator.get_state())
    x, target = torch.randn(1, 8, 64), torch.randint(0, 10, (1, 8))
    stack.step_gradients(x, target)
    for layer, buffer in zip(replica.rule_layers, buffers, strict=True):
        std = (2.0 / layer.weight[0].numel()) ** 0.5  # He, scale 1
        expected = torch.empty_like(layer.weight).normal_(0.0, std, generator=replay)
        assert layer.draw() is buffer, "the draw keeps its address"
        torch.testing.assert_close(buffer, expected, rtol=0, atol=0)
    first = buffers[0].clone()
    stack.step_gradients(x, target)
    assert not torch.equal(buffers[0], first), "each step redraws"


def test_stacked_feedback_picks_each_runs_matrix_for_kernels_too():
    # The rule masks broadcast over any weight shape, not only (R, out, in).
    usf, fa = FEEDBACK_RULES["usf"], FEEDBACK_RULES["fa"]
    weight = torch.randn(2, 3, 4, 3, 3)  # (R, out, in, k, k)
    buffer = torch.randn(2, 3, 4, 3, 3)
    stacked = StackedFeedback([usf, fa], [weight, weight], [buffer, buffer], [], [1.0, 1.0])
    matrix = stacked.matrix(1)
    torch.testing.assert_close(matrix[0], torch.sign(weight[0]))
    torch.testing.assert_close(matrix[1], buffer[1])


def test_a_kp_stack_with_batch_norm_keeps_its_norm_views_apart_from_the_feedback(small_spec):
    spec = small_spec(model={"hidden": [16, 8], "rule": "kp", "batch_norm": True})
    stack = stack_models([build_model(spec.model, (64,), 10, "cpu")], [torch.Generator()])
    assert stack.feedback, "KP's feedback views follow the parameters"
    assert [v.shape[1:] for v in stack.bn_weights] == [(16,), (8,)]
    assert [v.shape[1:] for v in stack.bn_biases] == [(16,), (8,)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graph capture needs a GPU")
def test_a_conv_brsf_step_is_captured_and_trains_as_the_eager_step(
    tmp_path, small_spec, monkeypatch, caplog
):
    model = {**SHAPES["conv"], "rule": "brsf"}
    spec = small_spec(model=model, pretrain=None, train={"epochs": 1}, device="cuda")
    monkeypatch.setattr(CHOICES, "cuda_graphs", False)
    with caplog.at_level(logging.INFO, logger="noisefa.engine.step_runner"):
        run_job(spec, tmp_path / "eager")
    assert "captured the training step" not in caplog.text
    caplog.clear()
    monkeypatch.setattr(CHOICES, "cuda_graphs", True)
    with caplog.at_level(logging.INFO, logger="noisefa.engine.step_runner"):
        run_job(spec, tmp_path / "graph")
    assert "captured the training step in a CUDA graph" in caplog.text
    assert "capture failed" not in caplog.text
    assert_same_metrics(points(tmp_path / "eager"), points(tmp_path / "graph"))
