"""Issue 13's rules in the one training path: stacks of mixed rules equal their runs alone,
killed runs resume exactly, and every rule learns on digits and on real Fashion-MNIST."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from noisefa.engine.checkpoint import latest_checkpoint, load_checkpoint
from noisefa.engine.run import run_job, run_jobs
from noisefa.testing.fashion import fashion_split
from noisefa.testing.waiting import wait_for

from .test_stack import KILLED_STACK, assert_same_metrics, final_weights, points

RULE_NAMES = ("bp", "fa", "dfa", "usf", "brsf", "frsf", "kp")


def test_a_stack_of_every_rule_equals_each_run_trained_alone(tmp_path, small_spec):
    specs = [
        small_spec(model={"rule": rule, "seed": i}, pretrain=None if i % 2 else {})
        for i, rule in enumerate(RULE_NAMES)
    ]
    alone = [run_job(spec, tmp_path / f"one{i}") for i, spec in enumerate(specs)]
    stacked = run_jobs(specs, [tmp_path / f"stack{i}" for i in range(len(specs))])
    for i, (one, many) in enumerate(zip(alone, stacked, strict=True)):
        assert_same_metrics(points(tmp_path / f"one{i}"), points(tmp_path / f"stack{i}"))
        w_one = final_weights(tmp_path / f"one{i}", one)
        w_many = final_weights(tmp_path / f"stack{i}", many)
        assert w_one.keys() == w_many.keys()
        for key in w_one:
            torch.testing.assert_close(w_many[key], w_one[key], rtol=1e-4, atol=1e-6)
    kp = final_weights(tmp_path / "one6", alone[6])
    first = load_checkpoint(sorted((tmp_path / "one6" / "checkpoints").iterdir())[0])
    assert not torch.equal(
        kp["layers.1.trained_feedback"], first.tensors["model.layers.1.trained_feedback"]
    ), "KP's B trained"
    fa = final_weights(tmp_path / "one1", alone[1])
    assert "layers.1.fixed_feedback" in fa


def test_killed_brsf_kp_and_dfa_runs_resume_exactly(tmp_path, small_spec):
    specs = [
        small_spec(model={"rule": rule, "seed": i}, pretrain={"samples_per_epoch": 8192})
        for i, rule in enumerate(("brsf", "kp", "dfa"))
    ]
    whole = [tmp_path / f"whole{i}" for i in range(3)]
    run_jobs(specs, whole)
    killed = [tmp_path / f"killed{i}" for i in range(3)]
    args = [
        json.dumps([json.loads(s.canonical_json()) for s in specs]),
        json.dumps([str(p) for p in killed]),
    ]
    process = subprocess.Popen([sys.executable, "-c", KILLED_STACK, *args])

    def checkpointed() -> bool:  # brsf + kp share a stack
        assert process.poll() is None, "the stack finished before it could be killed"
        return all(latest_checkpoint(p) for p in killed[:2])

    wait_for(checkpointed, 120, "a checkpoint of every killed run", poll_s=0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    assert "pretrain" in latest_checkpoint(killed[0]).name, "killed mid-run"
    checkpoint = load_checkpoint(latest_checkpoint(killed[0]))
    assert "rng.feedback" in checkpoint.tensors
    kp = load_checkpoint(latest_checkpoint(killed[1]))
    assert any(k.startswith("optim.") for k in kp.tensors), "KP's optimizer state is saved"
    results = run_jobs(specs, killed)
    for done, folder, result in zip(whole, killed, results, strict=True):
        assert (folder / "metrics.jsonl").read_text() == (done / "metrics.jsonl").read_text()
        assert result == json.loads((done / "result.json").read_text())


def final_test_accuracy(folder: Path) -> float:
    return [p for p in points(folder) if p["name"] == "test_accuracy"][-1]["value"]


def test_every_rule_learns_digits_in_three_epochs(tmp_path, small_spec):
    # Two hidden layers (with one, DFA is FA); digits has 1,437 training images, so small
    # batches give the rules enough steps in three epochs.
    train = {"epochs": 3, "batch_size": 16, "optimizer": {"lr": 3e-3}}
    specs = [
        small_spec(model={"rule": rule, "hidden": [64, 32]}, pretrain=None, train=train)
        for rule in RULE_NAMES
    ]
    folders = [tmp_path / rule for rule in RULE_NAMES]
    results = run_jobs(specs, folders)
    assert all(isinstance(r, dict) for r in results), results
    accuracy = {rule: final_test_accuracy(f) for rule, f in zip(RULE_NAMES, folders, strict=True)}
    assert all(value > 0.5 for value in accuracy.values()), accuracy  # chance: 0.1


@pytest.fixture(scope="module")
def fashion_subset(tmp_path_factory) -> Path:
    """6,000 train / 2,000 test Fashion-MNIST images, standardised, as an .npz dataset."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, prefix, size in (("train", "train", 6000), ("test", "t10k", 2000)):
        images, labels = fashion_split(prefix)
        keep = rng.choice(len(labels), size, replace=False)
        x = images[keep].astype(np.float32) / 255.0
        arrays[f"x_{split}"] = ((x - 0.2860) / 0.3530)[:, None]  # (N, 1, 28, 28)
        arrays[f"y_{split}"] = labels[keep].astype(np.int64)
    path = tmp_path_factory.mktemp("fashion") / "fashion_subset.npz"
    np.savez(path, **arrays)
    return path


def test_every_rule_learns_a_fashion_mnist_subset_in_three_epochs(
    tmp_path, small_spec, fashion_subset
):
    train = {"dataset": f"npz:{fashion_subset}", "epochs": 3, "batch_size": 64}
    specs = [
        small_spec(model={"rule": rule, "hidden": [128, 64]}, pretrain=None, train=train)
        for rule in RULE_NAMES
    ]
    folders = [tmp_path / rule for rule in RULE_NAMES]
    results = run_jobs(specs, folders)
    assert all(isinstance(r, dict) for r in results), results
    accuracy = {rule: final_test_accuracy(f) for rule, f in zip(RULE_NAMES, folders, strict=True)}
    assert all(value > 0.5 for value in accuracy.values()), accuracy  # chance: 0.1


def test_rule_metrics_are_recorded_for_every_rule(tmp_path, small_spec):
    specs = [small_spec(model={"rule": rule, "hidden": [32, 16]}) for rule in RULE_NAMES]
    folders = [tmp_path / rule for rule in RULE_NAMES]
    run_jobs(specs, folders)
    for rule, folder in zip(RULE_NAMES, folders, strict=True):
        last = {p["name"]: p["value"] for p in points(folder)}
        for name in ("alignment_angle/3", "norm_ratio/3", "signal_angle/1", "signal_angle/2"):
            assert np.isfinite(last[name]), (rule, name)
        if rule == "bp":
            assert last["signal_angle/1"] == pytest.approx(0.0, abs=1e-2)
            assert last["norm_ratio/2"] == pytest.approx(1.0)
        else:
            assert last["signal_angle/1"] > 0.1, rule
