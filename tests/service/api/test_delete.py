"""``DELETE /v1/jobs/{id}`` and ``DELETE /v1/datasets/{id}``: a finished job goes with its
metrics, events, artifacts, idempotency key and stored objects (an experiment with its
runs); an upload goes with its row and object. What is still in use (an unfinished job, a
run of an experiment, a job or upload an unfinished job reads) is a 409 and stays; another
project's id is a 404. Storage and rows are checked directly."""

from __future__ import annotations

import io

import numpy as np
import pytest
from sqlalchemy import func, select

from noisefa.engine.contract.bodies import parse_job
from noisefa.engine.contract.experiment_spec import expand_experiment
from noisefa.engine.contract.states import JobState
from noisefa.service.models import (
    Artifact,
    Dataset,
    DatasetIdempotencyKey,
    IdempotencyKey,
    Job,
    JobEvent,
    JobMetric,
)
from noisefa.service.repositories import execution, experiments, running
from noisefa.service.repositories.job_deletion import job_folder
from noisefa.testing.specs import experiment_spec, pretrain_spec, train_spec

TRAIN = train_spec(epochs=1, model={"hidden": [8]}, device="cpu")


def run_to_the_end(app, session, job_id: str, state: JobState = JobState.SUCCEEDED) -> str:
    """Act as a worker: one epoch of metrics, a stored checkpoint, then ``state``; the
    checkpoint's storage key."""
    attempt = execution.start_attempt(session, job_id)
    running.record_epoch(session, attempt, "pretrain", 1, {"loss": 1.0})
    key = execution.artifact_key(attempt.project_id, job_id, "checkpoints/last.safetensors")
    app.state.storage.put_bytes(key, b"weights")
    execution.record_artifact(session, attempt, "checkpoints/last.safetensors", key, 7, "x")
    assert execution.finish(session, attempt, state)
    return key


def rows_of(session, job_ids: list[str]) -> dict[str, int]:
    """Rows that name the jobs, per table."""
    session.expire_all()
    counts = {}
    for table, column in (
        (Job, Job.id),
        (JobMetric, JobMetric.job_id),
        (JobEvent, JobEvent.job_id),
        (Artifact, Artifact.job_id),
        (IdempotencyKey, IdempotencyKey.job_id),
    ):
        query = select(func.count()).select_from(table).where(column.in_(job_ids))
        counts[table.__tablename__] = session.scalar(query)
    return counts


def submit(client, headers, body, **extra_headers: str) -> str:
    response = client.post("/v1/jobs", json=body, headers=headers | extra_headers)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def delete_job(client, headers, job_id: str):
    return client.delete(f"/v1/jobs/{job_id}", headers=headers)


def conflict(response, slug: str) -> str:
    assert response.status_code == 409, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith(slug), problem
    return problem["detail"]


def test_a_finished_job_is_deleted_with_its_rows_and_stored_objects(client, headers, app, session):
    job_id = submit(client, headers, pretrain_spec(), **{"Idempotency-Key": "once"})
    key = run_to_the_end(app, session, job_id)
    storage = app.state.storage
    project_id = session.get(Job, job_id).project_id
    stray = f"{job_folder(project_id, job_id)}checkpoints/unrecorded.safetensors"
    storage.put_bytes(stray, b"written before its row")  # a worker died between the two
    assert min(rows_of(session, [job_id]).values()) == 1

    response = delete_job(client, headers, job_id)
    assert response.status_code == 204 and response.content == b""
    assert rows_of(session, [job_id]) == dict.fromkeys(rows_of(session, [job_id]), 0)
    assert not storage.exists(key) and storage.list(job_folder(project_id, job_id)) == []
    assert client.get(f"/v1/jobs/{job_id}", headers=headers).status_code == 404
    assert delete_job(client, headers, job_id).status_code == 404
    again = submit(client, headers, pretrain_spec(), **{"Idempotency-Key": "once"})
    assert again != job_id  # the key went with its job


@pytest.mark.parametrize("state", [JobState.QUEUED, JobState.RUNNING])
def test_an_unfinished_job_is_not_deleted(client, headers, session, state):
    job_id = submit(client, headers, pretrain_spec())
    if state == JobState.RUNNING:
        execution.start_attempt(session, job_id)
    assert state in conflict(delete_job(client, headers, job_id), "job-not-finished")
    assert rows_of(session, [job_id])["jobs"] == 1


def test_an_experiment_is_deleted_with_its_runs_and_a_run_alone_is_refused(
    client, headers, app, session
):
    parent_id = submit(client, headers, experiment_spec(TRAIN))
    attempt = execution.start_attempt(session, parent_id)
    runs = expand_experiment(parse_job(session.get(Job, parent_id).spec))
    experiments.create_children(session, attempt, runs, max_attempts=3)
    children = [child.id for child in experiments.children(session, parent_id)]
    keys = [run_to_the_end(app, session, child) for child in children]

    detail = conflict(delete_job(client, headers, children[0]), "job-is-experiment-run")
    assert parent_id in detail
    assert conflict(delete_job(client, headers, parent_id), "job-not-finished")
    assert execution.finish(session, attempt, JobState.SUCCEEDED)

    assert delete_job(client, headers, parent_id).status_code == 204
    assert set(rows_of(session, [parent_id, *children]).values()) == {0}
    assert not any(app.state.storage.exists(key) for key in keys)


def test_a_job_that_an_unfinished_job_starts_from_is_kept_until_that_one_ends(
    client, headers, app, session
):
    source = submit(client, headers, pretrain_spec())
    run_to_the_end(app, session, source)
    follower = submit(client, headers, TRAIN | {"init_from": source})
    assert "1 unfinished" in conflict(delete_job(client, headers, source), "job-in-use")
    client.post(f"/v1/jobs/{follower}/cancel", headers=headers)
    assert delete_job(client, headers, source).status_code == 204


def npz_bytes() -> bytes:
    buffer = io.BytesIO()
    np.savez(
        buffer,
        x_train=np.ones((20, 64), np.float32),
        y_train=np.arange(20) % 10,
        x_test=np.ones((6, 64), np.float32),
        y_test=np.arange(6) % 10,
    )
    return buffer.getvalue()


def upload(client, headers, **extra_headers: str) -> dict:
    response = client.post(
        "/v1/datasets", files={"file": ("set.npz", npz_bytes())}, headers=headers | extra_headers
    )
    assert response.status_code == 201, response.text
    return response.json()


def test_an_upload_is_deleted_with_its_row_key_and_object(client, headers, app, session):
    dataset = upload(client, headers, **{"Idempotency-Key": "data-once"})
    key = session.get(Dataset, dataset["id"]).storage_key
    assert app.state.storage.exists(key)

    response = client.delete(f"/v1/datasets/{dataset['id']}", headers=headers)
    assert response.status_code == 204
    session.expire_all()
    assert session.get(Dataset, dataset["id"]) is None
    assert not app.state.storage.exists(key)
    key_rows = select(func.count()).select_from(DatasetIdempotencyKey)
    assert session.scalar(key_rows.where(DatasetIdempotencyKey.dataset_id == dataset["id"])) == 0
    assert client.get(f"/v1/datasets/{dataset['id']}", headers=headers).status_code == 404
    assert client.delete(f"/v1/datasets/{dataset['id']}", headers=headers).status_code == 404


@pytest.mark.parametrize("kind", ["train", "experiment"])
def test_an_upload_an_unfinished_job_reads_is_kept(client, headers, app, session, kind):
    dataset = upload(client, headers)
    body = TRAIN | {"train": {"dataset": dataset["name"], "epochs": 1}}
    job_id = submit(client, headers, body if kind == "train" else experiment_spec(body))
    detail = conflict(client.delete(f"/v1/datasets/{dataset['id']}", headers=headers), "in-use")
    assert "1 unfinished" in detail
    assert app.state.storage.exists(session.get(Dataset, dataset["id"]).storage_key)
    client.post(f"/v1/jobs/{job_id}/cancel", headers=headers)
    assert client.delete(f"/v1/datasets/{dataset['id']}", headers=headers).status_code == 204


def test_another_projects_job_and_upload_are_not_found_and_stay(
    client, headers, other_headers, app, session
):
    job_id = submit(client, headers, pretrain_spec())
    run_to_the_end(app, session, job_id)
    dataset = upload(client, headers)
    assert delete_job(client, other_headers, job_id).status_code == 404
    response = client.delete(f"/v1/datasets/{dataset['id']}", headers=other_headers)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert rows_of(session, [job_id])["jobs"] == 1
    assert session.get(Dataset, dataset["id"]) is not None
