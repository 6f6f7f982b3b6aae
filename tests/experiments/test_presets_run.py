"""Every preset the deployment marks available runs as shipped: on the experiments stack
(an empty data folder, so only the bundled ``digits``) each is submitted and succeeds with
all its runs, and the OOD preset's ``evaluate`` body runs on one of its checkpoints.

CI-sized through one documented override (:func:`ci_sized`): fewer seeds, one data epoch
and fewer noise samples. Everything else is the preset's own body: its conditions, model,
optimizers, meta-loss tasks and evaluate shifts.
"""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest

from noisefa.testing.jobs_http import children, submit, wait_job

CI_SEEDS = [0, 1]  # two seeds, so the paired statistics have a spread
CI_NOISE_EPOCHS, CI_NOISE_SAMPLES = 2, 2048
DEADLINE_S = 600.0


def ci_sized(body: dict[str, Any]) -> dict[str, Any]:
    """The preset's body at CI size: seeds :data:`CI_SEEDS`, one data epoch (checkpointed),
    at most :data:`CI_NOISE_EPOCHS` noise epochs of :data:`CI_NOISE_SAMPLES` samples."""
    body = copy.deepcopy(body)
    body["seeds"] = CI_SEEDS
    base = body["base"]
    base["train"]["epochs"] = base["checkpoint_every"] = 1
    for condition in body["conditions"].values():
        pretrain = condition.get("pretrain")
        if pretrain is not None:
            pretrain["epochs"] = min(pretrain["epochs"], CI_NOISE_EPOCHS)
            pretrain["samples_per_epoch"] = CI_NOISE_SAMPLES
    return body


def available_presets(http: httpx.Client) -> dict[str, dict[str, Any]]:
    response = http.get("/v1/presets")
    assert response.status_code == 200, response.text
    return {p["name"]: p for p in response.json()["items"] if p["available"]}


@pytest.fixture(scope="module")
def finished(http: httpx.Client) -> dict[str, dict[str, Any]]:
    """Every available preset submitted at once, then each waited for: name → final job."""
    presets = available_presets(http)
    submitted = {name: submit(http, ci_sized(p["body"]))["id"] for name, p in presets.items()}
    return {
        name: wait_job(http, job_id, deadline_s=DEADLINE_S) for name, job_id in submitted.items()
    }


def test_with_only_digits_each_study_has_an_available_preset(http: httpx.Client):
    studies = {p["study"] for p in available_presets(http).values()}
    assert {"comparison", "ood", "adaptation", "rules_matrix", "noise_ablation"} <= studies


def test_every_available_preset_succeeds_with_every_run(
    http: httpx.Client, finished: dict[str, dict[str, Any]]
):
    presets = available_presets(http)
    assert set(finished) == set(presets)
    for name, job in finished.items():
        assert job["state"] == "succeeded", (name, job.get("error"))
        conditions = job["result"]["conditions"]
        # A set: Postgres' JSONB orders an object's keys by length (report.json keeps the order).
        assert set(conditions) == set(presets[name]["body"]["conditions"]), name
        assert all(c["state"] == "succeeded" for c in conditions.values()), (name, conditions)
        runs = children(http, job["id"])
        assert len(runs) == len(conditions) * len(CI_SEEDS)
        assert all(run["state"] == "succeeded" for run in runs), name
        (first_pair, *_) = job["result"]["paired"]
        assert first_pair["metrics"]["final_test_accuracy"]["n"] == len(CI_SEEDS), name


def test_the_adaptation_preset_records_its_meta_loss(
    http: httpx.Client, finished: dict[str, dict[str, Any]]
):
    run = next(
        r
        for r in children(http, finished["adaptation_digits"]["id"])
        if r["condition"] == "fa+noise"
    )
    points = http.get(f"/v1/jobs/{run['id']}/metrics", params={"name": "meta_loss"}).json()
    phases = {p["phase"] for p in points["items"]}
    assert phases == {"pretrain", "train"}, points


def test_the_ood_preset_s_evaluate_body_runs_on_one_of_its_runs(
    http: httpx.Client, finished: dict[str, dict[str, Any]]
):
    preset = available_presets(http)["ood"]
    run = next(r for r in children(http, finished["ood"]["id"]) if r["condition"] == "fa+noise")
    evaluate = submit(http, {**preset["evaluate"], "init_from": run["id"]})
    job = wait_job(http, evaluate["id"], deadline_s=DEADLINE_S)
    assert job["state"] == "succeeded", job.get("error")
