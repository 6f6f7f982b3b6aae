"""Conv networks in the one training path: a stack of conv runs equals each run alone, a
stopped conv run resumes exactly, noise pretraining runs in the image shape, every rule
trains a conv net, and LeNet-5 learning by FA trains on real Fashion-MNIST images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from noisefa.engine.checkpoint import load_checkpoint
from noisefa.engine.contract.errors import RunStopped
from noisefa.engine.model import build_model
from noisefa.engine.rules import RULES
from noisefa.engine.run import run_job, run_jobs
from noisefa.testing.fashion import fashion_split

from .test_stack import StopAt

CONV = {"conv": [3, 4], "kernel_size": 3, "hidden": [16]}
# FA-family conv nets diverge under the default Adam 1e-3 (their FA head; docs/conv.md); SGD
# with momentum trains them. uSF's unit-magnitude kernels make SGD steps ~10x larger: Adam,
# which does not see the scale, suits it.
LENET_SGD = {"name": "sgd", "lr": 1e-3, "momentum": 0.9}
LENET_OPTIMIZER = {"usf": {"name": "adam", "lr": 1e-3}}


def points(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def values(folder: Path, name: str, phase: str = "train") -> list[float]:
    return [p["value"] for p in points(folder) if p["name"] == name and p["phase"] == phase]


def conv_spec(small_spec, rule: str = "fa", seed: int = 0, **overrides):
    return small_spec(model={**CONV, "rule": rule, "seed": seed}, **overrides)


def test_a_stack_of_conv_runs_equals_each_run_trained_alone(tmp_path, small_spec):
    specs = [
        conv_spec(small_spec, "fa", 0),
        conv_spec(small_spec, "bp", 1, pretrain=None, train={"optimizer": {"lr": 3e-3}}),
        conv_spec(small_spec, "usf", 2),
    ]
    alone = [run_job(spec, tmp_path / f"one{i}") for i, spec in enumerate(specs)]
    stacked = run_jobs(specs, [tmp_path / f"stack{i}" for i in range(len(specs))])
    for i, (one, many) in enumerate(zip(alone, stacked, strict=True)):
        a, b = points(tmp_path / f"one{i}"), points(tmp_path / f"stack{i}")
        assert [(p["name"], p["phase"], p["epoch"]) for p in a] == [
            (p["name"], p["phase"], p["epoch"]) for p in b
        ]
        for p, q in zip(a, b, strict=True):
            assert q["value"] == pytest.approx(p["value"], rel=1e-5, abs=1e-4), p
        w_one = load_checkpoint(tmp_path / f"one{i}" / one["final_checkpoint"]).section("model")
        w_many = load_checkpoint(tmp_path / f"stack{i}" / many["final_checkpoint"]).section("model")
        assert w_one.keys() == w_many.keys()
        assert any(key.startswith("convs.") for key in w_one)
        for key in w_one:
            torch.testing.assert_close(w_many[key], w_one[key], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("rule", ["fa", "kp", "brsf"])
def test_a_stopped_conv_run_resumes_to_the_same_metrics(tmp_path, small_spec, rule):
    spec = conv_spec(small_spec, rule, train={"optimizer": {"weight_decay": 1e-3}})
    run_job(spec, tmp_path / "whole")
    with pytest.raises(RunStopped):
        run_job(spec, tmp_path / "cut", callbacks=StopAt(45))  # mid pretrain epoch 2
    run_job(spec, tmp_path / "cut")
    assert points(tmp_path / "cut") == points(tmp_path / "whole")


def test_noise_pretraining_of_a_conv_net_trains_its_kernels_on_image_shaped_noise(
    tmp_path, small_spec
):
    pretrain = {"dataset": "digits", "optimizer": LENET_SGD}
    spec = conv_spec(small_spec, "fa", train=None, kind="pretrain", pretrain=pretrain)
    result = run_job(spec, tmp_path / "run")
    losses = values(tmp_path / "run", "train_loss", "pretrain")
    assert losses[-1] < losses[0]  # it fits random labels on noise towards log(10)
    readout = values(tmp_path / "run", "readout_entropy", "pretrain")
    assert readout[-1] > readout[0]  # and its readout of noise moves towards chance
    final = load_checkpoint(tmp_path / "run" / result["final_checkpoint"]).section("model")
    initial = build_model(spec.model, (64,), 10, "cpu").state_dict()
    assert final["convs.0.weight"].shape == (3, 1, 3, 3)
    assert not torch.allclose(final["convs.0.weight"], initial["convs.0.weight"])
    torch.testing.assert_close(final["convs.1.fixed_feedback"], initial["convs.1.fixed_feedback"])


@pytest.fixture(scope="module")
def fashion_subset(tmp_path_factory) -> str:
    """2,000 train and 500 test images of the real Fashion-MNIST release, as an npz."""
    path = tmp_path_factory.mktemp("fashion") / "fashion2k.npz"
    (train_x, train_y), (test_x, test_y) = fashion_split("train"), fashion_split("t10k")
    np.savez(
        path,
        x_train=(train_x[:2000, None] / 255).astype(np.float32),
        y_train=train_y[:2000].astype(np.int64),
        x_test=(test_x[:500, None] / 255).astype(np.float32),
        y_test=test_y[:500].astype(np.int64),
    )
    return f"npz:{path}"


def test_lenet5_learning_by_fa_trains_on_fashion_mnist(tmp_path, small_spec, fashion_subset):
    spec = small_spec(
        model={"conv": [6, 16], "hidden": [120, 84], "rule": "fa"},
        pretrain=None,
        train={
            "dataset": fashion_subset,
            "epochs": 3,
            "batch_size": 32,
            "optimizer": LENET_SGD,
        },
    )
    run_job(spec, tmp_path / "lenet")
    accuracy = values(tmp_path / "lenet", "test_accuracy")
    assert accuracy[-1] > 0.35, accuracy  # 3.5× chance after 6,000 samples
    assert len(values(tmp_path / "lenet", "alignment_angle/1")) == 4  # conv layers measured


@pytest.mark.parametrize("rule", sorted(RULES))
def test_every_rule_trains_lenet5_on_fashion_mnist(tmp_path, small_spec, fashion_subset, rule):
    spec = small_spec(
        model={"conv": [6, 16], "hidden": [120, 84], "rule": rule},
        pretrain=None,
        train={
            "dataset": fashion_subset,
            "epochs": 2,
            "batch_size": 32,
            "optimizer": LENET_OPTIMIZER.get(rule, LENET_SGD),
        },
    )
    run_job(spec, tmp_path / rule)
    accuracy = values(tmp_path / rule, "test_accuracy")
    assert accuracy[-1] > 0.3, accuracy  # chance is 0.1
