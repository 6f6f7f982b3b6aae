"""The API side of experiments, evaluation, presets and uploads, without a worker: what is
accepted at submit, and what is refused with problem JSON naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from noisefa.engine.contract.catalogue import known_datasets
from noisefa.service.repositories import workers as worker_repo
from noisefa.testing.specs import experiment_spec, train_spec

TRAIN = train_spec(epochs=1, model={"hidden": [8]}, device="cpu")


def experiment(**overrides: Any) -> dict[str, Any]:
    return experiment_spec(TRAIN, **overrides)


def fields(response) -> list[str]:
    assert response.headers["content-type"].startswith("application/problem+json")
    return [error["field"] for error in response.json()["errors"]]


def test_experiment_is_accepted_as_one_queued_job(client, headers):
    response = client.post("/v1/jobs", json=experiment(), headers=headers)
    assert response.status_code == 202, response.text
    job = response.json()
    assert (job["kind"], job["state"], job["parent_id"]) == ("experiment", "queued", None)
    listed = client.get("/v1/jobs", params={"parent_id": job["id"]}, headers=headers).json()
    assert listed["items"] == []  # its runs are created by a worker


def test_a_bad_condition_is_named_in_the_422(client, headers):
    body = experiment(conditions={"wide": {"model": {"hidden": [10**6]}}})
    response = client.post("/v1/jobs", json=body, headers=headers)
    assert response.status_code == 422
    assert any(f.startswith("conditions.wide.model.hidden") for f in fields(response))


def test_more_runs_than_max_experiment_runs_is_refused(client, headers, settings):
    too_many = settings.max_experiment_runs // 2 + 1
    response = client.post(
        "/v1/jobs", json=experiment(seeds=list(range(too_many))), headers=headers
    )
    assert response.status_code == 422
    assert "seeds" in fields(response)


def test_unknown_kind_is_named(client, headers):
    response = client.post("/v1/jobs", json={"kind": "magic"}, headers=headers)
    assert response.status_code == 422
    assert fields(response) == ["kind"]


@pytest.mark.parametrize(
    "body, field",
    [
        ({**TRAIN, "train": {"dataset": "upload:" + "0" * 32}}, "train.dataset"),
        (
            {"kind": "evaluate", "init_from": "x", "datasets": ["upload:nope"]},
            None,  # init_from is checked first
        ),
        (
            experiment(conditions={"up": {"train": {"dataset": "upload:nope"}}}),
            "conditions.up.train.dataset",
        ),
    ],
)
def test_an_upload_of_no_project_is_404(client, headers, body, field):
    response = client.post("/v1/jobs", json=body, headers=headers)
    assert response.status_code == 404, response.text
    if field is not None:
        assert fields(response) == [field]


def test_presets_are_bodies_the_api_accepts(client, headers, session):
    response = client.get("/v1/presets", headers=headers)
    assert response.status_code == 200
    presets = {p["name"]: p for p in response.json()["items"]}
    assert {"comparison", "ood", "adaptation"} <= set(presets)
    # A deployment whose workers hold every built-in the presets read.
    worker_repo.register_worker(
        session, "presets-test", hostname="h", pid=1, queues=["cpu"], datasets=known_datasets()
    )
    try:
        for name, preset in presets.items():
            assert preset["description"]
            answer = client.post("/v1/jobs", json=preset["body"], headers=headers)
            assert answer.status_code == 202, (name, answer.text)
    finally:
        worker_repo.deregister_worker(session, "presets-test")
    assert presets["ood"]["evaluate"]["kind"] == "evaluate"


def test_datasets_list_builtins_without_uploads(client, headers):
    items = client.get("/v1/datasets", headers=headers).json()["items"]
    assert {item["kind"] for item in items} == {"builtin"}
    assert {"digits", "mnist", "cifar10"} <= {item["name"] for item in items}
    assert client.get("/v1/datasets/" + "0" * 32, headers=headers).status_code == 404
