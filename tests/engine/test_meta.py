"""Meta-loss: the loss after a few adaptation steps, measured on a copy every N epochs."""

from __future__ import annotations

import json
import math

from noisefa.engine.run import run_job

META = {"tasks": ["digits"], "every": 2, "steps": 5, "eval_size": 200}


def test_meta_loss_is_recorded_and_finite_at_the_configured_epochs(tmp_path, small_spec):
    spec = small_spec(pretrain={"meta_loss": META}, train={"epochs": 3, "meta_loss": META})
    run_job(spec, tmp_path)
    points = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    meta = [p for p in points if p["name"].startswith("meta_loss")]
    epochs = {(p["phase"], p["epoch"]) for p in meta if p["name"] == "meta_loss"}
    # epoch 0, every 2 epochs, and each phase's last epoch
    assert epochs == {("pretrain", 0), ("pretrain", 2), ("train", 0), ("train", 2), ("train", 3)}
    assert all(math.isfinite(p["value"]) and p["value"] > 0 for p in meta)
    per_task = {
        (p["phase"], p["epoch"]): p["value"] for p in meta if p["name"] == "meta_loss/digits"
    }
    mean = {(p["phase"], p["epoch"]): p["value"] for p in meta if p["name"] == "meta_loss"}
    assert per_task == mean  # one task: the mean is that task's loss
    assert mean["train", 3] < mean["train", 0], "training on the task lowers its adapted loss"


def test_measuring_meta_loss_leaves_the_run_itself_unchanged(tmp_path, small_spec):
    plain = small_spec()
    measured = small_spec(train={"meta_loss": META})
    run_job(plain, tmp_path / "plain")
    run_job(measured, tmp_path / "measured")

    def others(folder):
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        return [p for p in map(json.loads, lines) if not p["name"].startswith("meta_loss")]

    assert others(tmp_path / "plain") == others(tmp_path / "measured")
