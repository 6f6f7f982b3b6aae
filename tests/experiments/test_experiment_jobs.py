"""Experiment jobs through the real stack (HTTP API, Postgres, Redis, two workers): runs fan
out as child jobs, the experiment aggregates them into a table, plots and a report, failed
runs are marked in their cells, and cancelling the experiment cancels its runs."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from noisefa.engine.contract.states import TERMINAL_STATES
from noisefa.testing.jobs_http import children, submit, wait_job
from noisefa.testing.specs import experiment_spec, train_body
from noisefa.testing.waiting import wait_for

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NOISE: dict[str, Any] = {}  # the spec's default noise pretraining: the claim is about it


def experiment_body(**overrides: Any) -> dict[str, Any]:
    conditions = {
        "bp": {"model": {"rule": "bp"}},
        "fa": {"model": {"rule": "fa"}},
        "fa+noise": {"model": {"rule": "fa"}, "pretrain": NOISE},
    }
    return experiment_spec(
        train_body(), **{"conditions": conditions, "target_accuracy": 0.5, **overrides}
    )


@pytest.fixture(scope="module")
def experiment(http: httpx.Client) -> dict[str, Any]:
    job = submit(http, experiment_body())
    return wait_job(http, job["id"])


def test_experiment_succeeds_with_a_complete_table(experiment: dict[str, Any]):
    assert experiment["state"] == "succeeded", experiment.get("error")
    conditions = experiment["result"]["conditions"]
    assert set(conditions) == {"bp", "fa", "fa+noise"}
    for name, entry in conditions.items():
        assert entry["state"] == "succeeded", (name, entry["cells"])
        assert entry["seeds_succeeded"] == 2
        assert set(entry["final_test_accuracy"]) == {"mean", "std"}
        assert len(entry["test_accuracy_by_epoch"]) == 3  # epochs 0, 1, 2
        assert entry["alignment_angle"]["final"] is not None
    assert conditions["fa+noise"]["alignment_angle"]["after_pretrain"] is not None
    assert [row["condition"] for row in experiment["result"]["table"]] == ["bp", "fa", "fa+noise"]


def test_noise_pretraining_puts_fa_ahead_after_the_first_epoch(experiment: dict[str, Any]):
    conditions = experiment["result"]["conditions"]
    after_one = {name: c["test_accuracy_by_epoch"][1] for name, c in conditions.items()}
    assert after_one["fa+noise"] > after_one["fa"] + 0.1, after_one


def test_report_and_plots_are_artifacts(http: httpx.Client, experiment: dict[str, Any]):
    names = {a["name"] for a in http.get(f"/v1/jobs/{experiment['id']}/artifacts").json()["items"]}
    plots = {"test_accuracy.png", "alignment_angle.png", "eff_dim.png"}
    assert {"report.json", "report.md"} | plots <= names
    for plot in plots:
        data = http.get(f"/v1/jobs/{experiment['id']}/artifacts/{plot}").content
        assert data.startswith(PNG_MAGIC) and len(data) > 1000, plot
    report = json.loads(http.get(f"/v1/jobs/{experiment['id']}/artifacts/report.json").content)
    assert report["conditions"]["fa"]["final_test_accuracy"]["mean"] == pytest.approx(
        experiment["result"]["conditions"]["fa"]["final_test_accuracy"]["mean"]
    )
    markdown = http.get(f"/v1/jobs/{experiment['id']}/artifacts/report.md").text
    assert "| fa+noise |" in markdown


def test_runs_are_child_jobs_listed_by_parent_id(http: httpx.Client, experiment: dict[str, Any]):
    runs = children(http, experiment["id"])
    assert len(runs) == 6
    assert {(r["condition"], r["spec"]["model"]["seed"]) for r in runs} == {
        (c, s) for c in ("bp", "fa", "fa+noise") for s in (0, 1)
    }
    assert all(r["state"] == "succeeded" and r["parent_id"] == experiment["id"] for r in runs)
    assert experiment["result"]["runs"]["fa"] == [
        r["id"]
        for r in sorted(runs, key=lambda r: r["spec"]["model"]["seed"])
        if r["condition"] == "fa"
    ]


def test_a_failed_run_marks_its_cell_and_the_rest_aggregate(http: httpx.Client):
    body = experiment_body(
        conditions={"fa": {}, "too-slow": {"train": {"epochs": 500}, "time_limit_s": 1}},
        seeds=[0],
    )
    body["base"]["train"]["epochs"] = 1
    done = wait_job(http, submit(http, body)["id"])
    assert done["state"] == "succeeded", done.get("error")
    conditions = done["result"]["conditions"]
    assert conditions["fa"]["state"] == "succeeded"
    [cell] = conditions["too-slow"]["cells"]
    assert cell["state"] == "failed"
    assert cell["reason"] == "time_limit"
    assert "wall-clock limit" in cell["message"]


def test_cancelling_the_experiment_cancels_its_runs(http: httpx.Client):
    long_run = {"train": {"epochs": 200}}
    body = experiment_body(conditions={"a": long_run, "b": long_run}, seeds=[0, 1])
    parent = submit(http, body)
    wait_job(http, parent["id"], {"running"})
    wait_for_running_child(http, parent["id"])
    answer = http.post(f"/v1/jobs/{parent['id']}/cancel")
    assert answer.status_code == 200, answer.text
    assert answer.json()["state"] in {"cancelling", "cancelled"}
    done = wait_job(http, parent["id"], deadline_s=60)
    assert done["state"] == "cancelled"
    runs = children(http, parent["id"])
    assert len(runs) == 4
    assert {r["state"] for r in runs} <= {"cancelled", "succeeded"}
    assert "cancelled" in {r["state"] for r in runs}


def wait_for_running_child(http: httpx.Client, parent_id: str, deadline_s: float = 60) -> None:
    """Until a run of the experiment is training (none may have ended yet)."""

    def a_run_is_training() -> bool:
        states = {r["state"] for r in children(http, parent_id)}
        assert not states & TERMINAL_STATES, states
        return "running" in states

    wait_for(a_run_is_training, deadline_s, "a run of the experiment to start", poll_s=0.25)
