"""``/v1/checkpoints`` on both backends: a real checkpoint is stored, listed, fetched and
deleted within its project; each hostile file (a pickle, a truncated file, a huge header, a
wrong dtype, NaN, shapes off the model config, over the size limit) is a named 4xx that
stores nothing; jobs name an upload ``checkpoint:<id>`` in ``init_from``."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file
from sqlalchemy import func, select

from noisefa.engine.contract.checkpoint_format import METADATA_KEY
from noisefa.service.models import CheckpointUpload
from noisefa.service.repositories.projects import project_for_key
from noisefa.testing.checkpoint_files import read_checkpoint, rewritten, trained_checkpoint
from noisefa.testing.specs import train_spec


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return trained_checkpoint(tmp_path_factory.mktemp("run"))


def upload(client, headers, data: bytes, **extra: str):
    return client.post(
        "/v1/checkpoints",
        files={"file": ("model.safetensors", data)},
        headers={**headers, **extra},
    )


def stored(app, session, headers) -> tuple[int, list[str]]:
    """The project's checkpoint rows and checkpoint objects."""
    project_id = project_for_key(session, headers["Authorization"].removeprefix("Bearer ")).id
    rows = session.scalar(
        select(func.count())
        .select_from(CheckpointUpload)
        .where(CheckpointUpload.project_id == project_id)
    )
    return rows, app.state.storage.list(f"{project_id}/checkpoints/")


def test_upload_is_listed_fetched_and_deleted(client, headers, checkpoint, app, session):
    response = upload(client, headers, checkpoint.read_bytes())
    assert response.status_code == 201, response.text
    record = response.json()
    assert response.headers["location"] == f"/v1/checkpoints/{record['id']}"
    assert record["name"] == f"checkpoint:{record['id']}"
    assert record["model"]["hidden"] == [8] and record["model"]["input_shape"] == [64]
    assert record["trained_on"] == "digits"
    assert record["size"] == checkpoint.stat().st_size
    assert client.get(f"/v1/checkpoints/{record['id']}", headers=headers).json() == record
    assert client.get("/v1/checkpoints", headers=headers).json()["items"] == [record]
    assert stored(app, session, headers)[0] == 1
    assert client.delete(f"/v1/checkpoints/{record['id']}", headers=headers).status_code == 204
    assert client.get(f"/v1/checkpoints/{record['id']}", headers=headers).status_code == 404
    assert stored(app, session, headers) == (0, [])


def test_another_projects_checkpoint_is_not_found(client, headers, other_headers, checkpoint):
    record = upload(client, headers, checkpoint.read_bytes()).json()
    assert client.get(f"/v1/checkpoints/{record['id']}", headers=other_headers).status_code == 404
    assert client.delete(f"/v1/checkpoints/{record['id']}", headers=other_headers).status_code == (
        404
    )
    assert client.get("/v1/checkpoints", headers=other_headers).json()["items"] == []
    for body in (
        train_spec(epochs=1, init_from=record["name"]),
        {"kind": "evaluate", "init_from": record["name"], "datasets": ["digits"]},
    ):
        response = client.post("/v1/jobs", json=body, headers=other_headers)
        assert response.status_code == 404, response.text
        assert response.json()["errors"][0]["field"] == "init_from"


def test_a_checkpoint_an_unfinished_job_starts_from_cannot_be_deleted(client, headers, checkpoint):
    record = upload(client, headers, checkpoint.read_bytes()).json()
    body = train_spec(epochs=1, init_from=record["name"], model={"hidden": [8]})
    job = client.post("/v1/jobs", json=body, headers=headers)
    assert job.status_code == 202, job.text
    response = client.delete(f"/v1/checkpoints/{record['id']}", headers=headers)
    assert response.status_code == 409
    assert "1 unfinished job" in response.json()["detail"]
    client.post(f"/v1/jobs/{job.json()['id']}/cancel", headers=headers)
    assert client.delete(f"/v1/checkpoints/{record['id']}", headers=headers).status_code == 204


def test_idempotency_key_answers_the_first_upload(client, headers, checkpoint, app, session):
    data = checkpoint.read_bytes()
    first = upload(client, headers, data, **{"Idempotency-Key": "ckpt-once"})
    again = upload(client, headers, data, **{"Idempotency-Key": "ckpt-once"})
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    other = upload(client, headers, data + b" ", **{"Idempotency-Key": "ckpt-once"})
    assert other.status_code == 422
    assert other.json()["errors"][0]["field"] == "Idempotency-Key"
    assert stored(app, session, headers)[0] == 1


def _huge_header(source: Path, target: Path) -> bytes:
    """A checkpoint whose metadata carries 2 MB of padding (its header is over the test's
    1 MB limit, and real)."""
    return rewritten(source, target, meta=lambda m: m | {"padding": "x" * 2_000_000})


def _wrong_dtype(tensors):
    return tensors | {"model.layers.0.weight": tensors["model.layers.0.weight"].astype(np.float64)}


def _nan(tensors):
    weight = tensors["model.layers.1.weight"].copy()
    weight[0, 0] = np.nan
    return tensors | {"model.layers.1.weight": weight}


def _wider(tensors):
    return tensors | {"model.layers.0.weight": np.zeros((9, 64), np.float32)}


def _config(**changes):
    """A rewrite of the metadata's model_config (the spec left as it was)."""
    return lambda c, t: rewritten(
        c, t, meta=lambda m: m | {"model_config": m["model_config"] | changes}
    )


def _nested_metadata(source: Path, target: Path) -> bytes:
    """A checkpoint whose metadata document is ``[`` × 100000 (RecursionError in json)."""
    tensors, _ = read_checkpoint(source)
    save_file(tensors, str(target), metadata={METADATA_KEY: "[" * 100_000})
    return target.read_bytes()


def _many_dims(tensors):
    return tensors | {"model.layers.0.weight": np.zeros((1,) * 40, np.float32)}


HOSTILE = {
    "pickle": (lambda c, t: pickle.dumps({"model.layers.0.weight": [1.0] * 100}), 422, "file"),
    "truncated": (lambda c, t: c.read_bytes()[:-100], 422, "file"),
    "declared-huge-header": (
        lambda c, t: (2**40).to_bytes(8, "little") + b"{}",
        422,
        "file",
    ),
    "huge-header": (_huge_header, 413, "max_checkpoint_header_bytes"),
    "wrong-dtype": (
        lambda c, t: rewritten(c, t, tensors=_wrong_dtype),
        422,
        "tensors.model.layers.0.weight",
    ),
    "nan": (lambda c, t: rewritten(c, t, tensors=_nan), 422, "tensors.model.layers.1.weight"),
    "shape-off-its-config": (
        lambda c, t: rewritten(c, t, tensors=_wider),
        422,
        "tensors.model.layers.0.weight",
    ),
    "missing-tensor": (
        lambda c, t: rewritten(
            c, t, tensors=lambda ts: {k: v for k, v in ts.items() if k != "model.layers.1.bias"}
        ),
        422,
        "tensors.model.layers.1.bias",
    ),
    "changed-values": (
        lambda c, t: rewritten(
            c, t, tensors=lambda ts: ts | {"model.layers.1.bias": ts["model.layers.1.bias"] + 1}
        ),
        422,
        "metadata.tensors_sha256",
    ),
    "over-max-width": (
        lambda c, t: rewritten(
            c, t, meta=lambda m: m | {"model_config": m["model_config"] | {"hidden": [5000]}}
        ),
        422,
        "metadata.model_config.hidden[0]",
    ),
    "not-ours": (
        lambda c, t: rewritten(c, t, meta=lambda m: {"x": 1}),
        422,
        "metadata.format_version",
    ),
    "over-size": (lambda c, t: b"\0" * 3_000_001, 413, "max_checkpoint_bytes"),
    "deeply-nested-header": (
        lambda c, t: (100_000).to_bytes(8, "little") + b"[" * 100_000,
        422,
        "file",
    ),
    "deeply-nested-metadata": (_nested_metadata, 422, "metadata"),
    "even-kernel-size": (_config(kernel_size=4), 422, "metadata.model_config.kernel_size"),
    "kernel-size-over-15": (_config(kernel_size=17), 422, "metadata.model_config.kernel_size"),
    "seed-over-2**31-1": (_config(seed=2**31), 422, "metadata.model_config.seed"),
    "feedback-scale-over-100": (
        _config(feedback_scale=101.0),
        422,
        "metadata.model_config.feedback_scale",
    ),
    "config-not-the-specs-model": (_config(seed=7), 422, "metadata.model_config.seed"),
    "rule-not-the-specs-model": (_config(rule="bp"), 422, "metadata.model_config.rule"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_upload_is_a_named_4xx_storing_nothing(
    client, headers, checkpoint, tmp_path, settings, monkeypatch, app, session, case
):
    monkeypatch.setattr(settings, "max_checkpoint_header_bytes", 1_000_000)
    monkeypatch.setattr(settings, "max_checkpoint_bytes", 3_000_000)
    make, status, field = HOSTILE[case]
    response = upload(client, headers, make(checkpoint, tmp_path / "hostile.safetensors"))
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["errors"][0]["field"] == field, problem
    assert field in problem["detail"]
    assert str(tmp_path) not in response.text and "/tmp" not in response.text
    assert stored(app, session, headers) == (0, [])


def test_read_checkpoint_sees_what_the_engine_wrote(checkpoint):
    tensors, meta = read_checkpoint(checkpoint)
    assert tensors["model.layers.0.weight"].shape == (8, 64)
    assert meta["model_config"]["hidden"] == [8]


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda m: m | {"spec": m["spec"] | {"x" * 5000: 1}}, id="long-spec-key"),
        pytest.param(
            lambda m: m | {"model_config": m["model_config"] | {"y" * 5000: 1}},
            id="long-model-config-key",
        ),
    ],
)
def test_what_the_file_says_is_not_echoed_at_length(
    client, headers, checkpoint, tmp_path, make, app, session
):
    response = upload(client, headers, rewritten(checkpoint, tmp_path / "long", meta=make))
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"].startswith("metadata.")
    assert len(response.text) < 2000
    assert stored(app, session, headers) == (0, [])


def test_a_shape_of_many_dimensions_is_quoted_short(client, headers, checkpoint, tmp_path):
    response = upload(client, headers, rewritten(checkpoint, tmp_path / "dims", tensors=_many_dims))
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["errors"][0]["field"] == "tensors.model.layers.0.weight"
    assert "(40 dimensions)" in problem["detail"]
