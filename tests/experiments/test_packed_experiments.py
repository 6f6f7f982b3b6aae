"""Packed experiments through the real stack (HTTP API, Postgres, Redis, two worker
processes): an experiment's runs train as packs, one per worker, yet each stays an ordinary
job with its own metrics and artifacts, and the report is the one of the same runs trained
one by one; a cancelled member leaves its pack and the others finish unchanged."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import httpx
import pytest

from noisefa.engine.contract.experiment_spec import ExperimentSpec
from noisefa.engine.contract.spec import parse_spec
from noisefa.engine.experiment import run_experiment
from noisefa.engine.run import run_job
from noisefa.testing.jobs_http import children, submit, wait_job
from noisefa.testing.specs import experiment_spec, train_body
from noisefa.testing.stack import Stack
from noisefa.testing.waiting import wait_for

SEEDS = [0, 1, 2]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def packed_body(**train: Any) -> dict[str, Any]:
    """BP and FA, three seeds each: six runs of one shape (two packs of three on two workers)."""
    base = train_body(model={"hidden": [32], "seed": 0, "rule": "fa"})
    base["train"] = {**base["train"], "epochs": 2, **train}
    conditions = {"bp": {"model": {"rule": "bp"}}, "fa": {}}
    return experiment_spec(base, conditions=conditions, seeds=SEEDS)


def assert_close(packed: Any, alone: Any, where: str = "report") -> None:
    """Equal structure, equal numbers to float tolerance (a stack's bmm may round unlike a
    single run's: tests/engine/test_stack.py)."""
    if isinstance(alone, dict):
        assert packed.keys() == alone.keys(), where
        for key in alone:
            assert_close(packed[key], alone[key], f"{where}.{key}")
    elif isinstance(alone, list):
        assert len(packed) == len(alone), where
        for i, (a, b) in enumerate(zip(packed, alone, strict=True)):
            assert_close(a, b, f"{where}[{i}]")
    elif isinstance(alone, float) and not math.isnan(alone):
        assert packed == pytest.approx(alone, rel=1e-5, abs=1e-4), where
    else:
        assert packed == alone, where


def pack_lines(stack: Stack) -> dict[str, list[str]]:
    """Per worker log, its lines that announce a pack."""
    return {
        log.name: [
            line for line in log.read_text(errors="replace").splitlines() if "pack of" in line
        ]
        for log in sorted((stack.root / "logs").glob("*worker.log"))
    }


def test_a_packed_experiment_reports_as_its_runs_trained_one_by_one(
    http: httpx.Client, stack: Stack, tmp_path: Path
):
    body = packed_body()
    done = wait_job(http, submit(http, body)["id"])
    assert done["state"] == "succeeded", done.get("error")
    runs = children(http, done["id"])
    assert len(runs) == 6 and {run["state"] for run in runs} == {"succeeded"}

    # Two packs of three, one on each worker.
    ids = {run["id"] for run in runs}
    ours = {
        log: [line for line in lines if any(job_id in line for job_id in ids)]
        for log, lines in pack_lines(stack).items()
    }
    ours = {log: lines for log, lines in ours.items() if lines}
    assert len(ours) == 2, f"one pack on each worker: {ours}"
    assert all(len(lines) == 1 and "pack of 3" in lines[0] for lines in ours.values()), ours

    for run in runs:  # ordinary jobs: their own metrics and artifacts
        names = {a["name"] for a in http.get(f"/v1/jobs/{run['id']}/artifacts").json()["items"]}
        assert {"result.json", "metrics.jsonl", run["result"]["final_checkpoint"]} <= names
        metrics = http.get(f"/v1/jobs/{run['id']}/metrics", params={"name": "test_accuracy"})
        assert len(metrics.json()["items"]) == 3  # epochs 0, 1, 2

    spec = ExperimentSpec.model_validate(body)
    alone = run_experiment(spec, tmp_path / "alone")  # each run alone, in this process
    assert_close({key: done["result"][key] for key in alone}, alone)


def test_a_cancelled_member_leaves_its_pack_and_the_others_finish_unchanged(
    http: httpx.Client, tmp_path: Path
):
    # One condition, four seeds: two packs of two. Long enough to cancel one mid-run.
    body = experiment_spec(
        train_body(model={"hidden": [32], "seed": 0, "rule": "fa"}, checkpoint_every=1)
        | {"train": {"dataset": "digits", "epochs": 20, "batch_size": 16}},
        conditions={"fa": {}},
        seeds=[0, 1, 2, 3],
    )
    parent = submit(http, body)["id"]
    wait_for(lambda: len(children(http, parent)) == 4, 60, "the runs to be created")
    target = children(http, parent)[0]["id"]

    def stored_a_checkpoint() -> bool:
        items = http.get(f"/v1/jobs/{target}/artifacts").json()["items"]
        return any(item["name"].startswith("checkpoints/") for item in items)

    wait_for(stored_a_checkpoint, 120, "a checkpoint of the run to cancel", poll_s=0.1)
    answer = http.post(f"/v1/jobs/{target}/cancel")
    assert answer.status_code == 200, answer.text
    cancelled = wait_job(http, target, deadline_s=30)
    assert cancelled["state"] == "cancelled"
    others = [run for run in children(http, parent) if run["id"] != target]
    assert "running" in {run["state"] for run in others}, "the cancel ended only its run"

    done = wait_job(http, parent)
    assert done["state"] == "succeeded", done.get("error")
    for run in children(http, parent):
        if run["id"] == target:
            continue
        assert run["state"] == "succeeded"
        reference = run_job(parse_spec(run["spec"]), tmp_path / run["id"])
        assert_close(run["result"]["final_metrics"], reference["final_metrics"], run["id"])
