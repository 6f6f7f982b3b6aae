"""A stack of runs trains each run exactly as it would train alone; members leave alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from noisefa.engine.callbacks import RunCallbacks
from noisefa.engine.checkpoint import latest_checkpoint, load_checkpoint
from noisefa.engine.contract.errors import RunStopped, TrainingDiverged
from noisefa.engine.run import run_job, run_jobs
from noisefa.testing.waiting import wait_for


def mixed_specs(small_spec):
    """FA and BP, with and without noise pretraining, different seeds and lrs: one shape."""
    return [
        small_spec(model={"rule": "fa", "seed": 0}, pretrain=None),
        small_spec(
            model={"rule": "bp", "seed": 1}, pretrain=None, train={"optimizer": {"lr": 3e-3}}
        ),
        small_spec(model={"rule": "fa", "seed": 2}),
        small_spec(model={"rule": "bp", "seed": 3}),
    ]


def points(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def assert_same_metrics(alone, together):
    assert [(p["name"], p["phase"], p["epoch"]) for p in alone] == [
        (p["name"], p["phase"], p["epoch"]) for p in together
    ]
    for a, b in zip(alone, together, strict=True):
        # bmm over a stack vs over one run may round differently; BP's angles sit at ~1e-6°.
        assert b["value"] == pytest.approx(a["value"], rel=1e-5, abs=1e-4), a


def final_weights(folder, result):
    return load_checkpoint(folder / result["final_checkpoint"]).section("model")


def test_a_stack_equals_its_runs_trained_one_by_one(tmp_path, small_spec):
    specs = mixed_specs(small_spec)
    alone = [run_job(spec, tmp_path / f"one{i}") for i, spec in enumerate(specs)]
    stacked = run_jobs(specs, [tmp_path / f"stack{i}" for i in range(len(specs))])
    for i, (one, many) in enumerate(zip(alone, stacked, strict=True)):
        assert_same_metrics(points(tmp_path / f"one{i}"), points(tmp_path / f"stack{i}"))
        assert many["final_checkpoint"] == one["final_checkpoint"]
        assert json.loads((tmp_path / f"stack{i}" / "result.json").read_text()) == many
        w_one = final_weights(tmp_path / f"one{i}", one)
        w_many = final_weights(tmp_path / f"stack{i}", many)
        assert w_one.keys() == w_many.keys()
        for key in w_one:
            torch.testing.assert_close(w_many[key], w_one[key], rtol=1e-4, atol=1e-6)


class StopAt(RunCallbacks):
    """Stops its run after ``steps`` steps."""

    def __init__(self, steps: int):
        self.steps, self.seen = steps, 0

    def on_progress(self, phase, epoch, step, steps_per_epoch):
        self.seen += 1

    def should_stop(self):
        return self.seen >= self.steps


def test_a_cancelled_member_leaves_and_the_others_finish_unchanged(tmp_path, small_spec):
    specs = mixed_specs(small_spec)
    alone = tmp_path / "alone"
    run_jobs(specs, [alone / str(i) for i in range(len(specs))])
    callbacks = [None, StopAt(40), None, StopAt(5)]
    outcomes = run_jobs(specs, [tmp_path / str(i) for i in range(len(specs))], callbacks=callbacks)
    assert isinstance(outcomes[1], RunStopped) and isinstance(outcomes[3], RunStopped)
    for i in (0, 2):
        assert isinstance(outcomes[i], dict)
        assert points(tmp_path / str(i)) == points(alone / str(i)), "others are unchanged"
    # The stopped ones resume from their own checkpoints to the same end.
    resumed = run_jobs([specs[1], specs[3]], [tmp_path / "1", tmp_path / "3"])
    for i, result in zip((1, 3), resumed, strict=True):
        assert isinstance(result, dict), result
        assert_same_metrics(points(alone / str(i)), points(tmp_path / str(i)))


def test_a_diverging_member_fails_alone(tmp_path, small_spec):
    # Inputs near float32's largest value overflow the first layer: the loss is NaN.
    rng = np.random.default_rng(0)
    huge = {
        f"x_{s}": rng.choice([-3e38, 3e38], (64, 8)).astype(np.float32) for s in ("train", "test")
    }
    labels = {f"y_{s}": rng.integers(0, 2, 64) for s in ("train", "test")}
    np.savez(tmp_path / "huge.npz", **huge, **labels)
    wild = small_spec(pretrain=None, train={"dataset": f"npz:{tmp_path / 'huge.npz'}"})
    tame = small_spec(pretrain=None, model={"seed": 1})
    outcomes = run_jobs([wild, tame], [tmp_path / "wild", tmp_path / "tame"])
    assert isinstance(outcomes[0], TrainingDiverged), outcomes[0]
    assert isinstance(outcomes[1], dict)
    with pytest.raises(TrainingDiverged, match="diverged"):
        run_job(wild, tmp_path / "alone")


KILLED_STACK = """
import json, sys, torch
from pathlib import Path
torch.set_num_threads(1)
from noisefa.engine.contract.spec import parse_spec
from noisefa.engine.run import run_jobs
specs = [parse_spec(s) for s in json.loads(sys.argv[1])]
run_jobs(specs, [Path(p) for p in json.loads(sys.argv[2])])
"""


def test_a_killed_stack_resumes_every_member_exactly(tmp_path, small_spec):
    specs = [
        small_spec(model={"rule": "fa", "seed": 0}, pretrain={"samples_per_epoch": 8192}),
        small_spec(model={"rule": "bp", "seed": 1}, pretrain={"samples_per_epoch": 8192}),
    ]
    whole = [tmp_path / "whole0", tmp_path / "whole1"]
    run_jobs(specs, whole)
    killed = [tmp_path / "killed0", tmp_path / "killed1"]
    args = [
        json.dumps([json.loads(s.canonical_json()) for s in specs]),
        json.dumps([str(p) for p in killed]),
    ]
    process = subprocess.Popen([sys.executable, "-c", KILLED_STACK, *args])

    def checkpointed() -> bool:
        assert process.poll() is None, "the stack finished before it could be killed"
        return all(latest_checkpoint(p) for p in killed)

    wait_for(checkpointed, 120, "a checkpoint of every killed run", poll_s=0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    assert all("pretrain" in latest_checkpoint(p).name for p in killed), "killed mid-run"
    results = run_jobs(specs, killed)
    for done, folder, result in zip(whole, killed, results, strict=True):
        assert (folder / "metrics.jsonl").read_text() == (done / "metrics.jsonl").read_text()
        assert result == json.loads((done / "result.json").read_text())


class Journal(RunCallbacks):
    """Writes ``(run, what, epoch)`` of every epoch end and checkpoint into a shared list."""

    def __init__(self, run: int, journal: list):
        self.run, self.journal = run, journal

    def on_epoch_end(self, phase, epoch, metrics):
        self.journal.append((self.run, "epoch", phase, epoch))

    def on_checkpoint(self, path):
        self.journal.append((self.run, "checkpoint", path.name))


def test_every_run_of_a_stack_records_its_epoch_before_any_writes_its_checkpoint(
    tmp_path, small_spec
):
    """So the worker's checkpoint upload, which first waits for the epochs handed over,
    waits once an epoch for all of a pack's runs rather than once for each."""
    specs = [
        small_spec(model={"seed": seed}, pretrain=None, checkpoint_every=1) for seed in range(3)
    ]
    journal: list = []
    run_jobs(
        specs,
        [tmp_path / f"run{i}" for i in range(3)],
        callbacks=[Journal(i, journal) for i in range(3)],
    )
    epoch_ends = [entry for entry in journal if entry[1] == "epoch" and entry[3] > 0]
    assert epoch_ends, "the runs trained"
    for _, _, phase, epoch in epoch_ends:
        at = journal.index((0, "epoch", phase, epoch))
        block = [entry[1] for entry in journal[at : at + 6]]
        assert block == ["epoch"] * 3 + ["checkpoint"] * 3, journal[at : at + 6]
