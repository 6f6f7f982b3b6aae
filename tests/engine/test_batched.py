"""Batched multi-run training equals running the same specs one by one."""

from __future__ import annotations

import json

import pytest

from noisefa.engine.batched import can_batch, run_batched
from noisefa.engine.checkpoint import model_from_checkpoint
from noisefa.engine.run import run_job


def mixed_specs(small_spec):
    """FA and BP, with and without noise pretraining, different seeds: one shape."""
    return [
        small_spec(model={"rule": "fa", "seed": 0}, pretrain=None),
        small_spec(model={"rule": "bp", "seed": 1}, pretrain=None),
        small_spec(model={"rule": "fa", "seed": 2}),
        small_spec(model={"rule": "bp", "seed": 3}),
    ]


def points(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_batched_training_equals_sequential_training(tmp_path, small_spec):
    specs = mixed_specs(small_spec)
    assert can_batch(specs)
    sequential = [run_job(spec, tmp_path / f"seq{i}") for i, spec in enumerate(specs)]
    batched = run_batched(specs, [tmp_path / f"bat{i}" for i in range(len(specs))])
    for i, (one, many) in enumerate(zip(sequential, batched, strict=True)):
        alone, together = points(tmp_path / f"seq{i}"), points(tmp_path / f"bat{i}")
        assert [(p["name"], p["phase"], p["epoch"]) for p in alone] == [
            (p["name"], p["phase"], p["epoch"]) for p in together
        ]
        for a, b in zip(alone, together, strict=True):
            # BP's angles sit at ~1e-6° where acos rounding dominates: absolute there.
            assert b["value"] == pytest.approx(a["value"], rel=1e-4, abs=1e-4), (i, a)
        assert many["final_checkpoint"] == one["final_checkpoint"]
        assert json.loads((tmp_path / f"bat{i}" / "result.json").read_text()) == many
        model = model_from_checkpoint(tmp_path / f"bat{i}" / many["final_checkpoint"])
        assert model.config.rule == specs[i].model.rule


def test_runs_of_different_shapes_do_not_batch(small_spec):
    assert not can_batch([small_spec(), small_spec(model={"hidden": [16]})])
    assert not can_batch([small_spec(), small_spec(train={"epochs": 3})])
    assert not can_batch([small_spec(), small_spec(pretrain={"samples_per_epoch": 1024})])
    assert not can_batch([small_spec(model={"batch_norm": True})])
    assert not can_batch([])
