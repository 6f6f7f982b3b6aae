"""Input at the edges of what the API can hold is a 4xx problem naming the field, never a
5xx, and a refused request stores nothing: lone surrogates, dates that leave the calendar in
UTC, integers no column holds, non-JSON bodies, duplicate keys, loose spec types, unknown
query parameters and NULs in upload names."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from sqlalchemy import func, select

from noisefa.service.models import Dataset, Job
from noisefa.service.repositories import execution
from noisefa.service.repositories.projects import project_for_key
from noisefa.testing.specs import experiment_spec, pretrain_spec, train_spec

PROBLEM = "application/problem+json"
JSON = {"content-type": "application/json"}
# The escape sequence as a client writes it in the JSON text (json.dumps writes it too).
SURROGATE = "\\ud800"


def stored_rows(app) -> tuple[int, int]:
    """Jobs and datasets in the database, counted in a fresh session."""
    with app.state.sessionmaker() as db:
        jobs = db.scalar(select(func.count()).select_from(Job))
        datasets = db.scalar(select(func.count()).select_from(Dataset))
    return jobs, datasets


@contextmanager
def nothing_stored(app) -> Iterator[None]:
    before = stored_rows(app)
    yield
    assert stored_rows(app) == before, "a refused request stored a job or a dataset"


def assert_problem(response, status: int, field: str) -> dict:
    """``response`` is a ``status`` problem whose ``errors`` name ``field``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["status"] == status
    assert field in [error["field"] for error in problem["errors"]], problem
    return problem


@pytest.fixture
def job_id(client, headers) -> str:
    """A succeeded job of the caller's project (its event stream ends at once)."""
    job = client.post("/v1/jobs", json=pretrain_spec(), headers=headers).json()["id"]
    with client.app.state.sessionmaker() as db:
        attempt = execution.start_attempt(db, job)
        execution.finish(db, attempt, "succeeded", result={"loss": 0.5})
    return job


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (f'{{"kind":"pretrain","pretrain":{{"dataset":"digits{SURROGATE}"}}}}', "pretrain.dataset"),
        (
            f'{{"kind":"train","train":{{"dataset":"digits"}},"init_from":"{SURROGATE}"}}',
            "init_from",
        ),
        (f'{{"kind":"pretrain","pretrain":{{"dataset":"digits"}},"{SURROGATE}x":1}}', "\ufffdx"),
        (
            f'{{"kind":"evaluate","init_from":"j","datasets":["digits","{SURROGATE}"]}}',
            "datasets[1]",
        ),
        (
            json.dumps(experiment_spec(train_spec(), conditions={"fa": {"device": "\ud800"}})),
            "conditions.fa.device",
        ),
    ],
)
def test_a_lone_surrogate_anywhere_in_a_spec_is_a_422_naming_it(client, headers, body, field):
    assert SURROGATE in body
    with nothing_stored(client.app):
        refused = client.post("/v1/jobs", content=body, headers={**headers, **JSON})
        problem = assert_problem(refused, 422, field)
    assert "surrogate" in problem["errors"][0]["message"]
    assert client.get("/v1/jobs", headers=headers).status_code == 200


def test_a_row_stored_with_a_lone_surrogate_is_still_listed(client, headers, settings):
    if not settings.database_url.startswith("sqlite"):
        pytest.skip("Postgres refuses a lone surrogate in JSON: such a row cannot exist")
    job = client.post("/v1/jobs", json=pretrain_spec(), headers=headers).json()["id"]
    with client.app.state.sessionmaker() as db:
        row = db.get(Job, job)
        row.spec = {**row.spec, "init_from": "old\ud800row"}
        row.result = {"\udfffnote": "kept"}
        db.commit()
    listed = client.get("/v1/jobs", headers=headers)
    assert listed.status_code == 200
    (item,) = listed.json()["items"]
    assert item["spec"]["init_from"] == "old\ufffdrow"
    assert item["result"] == {"\ufffdnote": "kept"}
    assert client.get(f"/v1/jobs/{job}", headers=headers).status_code == 200


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("created_before", "0001-01-01T00:00:00+14:00"),
        ("created_after", "9999-12-31T23:59:59-14:00"),
    ],
)
def test_a_date_that_leaves_the_calendar_in_utc_is_a_422_naming_it(client, headers, name, value):
    response = client.get("/v1/jobs", headers=headers, params={name: value})
    assert_problem(response, 422, name)


@pytest.mark.parametrize("name", ["epoch_min", "epoch_max"])
@pytest.mark.parametrize("value", [str(10**23), str(2**31)])
def test_an_epoch_no_integer_column_holds_is_a_422_naming_it(client, headers, job_id, name, value):
    response = client.get(f"/v1/jobs/{job_id}/metrics", headers=headers, params={name: value})
    assert_problem(response, 422, name)


def test_the_largest_epoch_an_integer_column_holds_is_a_filter(client, headers, job_id):
    response = client.get(
        f"/v1/jobs/{job_id}/metrics", headers=headers, params={"epoch_min": str(2**31 - 1)}
    )
    assert response.status_code == 200
    assert response.json()["items"] == []


@pytest.mark.parametrize("last_event_id", ["99999999999999999999999999", "-1", "abc"])
def test_a_last_event_id_that_is_no_event_id_is_a_422_before_the_stream(
    client, headers, job_id, last_event_id
):
    with client.stream(
        "GET", f"/v1/jobs/{job_id}/events", headers={**headers, "Last-Event-ID": last_event_id}
    ) as response:
        response.read()
    assert_problem(response, 422, "Last-Event-ID")


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
def test_a_body_that_is_not_sent_as_json_is_a_415_naming_the_content_type(
    client, headers, content_type
):
    body = json.dumps(pretrain_spec())
    with nothing_stored(client.app):
        response = client.post(
            "/v1/jobs", content=body, headers={**headers, "content-type": content_type}
        )
        assert_problem(response, 415, "Content-Type")


def test_a_json_body_sent_as_a_json_subtype_is_taken(client, headers):
    body = json.dumps(pretrain_spec())
    response = client.post(
        "/v1/jobs", content=body, headers={**headers, "content-type": "application/merge+json"}
    )
    assert response.status_code == 202, response.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"kind":"pretrain","kind":"train","pretrain":{"dataset":"digits"}}', "kind"),
        (
            '{"kind":"pretrain","pretrain":{"dataset":"digits","epochs":1,"epochs":900}}',
            ("pretrain.epochs"),
        ),
        (
            '{"kind":"experiment","base":{"kind":"train","train":{"dataset":"digits"}},'
            '"conditions":{"a":{"model":{"rule":"bp","rule":"fa"}}}}',
            "conditions.a.model.rule",
        ),
    ],
)
def test_a_duplicate_key_is_a_422_naming_its_path(client, headers, body, field):
    with nothing_stored(client.app):
        response = client.post("/v1/jobs", content=body, headers={**headers, **JSON})
        problem = assert_problem(response, 422, field)
    assert "duplicate" in problem["errors"][0]["message"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"model": {"hidden": [True]}}, "model.hidden[0]"),
        ({"model": {"hidden": ["16"]}}, "model.hidden[0]"),
        ({"model": {"batch_norm": 1}}, "model.batch_norm"),
        ({"model": {"seed": 1.0}}, "model.seed"),
        ({"pretrain": {"dataset": "digits", "optimizer": {"lr": "0.1"}}}, "pretrain.optimizer.lr"),
        ({"pretrain": {"dataset": "digits", "epochs": "2"}}, "pretrain.epochs"),
        ({"pretrain": {"dataset": "digits", "noise": {"std": False}}}, "pretrain.noise.std"),
    ],
)
def test_spec_numbers_and_booleans_are_strict(client, headers, change, field):
    with nothing_stored(client.app):
        response = client.post("/v1/jobs", json={**pretrain_spec(), **change}, headers=headers)
        assert_problem(response, 422, field)


def test_an_integer_learning_rate_and_listed_betas_are_still_taken(client, headers):
    optimizer = {"lr": 1, "betas": [0.5, 0.9]}
    spec = pretrain_spec()
    spec["pretrain"]["optimizer"] = optimizer
    response = client.post("/v1/jobs", json=spec, headers=headers)
    assert response.status_code == 202, response.text
    taken = response.json()["spec"]["pretrain"]["optimizer"]
    assert (taken["lr"], taken["betas"]) == (1.0, [0.5, 0.9])


@pytest.mark.parametrize(
    ("method", "path", "params"),
    [
        ("GET", "/v1/jobs", {"stat": "failed"}),
        ("GET", "/v1/jobs/{job}", {"verbose": "1"}),
        ("GET", "/v1/jobs/{job}/metrics", {"epoch": "1"}),
        ("GET", "/v1/datasets", {"page_size": "1"}),
        ("GET", "/v1/presets", {"name": "comparison"}),
        ("GET", "/healthz", {"deep": "1"}),
        ("POST", "/v1/jobs/{job}/cancel", {"force": "1"}),
    ],
)
def test_an_unknown_query_parameter_is_a_422_naming_it(
    client, headers, job_id, method, path, params
):
    url = path.format(job=job_id)
    response = client.request(method, url, headers=headers, params=params)
    problem = assert_problem(response, 422, next(iter(params)))
    assert "unknown query parameter" in problem["errors"][0]["message"]


def test_a_submission_with_an_unknown_query_parameter_stores_nothing(client, headers):
    with nothing_stored(client.app):
        response = client.post(
            "/v1/jobs", json=pretrain_spec(), headers=headers, params={"dry_run": "1"}
        )
        assert_problem(response, 422, "dry_run")


def test_declared_query_parameters_are_still_taken(client, headers, job_id):
    listed = client.get("/v1/jobs", headers=headers, params={"state": "succeeded", "page_size": 5})
    assert [item["id"] for item in listed.json()["items"]] == [job_id]


def valid_npz() -> bytes:
    """A dataset the upload route would store (two classes, a few rows)."""
    buffer = io.BytesIO()
    x = np.zeros((8, 4), dtype=np.float32)
    np.savez(buffer, x_train=x, y_train=np.arange(8) % 2, x_test=x, y_test=np.arange(8) % 2)
    return buffer.getvalue()


def multipart(filename: bytes, data: bytes) -> bytes:
    """A form with one ``file`` part named ``filename`` exactly (clients escape NULs)."""
    head = b'--B\r\nContent-Disposition: form-data; name="file"; filename="' + filename
    return head + b'"\r\nContent-Type: application/octet-stream\r\n\r\n' + data + b"\r\n--B--\r\n"


def test_a_nul_in_an_upload_filename_is_a_422_and_stores_nothing(client, headers, settings):
    form = {**headers, "content-type": "multipart/form-data; boundary=B"}
    taken = client.post("/v1/datasets", content=multipart(b"ok.npz", valid_npz()), headers=form)
    assert taken.status_code == 201, taken.text  # the same file under a clean name is stored
    with nothing_stored(client.app):
        refused = client.post(
            "/v1/datasets", content=multipart(b"bad\x00.npz", valid_npz()), headers=form
        )
        assert_problem(refused, 422, "file.filename")
    key = headers["Authorization"].removeprefix("Bearer ")
    with client.app.state.sessionmaker() as db:
        project = project_for_key(db, key)
        names = db.scalars(select(Dataset.name).where(Dataset.project_id == project.id))
        assert list(names) == ["ok.npz"]
