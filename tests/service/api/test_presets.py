"""``GET /v1/presets`` marks what this deployment can run as shipped, by the submit rule:
a preset marked available is accepted, one marked unavailable is refused naming the datasets
it lacks, and with only the bundled ``digits`` every study still has a preset that runs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from noisefa.engine.contract.catalogue import known_datasets
from noisefa.service.repositories import workers as worker_repo

STUDIES = ("comparison", "ood", "adaptation", "rules_matrix")


@pytest.fixture
def workers_hold(session) -> Iterator:
    """Register a live ``cpu`` worker holding the given built-ins (removed afterwards)."""
    registered = []

    def hold(datasets: list[str]) -> None:
        worker_id = f"presets-{len(registered)}"
        worker_repo.register_worker(
            session, worker_id, hostname="h", pid=1, queues=["cpu"], datasets=datasets
        )
        registered.append(worker_id)

    yield hold
    for worker_id in registered:
        worker_repo.deregister_worker(session, worker_id)


def presets(client, headers) -> dict[str, dict]:
    response = client.get("/v1/presets", headers=headers)
    assert response.status_code == 200, response.text
    return {p["name"]: p for p in response.json()["items"]}


def test_with_only_digits_the_mnist_presets_are_unavailable_naming_the_sets(
    client, headers, workers_hold
):
    workers_hold(["digits"])
    listed = presets(client, headers)
    adaptation = listed["adaptation"]
    assert adaptation["available"] is False
    assert adaptation["missing_datasets"] == ["fashion_mnist", "kmnist", "mnist"]
    answer = client.post("/v1/jobs", json=adaptation["body"], headers=headers)
    assert answer.status_code == 422, answer.text
    refused = " ".join(error["message"] for error in answer.json()["errors"])
    for dataset in adaptation["missing_datasets"]:
        assert repr(dataset) in refused


def test_with_only_digits_every_study_has_a_preset_the_api_accepts(client, headers, workers_hold):
    workers_hold(["digits"])
    listed = presets(client, headers)
    for study in STUDIES:
        available = [p for p in listed.values() if p["study"] == study and p["available"]]
        assert available, study
    for name, preset in listed.items():
        if preset["available"]:
            assert preset["missing_datasets"] == []
            answer = client.post("/v1/jobs", json=preset["body"], headers=headers)
            assert answer.status_code == 202, (name, answer.text)


def test_where_the_workers_hold_every_set_every_preset_is_available(client, headers, workers_hold):
    workers_hold(list(known_datasets()))
    listed = presets(client, headers)
    assert all(p["available"] and not p["missing_datasets"] for p in listed.values())
