"""Dataset uploads through the real stack: a valid ``.npz`` is listed and trains a job as
``upload:<id>``; a file the engine refuses (pickled objects, wrong shapes, NaN, labels out of
range, not an npz, too large) answers problem JSON naming the array and stores nothing."""

from __future__ import annotations

import io
import uuid
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_digits
from sqlalchemy import func, select

from noisefa.service.models import Dataset
from noisefa.service.repositories.projects import create_project_key
from noisefa.testing.jobs_http import MAX_UPLOAD_BYTES, submit, wait_job
from noisefa.testing.specs import train_body
from noisefa.testing.stack import Stack


def digits_arrays() -> dict[str, np.ndarray]:
    """scikit-learn's digits as 8×8 uint8 images (small enough for the test's upload cap)."""
    digits = load_digits()
    images, labels = digits.images.astype(np.uint8), digits.target.astype(np.int64)
    return {
        "x_train": images[:1400],
        "y_train": labels[:1400],
        "x_test": images[1400:],
        "y_test": labels[1400:],
    }


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def upload(http: httpx.Client, data: bytes, **headers: str) -> httpx.Response:
    return http.post("/v1/datasets", files={"file": ("set.npz", data)}, headers=headers)


@pytest.fixture(scope="module")
def uploaded(http: httpx.Client) -> dict[str, Any]:
    response = upload(http, npz_bytes(digits_arrays()))
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"/v1/datasets/{response.json()['id']}"
    return response.json()


@pytest.fixture(scope="module")
def other_http(stack: Stack):
    with stack.sessions() as session:
        key = create_project_key(session, f"other-{uuid.uuid4().hex[:8]}")
    with httpx.Client(
        base_url=stack.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        yield client


def test_valid_upload_is_listed_with_its_shape(http: httpx.Client, uploaded: dict[str, Any]):
    assert uploaded["name"] == f"upload:{uploaded['id']}"
    assert uploaded["input_shape"] == [8, 8]
    assert uploaded["num_classes"] == 10
    assert (uploaded["train_size"], uploaded["test_size"]) == (1400, 397)
    items = http.get("/v1/datasets").json()["items"]
    assert uploaded in [item for item in items if item["kind"] == "upload"]
    builtins = {b["name"]: b for b in items if b["kind"] == "builtin"}
    assert builtins["digits"]["available"] and builtins["digits"]["input_shape"] == [64]
    assert not builtins["mnist"]["available"]  # the stack's data folder is empty


def test_a_job_trains_on_the_upload(http: httpx.Client, uploaded: dict[str, Any]):
    body = train_body(model={"hidden": [16], "seed": 0})
    body["train"] |= {"dataset": uploaded["name"], "epochs": 1}
    done = wait_job(http, submit(http, body)["id"])
    assert done["state"] == "succeeded", done.get("error")


def test_idempotency_key_answers_the_first_upload(http: httpx.Client):
    data = npz_bytes(digits_arrays())
    first = upload(http, data, **{"Idempotency-Key": "digits-once"})
    again = upload(http, data, **{"Idempotency-Key": "digits-once"})
    assert first.status_code == 201 and again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    other = upload(http, data[:-1] + b"x", **{"Idempotency-Key": "digits-once"})
    assert other.status_code == 422
    assert other.json()["errors"][0]["field"] == "Idempotency-Key"


def test_another_projects_upload_is_not_found(other_http: httpx.Client, uploaded: dict[str, Any]):
    assert other_http.get(f"/v1/datasets/{uploaded['id']}").status_code == 404
    assert uploaded["name"] not in {
        u["name"] for u in other_http.get("/v1/datasets").json()["items"]
    }
    body = train_body()
    body["train"]["dataset"] = uploaded["name"]
    response = other_http.post("/v1/jobs", json=body)
    assert response.status_code == 404
    assert response.json()["errors"][0]["field"] == "train.dataset"


def _with(**changes: Any) -> bytes:
    return npz_bytes(digits_arrays() | changes)


def _nan_images() -> dict[str, np.ndarray]:
    """Float images (a few hundred, to stay under the upload cap) with one NaN pixel."""
    arrays = digits_arrays()
    x = arrays["x_train"][:300].astype(np.float32)
    x[3, 2, 2] = np.nan
    return {"x_train": x, "y_train": arrays["y_train"][:300]}


BAD_UPLOADS = {
    "pickled-object-array": (
        lambda: _with(y_test=np.array([{"evil": 1}] * 397, dtype=object)),
        422,
        "y_test",
    ),
    "wrong-shape": (lambda: _with(y_train=np.zeros(5, dtype=np.int64)), 422, "y_train"),
    "nan": (lambda: _with(**_nan_images()), 422, "x_train"),
    "label-out-of-range": (
        lambda: _with(y_train=np.full(1400, -1, dtype=np.int64)),
        422,
        "y_train",
    ),
    "not-an-npz": (lambda: b"this is not a zip file" * 10, 422, "file"),
    "too-large": (lambda: b"\0" * (MAX_UPLOAD_BYTES + 1), 413, "max_upload_bytes"),
}


@pytest.mark.parametrize("case", BAD_UPLOADS)
def test_bad_upload_is_refused_and_nothing_is_stored(http: httpx.Client, stack: Stack, case):
    make, status, field = BAD_UPLOADS[case]
    before = _stored(stack)
    response = upload(http, make())
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["errors"][0]["field"] == field, problem
    assert field in problem["detail"]
    assert _stored(stack) == before


def _stored(stack: Stack) -> tuple[int, list[str]]:
    """Upload rows in the database and dataset objects in storage."""
    with stack.sessions() as session:
        rows = session.scalar(select(func.count()).select_from(Dataset))
    objects = sorted(str(p) for p in (stack.root / "objects").glob("*/datasets/*"))
    return rows, objects
