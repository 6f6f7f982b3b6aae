"""Which datasets a job may name, checked at submit: built-ins the deployment can serve, the
project's own uploads, and server files only inside folders the operator allows. Every
refusal is a problem naming the field, stores nothing and echoes no server folder."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from noisefa.engine.contract.catalogue import builtin_files, builtins_on_disk, known_datasets
from noisefa.service.app import create_app
from noisefa.service.dataset_access import without_server_paths
from noisefa.service.models import Job
from noisefa.service.repositories import execution
from noisefa.service.repositories import workers as worker_repo
from noisefa.service.settings import Settings
from noisefa.testing.db import new_project_key
from noisefa.testing.npz_files import small_npz_bytes
from noisefa.testing.specs import experiment_spec, pretrain_spec, train_spec

TRAIN = train_spec(epochs=1, model={"hidden": [8]}, device="cpu")


def reading(name: str) -> dict[str, Any]:
    return {**TRAIN, "train": {"dataset": name, "epochs": 1}}


def job_count(client: TestClient) -> int:
    with client.app.state.sessionmaker() as session:
        return session.scalar(select(func.count()).select_from(Job))


def server_folders(settings: Settings) -> list[str]:
    """Folders of this deployment a caller must never read in an answer."""
    storage = Path(urlparse(settings.resolved_storage_url).path)
    return [str(settings.data_dir), str(storage), str(settings.resolved_work_dir)]


def refused(client: TestClient, headers: dict[str, str], body: dict, status: int = 422) -> dict:
    """Submit ``body``; assert it is refused with problem JSON and that no job was stored and
    no server folder the body did not name appears in the answer; the problem."""
    before = job_count(client)
    response = client.post("/v1/jobs", json=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert job_count(client) == before
    sent = json.dumps(body)
    for folder in server_folders(client.app.state.settings):
        if folder not in sent:
            assert folder not in response.text
    return response.json()


def fields(problem: dict) -> list[str]:
    return [error["field"] for error in problem["errors"]]


def succeeded_job(client: TestClient, headers: dict[str, str]) -> str:
    """A pretrain job of the caller's project, marked succeeded as a worker would."""
    job_id = client.post("/v1/jobs", json=pretrain_spec(), headers=headers).json()["id"]
    with client.app.state.sessionmaker() as session:
        attempt = execution.start_attempt(session, job_id)
        execution.finish(session, attempt, "succeeded", result={"final_checkpoint": "c"})
    return job_id


# -- server files: refused over the API unless the operator allows a folder ------------------

SERVER_FILE = "npz:/etc/noisefa/secret.npz"

FIELD_BODIES = {
    "train.dataset": lambda _: reading(SERVER_FILE),
    "pretrain.dataset": lambda _: {"kind": "pretrain", "pretrain": {"dataset": SERVER_FILE}},
    "train.meta_loss.tasks[1]": lambda _: {
        **TRAIN,
        "train": {"dataset": "digits", "meta_loss": {"tasks": ["digits", SERVER_FILE]}},
    },
    "datasets[0]": lambda source: {
        "kind": "evaluate",
        "init_from": source,
        "datasets": [SERVER_FILE],
    },
    "conditions.fa.pretrain.dataset": lambda _: experiment_spec(
        TRAIN, conditions={"fa": {"pretrain": {"dataset": SERVER_FILE}}}
    ),
}


@pytest.mark.parametrize("field", FIELD_BODIES)
def test_a_server_path_is_refused_in_every_field_without_allowed_folders(client, headers, field):
    source = succeeded_job(client, headers) if field == "datasets[0]" else None
    problem = refused(client, headers, FIELD_BODIES[field](source))
    assert fields(problem) == [field]
    assert "upload:<id>" in problem["errors"][0]["message"]
    assert "secret" not in json.dumps(problem)


@pytest.fixture(scope="module")
def folders(settings, tmp_path_factory) -> dict[str, Path]:
    """An allowed server folder holding one dataset, an empty data folder, and a file
    outside every allowed folder (fresh for each backend's ``settings``)."""
    root = tmp_path_factory.mktemp("server-data")
    folders = {"served": root / "served", "data": root / "data", "outside": root / "outside"}
    for folder in folders.values():
        folder.mkdir()
    (folders["served"] / "ok.npz").write_bytes(small_npz_bytes())
    (folders["outside"] / "private.npz").write_bytes(small_npz_bytes())
    return folders


def app_client(settings: Settings, **changes: Any) -> Iterator[TestClient]:
    with TestClient(create_app(settings.model_copy(update=changes))) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def embedded(settings, folders) -> Iterator[TestClient]:
    """The API in the embedded mode (no broker URL), an allowed folder, an empty data folder."""
    yield from app_client(
        settings, broker_url=None, server_data_roots=[folders["served"]], data_dir=folders["data"]
    )


@pytest.fixture(scope="module")
def production(settings, folders) -> Iterator[TestClient]:
    """The API on the suite's Redis broker (workers report their data), an empty data folder."""
    yield from app_client(settings, data_dir=folders["data"])


@pytest.fixture
def embedded_headers(settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {new_project_key(settings)}"}


def test_a_file_inside_an_allowed_folder_is_accepted(embedded, embedded_headers, folders):
    name = f"npz:{folders['served'] / 'ok.npz'}"
    response = embedded.post("/v1/jobs", json=reading(name), headers=embedded_headers)
    assert response.status_code == 202, response.text


def test_paths_that_leave_or_miss_the_allowed_folder_are_refused(
    embedded, embedded_headers, folders
):
    served, outside = folders["served"], folders["outside"]
    (served / "escape.npz").symlink_to(outside / "private.npz")
    (served / "inner.npz").symlink_to(served / "ok.npz")  # a link that stays inside is fine
    assert (
        embedded.post(
            "/v1/jobs", json=reading(f"npz:{served / 'inner.npz'}"), headers=embedded_headers
        ).status_code
        == 202
    )
    cases = {
        f"npz:{served}/../outside/private.npz": "without '..'",
        f"npz:{outside / 'private.npz'}": "not inside",
        f"npz:{served / 'escape.npz'}": "not inside",
        f"npz:{served / 'absent.npz'}": "no such file",
        f"npz:{served}": "no such file",
        "npz:served/ok.npz": "absolute path",
    }
    for name, why in cases.items():
        problem = refused(embedded, embedded_headers, reading(name))
        assert fields(problem) == ["train.dataset"], name
        assert why in problem["errors"][0]["message"], (name, problem)
        assert str(outside) not in json.dumps(problem) or str(outside) in name


# -- names: every one must be something the deployment serves ---------------------------------


@pytest.mark.parametrize("name", ["../../etc", "mnist/../x", "mnsit", "/etc/passwd", "upload"])
def test_an_unknown_name_is_refused_naming_the_field_and_the_builtins(client, headers, name):
    body = {**TRAIN, "train": {"dataset": "digits", "meta_loss": {"tasks": ["digits", name]}}}
    problem = refused(client, headers, body)
    assert fields(problem) == ["train.meta_loss.tasks[1]"]
    message = problem["errors"][0]["message"]
    assert all(builtin in message for builtin in known_datasets())


def test_every_refused_field_is_named_at_once(client, headers):
    base = {**TRAIN, "pretrain": {"dataset": "npz:/x.npz"}}
    conditions = {"a": {"train": {"dataset": "nope"}}, "b": {}}
    body = experiment_spec(base, conditions=conditions, seeds=[0])
    problem = refused(client, headers, body)
    assert sorted(fields(problem)) == [
        "conditions.a.pretrain.dataset",
        "conditions.a.train.dataset",
        "conditions.b.pretrain.dataset",
    ]


def test_a_builtin_whose_files_are_absent_is_refused_until_they_are_there(
    embedded, embedded_headers, folders
):
    problem = refused(embedded, embedded_headers, reading("mnist"))
    assert fields(problem) == ["train.dataset"]
    assert "lack its files" in problem["errors"][0]["message"]
    for path in builtin_files("mnist"):
        (folders["data"] / path).parent.mkdir(parents=True, exist_ok=True)
        (folders["data"] / path).write_bytes(b"")
    response = embedded.post("/v1/jobs", json=reading("mnist"), headers=embedded_headers)
    assert response.status_code == 202, response.text


def test_live_workers_of_the_queue_decide_which_builtins_are_served(
    production, embedded_headers, session, settings
):
    worker_id = "dataset-access-test"
    try:
        worker_repo.register_worker(
            session, worker_id, hostname="h", pid=1, queues=["cpu"], datasets=["digits", "cifar10"]
        )
        accepted = production.post("/v1/jobs", json=reading("cifar10"), headers=embedded_headers)
        assert accepted.status_code == 202, accepted.text  # the API's own data folder is empty
        problem = refused(production, embedded_headers, reading("stl10"))
        assert fields(problem) == ["train.dataset"]
    finally:
        worker_repo.deregister_worker(session, worker_id)


# -- another project's data --------------------------------------------------------------------


def test_another_projects_upload_is_404_and_its_stored_file_422(
    client, embedded, headers, other_headers, settings
):
    uploaded = client.post(
        "/v1/datasets", files={"file": ("set.npz", small_npz_bytes())}, headers=headers
    ).json()
    own = client.post("/v1/jobs", json=reading(uploaded["name"]), headers=headers)
    assert own.status_code == 202, own.text
    refused(client, other_headers, reading(uploaded["name"]), status=404)
    storage = Path(urlparse(settings.resolved_storage_url).path)
    stored = list(storage.rglob(f"{uploaded['id']}.npz"))
    assert stored, "the upload's object is a file under the storage folder"
    cached = settings.resolved_work_dir / "datasets" / f"{uploaded['id']}.npz"
    for path in (stored[0], cached):
        for api in (client, embedded):  # no folder allowed / another folder allowed
            problem = refused(api, other_headers, reading(f"npz:{path}"))
            assert fields(problem) == ["train.dataset"]


# -- the pieces --------------------------------------------------------------------------------


def test_mnist_like_sets_count_as_present_from_their_gz_release(tmp_path):
    for path in builtin_files("kmnist"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f"{path}.gz").write_bytes(b"")
    assert builtins_on_disk(tmp_path) == {"digits", "kmnist"}


def test_job_errors_name_settings_not_server_folders(tmp_path):
    settings = Settings(home=tmp_path / "home", data_dir=tmp_path / "data")
    message = f"dataset 'mnist' not found: expected x in {tmp_path / 'data' / 'MNIST' / 'raw'}"
    cleaned = without_server_paths(message, settings)
    assert cleaned == "dataset 'mnist' not found: expected x in <data_dir>/MNIST/raw"


def test_server_data_roots_are_read_as_a_list_and_must_be_absolute(monkeypatch):
    monkeypatch.setenv("NOISEFA_SERVER_DATA_ROOTS", "/srv/a:/srv/b")
    assert Settings().server_data_roots == [Path("/srv/a"), Path("/srv/b")]
    monkeypatch.setenv("NOISEFA_SERVER_DATA_ROOTS", '["/srv/c"]')
    assert Settings().server_data_roots == [Path("/srv/c")]
    monkeypatch.setenv("NOISEFA_SERVER_DATA_ROOTS", "relative/folder")
    with pytest.raises(ValueError, match="absolute"):
        Settings()
    monkeypatch.delenv("NOISEFA_SERVER_DATA_ROOTS")
    assert Settings().server_data_roots == []
