"""``Idempotency-Key`` on ``POST /v1/jobs``: one job per key, whatever the timing."""

from __future__ import annotations

import threading
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select

from noisefa.service.idempotency import JOB_KEYS
from noisefa.service.models import IdempotencyKey, Job, utcnow
from noisefa.service.repositories import jobs as job_repo
from noisefa.service.repositories.projects import project_for_key
from noisefa.testing.db import new_project_key
from noisefa.testing.http import serve_in_thread
from noisefa.testing.specs import pretrain_spec
from noisefa.testing.threads import run_threads

CONCURRENT_REQUESTS = 8


def submit(client, headers, spec=None):
    return client.post("/v1/jobs", json=spec or pretrain_spec(), headers=headers)


def jobs_of(session, project_id: str) -> int:
    return session.scalar(select(func.count()).select_from(Job).where(Job.project_id == project_id))


@pytest.fixture
def project(settings, session):
    """A fresh project: its key and id."""
    key = new_project_key(settings)
    return key, project_for_key(session, key).id


def test_concurrent_duplicates_make_one_job_and_the_others_409_or_replay(app, project, session):
    key, project_id = project
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "race"}
    barrier = threading.Barrier(CONCURRENT_REQUESTS)
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    with serve_in_thread(app) as base_url:

        def post() -> None:
            with httpx.Client(base_url=base_url, timeout=30) as http:
                barrier.wait(timeout=10)
                response = submit(http, headers)
            with lock:
                answers.append(response)

        run_threads(post, CONCURRENT_REQUESTS, deadline_s=60)
        with httpx.Client(base_url=base_url, timeout=30) as http:
            after = submit(http, headers)

    assert len(answers) == CONCURRENT_REQUESTS
    assert {r.status_code for r in answers} <= {202, 409}
    accepted = {r.json()["id"] for r in answers if r.status_code == 202}
    assert len(accepted) == 1
    for refused in (r for r in answers if r.status_code == 409):
        assert refused.headers["content-type"] == "application/problem+json"
        assert "Idempotency-Key" in refused.json()["detail"]
    assert after.status_code == 202 and after.json()["id"] in accepted
    assert jobs_of(session, project_id) == 1


def test_a_duplicate_while_the_first_is_in_flight_in_this_process_is_409(client, app, project):
    key, project_id = project
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "in-flight"}
    assert app.state.in_flight_keys.claim(JOB_KEYS.claim(project_id, "in-flight"))
    try:
        refused = submit(client, headers)
    finally:
        app.state.in_flight_keys.release(JOB_KEYS.claim(project_id, "in-flight"))
    assert refused.status_code == 409
    assert refused.headers["content-type"] == "application/problem+json"
    accepted = submit(client, headers)
    assert accepted.status_code == 202


def test_a_duplicate_while_another_replica_holds_the_key_is_409(client, app, project, settings):
    if not settings.resolved_database_url.startswith("postgresql"):
        pytest.skip("the cross-replica lock is a Postgres advisory lock")
    key, project_id = project
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "replica"}
    with app.state.sessionmaker() as replica:
        assert JOB_KEYS.lock(replica, project_id, "replica")
        refused = submit(client, headers)
        replica.rollback()  # the other replica's request ends
    assert refused.status_code == 409
    assert submit(client, headers).status_code == 202


def test_an_expired_key_makes_a_new_job(client, project, session, settings):
    key, project_id = project
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "old"}
    first = submit(client, headers).json()["id"]
    record = session.get(IdempotencyKey, (project_id, "old"))
    record.created_at = utcnow() - timedelta(seconds=settings.idempotency_ttl_s + 60)
    session.commit()
    second = submit(client, headers)
    assert second.status_code == 202 and second.json()["id"] != first
    assert submit(client, headers).json()["id"] == second.json()["id"]


def test_expired_keys_are_deleted_by_the_sweep_and_live_ones_kept(client, project, session):
    key, project_id = project
    for name in ("stale", "fresh"):
        submit(client, {"Authorization": f"Bearer {key}", "Idempotency-Key": name})
    record = session.get(IdempotencyKey, (project_id, "stale"))
    record.created_at = utcnow() - timedelta(hours=2)
    session.commit()
    assert job_repo.delete_expired_idempotency_keys(session, ttl_s=3600) >= 1
    session.expire_all()
    assert session.get(IdempotencyKey, (project_id, "stale")) is None
    assert session.get(IdempotencyKey, (project_id, "fresh")) is not None


def test_the_same_key_in_two_projects_is_two_jobs(client, settings):
    first = {"Authorization": f"Bearer {new_project_key(settings)}", "Idempotency-Key": "shared"}
    second = {"Authorization": f"Bearer {new_project_key(settings)}", "Idempotency-Key": "shared"}
    assert submit(client, first).json()["id"] != submit(client, second).json()["id"]
