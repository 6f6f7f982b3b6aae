"""A download is checked against the size and sha256 recorded with the artifact before its
first byte: a damaged object answers a 409 problem naming the artifact (never a 200 cut off
half-way, never a server path); an intact one streams whole, however large."""

from __future__ import annotations

import hashlib

import pytest

from noisefa.service.checksums import SPOOL_MAX_BYTES
from noisefa.service.repositories import execution
from noisefa.testing.corruption import garble_tail, truncate
from noisefa.testing.specs import pretrain_spec

NAME = "checkpoints/pretrain-0001.safetensors"
PAYLOAD = bytes(range(256)) * 4096  # 1 MiB: more than one chunk


@pytest.fixture
def job_id(client, headers) -> str:
    return client.post("/v1/jobs", json=pretrain_spec(), headers=headers).json()["id"]


def store(app, session, job_id: str, data: bytes, *, checksum: bool = True) -> str:
    """Store ``data`` as the job's artifact ``NAME`` as a worker does; its storage key."""
    attempt = execution.start_attempt(session, job_id)
    key = execution.artifact_key(attempt.project_id, job_id, NAME)
    app.state.storage.put_bytes(key, data)
    sha256 = hashlib.sha256(data).hexdigest() if checksum else None
    assert execution.record_artifact(
        session, attempt, NAME, key, len(data), "application/octet-stream", sha256=sha256
    )
    return key


def download(client, headers, job_id: str):
    return client.get(f"/v1/jobs/{job_id}/artifacts/{NAME}", headers=headers)


@pytest.mark.parametrize("size", [len(PAYLOAD), SPOOL_MAX_BYTES + 12345])
def test_an_intact_artifact_streams_whole_with_its_checksum_listed(
    client, headers, session, app, job_id, size
):
    data = (PAYLOAD * (size // len(PAYLOAD) + 1))[:size]
    store(app, session, job_id, data)
    response = download(client, headers, job_id)
    assert response.status_code == 200
    assert response.headers["content-length"] == str(size) and response.content == data
    (listed,) = client.get(f"/v1/jobs/{job_id}/artifacts", headers=headers).json()["items"]
    assert listed["sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    ("damage", "checksum"),
    [(truncate, True), (garble_tail, True), (truncate, False)],
    ids=["truncated", "garbled-same-size", "truncated-row-without-checksum"],
)
def test_a_damaged_artifact_answers_a_problem_instead_of_a_truncated_200(
    client, headers, session, app, job_id, damage, checksum
):
    key = store(app, session, job_id, PAYLOAD, checksum=checksum)
    damage(app.state.storage.root / key)
    response = download(client, headers, job_id)
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith("artifact-corrupt") and problem["status"] == 409
    assert NAME in problem["detail"]
    assert key not in problem["detail"] and str(app.state.storage.root) not in problem["detail"]


def test_an_intact_artifact_recorded_before_checksums_still_downloads(
    client, headers, session, app, job_id
):
    store(app, session, job_id, PAYLOAD, checksum=False)
    response = download(client, headers, job_id)
    assert response.status_code == 200 and response.content == PAYLOAD
