"""``POST /v1/datasets`` under the deployment's limits: a compression bomb is a 413 naming
``max_upload_uncompressed_bytes``, what a job could not train on is a 422 naming the array,
the project's storage quota refuses uploads (413) and jobs (429) with its figures, and a
refused upload stores nothing."""

from __future__ import annotations

import io

import numpy as np
import pytest
from sqlalchemy import func, select

from noisefa.service.models import Dataset
from noisefa.service.repositories.projects import project_for_key
from noisefa.testing.specs import train_spec


def npz(compressed: bool = False, **changes: np.ndarray) -> bytes:
    rng = np.random.default_rng(0)
    named = {
        "x_train": rng.random((20, 4), dtype=np.float32),
        "y_train": np.arange(20) % 3,
        "x_test": rng.random((6, 4), dtype=np.float32),
        "y_test": np.arange(6) % 3,
    } | changes
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **named)
    return buffer.getvalue()


def upload(client, headers, data: bytes):
    return client.post("/v1/datasets", files={"file": ("set.npz", data)}, headers=headers)


def stored(app, session, headers) -> tuple[int, list[str]]:
    """The project's upload rows and dataset objects."""
    project_id = project_for_key(session, headers["Authorization"].removeprefix("Bearer ")).id
    rows = session.scalar(
        select(func.count()).select_from(Dataset).where(Dataset.project_id == project_id)
    )
    return rows, app.state.storage.list(f"{project_id}/datasets/")


def refused(response, status: int, field: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["errors"][0]["field"] == field, problem
    assert field in problem["detail"]
    return problem


def test_a_compression_bomb_is_a_413_naming_the_unpacked_limit(
    client, headers, settings, monkeypatch, app, session
):
    monkeypatch.setattr(settings, "max_upload_uncompressed_bytes", 4_000_000)
    bomb = npz(True, x_train=np.zeros((1_000_000, 8), np.float32))  # 32 MB in ~32 kB
    assert len(bomb) < 100_000
    refused(upload(client, headers, bomb), 413, "max_upload_uncompressed_bytes")
    assert stored(app, session, headers) == (0, [])


def test_a_member_packed_past_the_ratio_is_a_413_naming_it(client, headers, app, session):
    packed = npz(True, x_train=np.zeros((200_000, 8), np.float32))  # 6.4 MB of zeros
    refused(upload(client, headers, packed), 413, "max_upload_compression_ratio")
    assert stored(app, session, headers) == (0, [])


CANNOT_TRAIN = {
    "label-at-num-classes": ({"num_classes": np.int64(2)}, "y_train"),
    "zero-size-feature": ({"x_train": np.ones((20, 0)), "x_test": np.ones((6, 0))}, "x_train"),
    "empty-train-split": (
        {"x_train": np.ones((0, 4)), "y_train": np.zeros(0, np.int64)},
        "x_train",
    ),
    "num-classes-over-max": ({"num_classes": np.int64(11)}, "num_classes"),
}


@pytest.mark.parametrize("case", CANNOT_TRAIN)
def test_what_a_job_could_not_train_on_is_a_422_naming_the_array(
    client, headers, settings, monkeypatch, app, session, case
):
    monkeypatch.setattr(settings, "max_classes", 10)
    changes, field = CANNOT_TRAIN[case]
    problem = refused(upload(client, headers, npz(**changes)), 422, field)
    if case == "num-classes-over-max":
        assert "max_classes (10)" in problem["detail"]
    assert stored(app, session, headers) == (0, [])


def test_an_upload_at_the_limits_is_stored(client, headers, settings, monkeypatch, app, session):
    data = npz(num_classes=np.int64(10))
    monkeypatch.setattr(settings, "max_classes", 10)
    monkeypatch.setattr(settings, "max_project_bytes", len(data))
    response = upload(client, headers, data)
    assert response.status_code == 201, response.text
    assert response.json()["num_classes"] == 10
    assert stored(app, session, headers)[0] == 1


def test_a_builtin_with_more_classes_than_max_classes_is_refused_at_submit(
    client, headers, settings, monkeypatch
):
    monkeypatch.setattr(settings, "max_classes", 5)
    response = client.post("/v1/jobs", json=train_spec(), headers=headers)  # digits: 10
    problem = refused(response, 422, "train.dataset")
    assert "max_classes (5)" in problem["detail"]


def test_an_upload_past_the_project_quota_is_a_413_with_the_figures(
    client, headers, settings, monkeypatch, app, session
):
    first = npz()
    monkeypatch.setattr(settings, "max_project_bytes", len(first) + 100)
    assert upload(client, headers, first).status_code == 201
    problem = refused(upload(client, headers, npz()), 413, "max_project_bytes")
    assert f"stores {len(first)} bytes" in problem["detail"]
    assert str(len(first) + 100) in problem["detail"]
    assert stored(app, session, headers)[0] == 1


def test_a_job_submitted_while_over_the_quota_is_a_429_until_room_is_freed(
    client, headers, settings, monkeypatch
):
    data = npz()
    monkeypatch.setattr(settings, "max_project_bytes", len(data))
    dataset_id = upload(client, headers, data).json()["id"]
    problem = refused(
        client.post("/v1/jobs", json=train_spec(), headers=headers), 429, "max_project_bytes"
    )
    assert f"stores {len(data)} bytes" in problem["detail"]
    assert client.get("/v1/jobs", headers=headers).json()["items"] == []
    assert client.delete(f"/v1/datasets/{dataset_id}", headers=headers).status_code == 204
    assert client.post("/v1/jobs", json=train_spec(), headers=headers).status_code == 202
