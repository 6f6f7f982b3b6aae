"""Jobs whose estimated memory or compute is over the deployment's limits are refused at
submit (422 naming the limit, the estimate and the field), and nothing is stored."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest

from noisefa.engine.contract.estimates import DatasetSize, builtin_sizes, estimate_job
from noisefa.engine.contract.experiment_spec import ExperimentSpec, expand_experiment
from noisefa.engine.contract.presets import PRESETS
from noisefa.engine.contract.spec import parse_spec
from noisefa.service.settings import Settings
from noisefa.testing.specs import experiment_spec, pretrain_spec, train_spec

# issue 10: 8 × 4096 hidden layers and 10⁷ noise samples × 1000 epochs, at default limits.
HUGE_MODEL = {"hidden": [4096] * 8}
HUGE_NOISE = {"dataset": "digits", "epochs": 1000, "samples_per_epoch": 10**7}


def submit(client, headers, body: dict[str, Any]):
    return client.post("/v1/jobs", json=body, headers=headers)


def stored_jobs(client, headers) -> list[dict]:
    return client.get("/v1/jobs", headers=headers).json()["items"]


def refusal(response) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return response.json()


def test_the_reported_wide_batch_job_is_refused_for_memory_at_the_defaults(client, headers):
    body = {
        "kind": "pretrain",
        "model": HUGE_MODEL,
        "pretrain": {**HUGE_NOISE, "batch_size": 65_536},
    }
    problem = refusal(submit(client, headers, body))
    fields = {error["field"]: error["message"] for error in problem["errors"]}
    assert set(fields) == {"pretrain.batch_size", "pretrain"}  # memory and compute both
    memory = fields["pretrain.batch_size"]
    assert "max_job_memory_bytes = 8.0 GiB (8,589,934,592 bytes)" in memory
    assert "GiB (" in memory.split("estimated ")[1]  # the estimate, human and exact
    assert "max_job_memory_bytes" in problem["detail"] and "max_job_compute" in problem["detail"]
    assert stored_jobs(client, headers) == []


def test_the_reported_long_job_is_refused_for_compute_at_the_defaults(client, headers):
    body = {"kind": "pretrain", "model": HUGE_MODEL, "pretrain": {**HUGE_NOISE, "batch_size": 64}}
    problem = refusal(submit(client, headers, body))
    [error] = problem["errors"]
    assert error["field"] == "pretrain"
    assert "max_job_compute = 1e15 multiply-adds (1,000,000,000,000,000)" in error["message"]
    spec = parse_spec(body)
    estimate = estimate_job(spec, builtin_sizes()).compute
    assert f"({estimate:,})" in error["message"]
    assert stored_jobs(client, headers) == []


@pytest.mark.parametrize(
    ("setting", "field"),
    [("max_job_memory_bytes", "train.dataset"), ("max_job_compute", "train")],
)
def test_a_lowered_limit_refuses_a_small_job_and_the_limit_itself_is_accepted(
    client, headers, settings, monkeypatch, setting, field
):
    body = train_spec(epochs=10, model={"hidden": [8]})
    estimate = estimate_job(parse_spec(body), builtin_sizes())
    needed = estimate.memory_bytes if setting == "max_job_memory_bytes" else estimate.compute
    monkeypatch.setattr(settings, setting, needed - 1)
    problem = refusal(submit(client, headers, body))
    [error] = problem["errors"]
    assert error["field"] == field
    assert setting in error["message"] and f"{needed:,}" in error["message"]
    assert stored_jobs(client, headers) == []
    monkeypatch.setattr(settings, setting, needed)
    assert submit(client, headers, body).status_code == 202


def test_an_experiment_is_refused_naming_the_condition_whose_child_is_too_big(
    client, headers, settings, monkeypatch
):
    body = experiment_spec(pretrain_spec(model={"hidden": [8]}))
    body["conditions"]["wide"] = {"model": {"hidden": [512, 512]}}
    monkeypatch.setattr(settings, "max_job_compute", 10**10)  # the [8] children need ~1e8
    problem = refusal(submit(client, headers, body))
    assert [error["field"] for error in problem["errors"]] == ["conditions.wide.pretrain"]
    assert stored_jobs(client, headers) == []


def tiny_upload(train_size: int) -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        x_train=rng.random((train_size, 4), dtype=np.float32),
        y_train=np.arange(train_size) % 2,
        x_test=rng.random((10, 4), dtype=np.float32),
        y_test=np.arange(10) % 2,
    )
    return buffer.getvalue()


def test_an_upload_is_estimated_from_its_stored_sizes(client, headers, settings, monkeypatch):
    response = client.post(
        "/v1/datasets", files={"file": ("set.npz", tiny_upload(2000))}, headers=headers
    )
    assert response.status_code == 201, response.text
    name = f"upload:{response.json()['id']}"
    body = {"kind": "train", "model": {"hidden": [8]}, "train": {"dataset": name, "epochs": 3}}
    sizes = {name: DatasetSize((4,), 2, 2000, 10)}
    needed = estimate_job(parse_spec(body), sizes).compute
    monkeypatch.setattr(settings, "max_job_compute", needed - 1)
    problem = refusal(submit(client, headers, body))
    assert f"({needed:,})" in problem["errors"][0]["message"]
    assert stored_jobs(client, headers) == []
    monkeypatch.setattr(settings, "max_job_compute", needed)
    assert submit(client, headers, body).status_code == 202


def test_every_preset_and_typical_mnist_jobs_fit_the_default_limits():
    defaults = Settings.model_fields
    memory = defaults["max_job_memory_bytes"].default
    compute = defaults["max_job_compute"].default
    sizes = builtin_sizes()
    specs = [
        child
        for entry in PRESETS.values()
        for runs in expand_experiment(ExperimentSpec.model_validate(entry["body"])).values()
        for child in runs
    ]
    for hidden, batch, epochs in (([100], 64, 20), ([1000, 1000], 4096, 100), ([4096], 256, 50)):
        body = {"kind": "train", "model": {"hidden": hidden}}
        body["train"] = {"dataset": "mnist", "batch_size": batch, "epochs": epochs}
        specs.append(parse_spec(body))
    for spec in specs:
        estimate = estimate_job(spec, sizes)
        assert estimate.memory_bytes <= memory, (spec, estimate.largest_memory)
        assert estimate.compute <= compute, (spec, estimate.largest_compute)
