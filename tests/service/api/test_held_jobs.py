"""Standalone packing (``pack_window_s``): standalone training jobs submitted close together
wait unsent, then go to the real Redis broker as packs of one project, queue and pack key;
a job cancelled while held is never sent; the reaper never re-sends a held job, and sends
a killed pack of them back as a pack. On Postgres and SQLite, through the API with its packer
loop running."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from noisefa.service.app import create_app
from noisefa.service.broker import RUN_JOB_TASK, RUN_PACK_TASK
from noisefa.service.held_jobs import send_held_jobs
from noisefa.service.models import Job, utcnow
from noisefa.service.reaper import sweep
from noisefa.service.repositories import execution
from noisefa.service.repositories.reaping import stale_queued_jobs
from noisefa.service.settings import Settings
from noisefa.testing import broker
from noisefa.testing.db import migrated, new_project_key, settings_for, sqlite_url
from noisefa.testing.specs import cpu_pretrain_spec
from noisefa.testing.waiting import wait_for

WINDOW_S = 1.0
DEADLINE_S = 20.0


@pytest.fixture(scope="module", params=["postgres", "sqlite"])
def held_settings(request, postgres_url, tmp_path_factory) -> Settings:
    home = tmp_path_factory.mktemp(f"held-{request.param}")
    url = postgres_url if request.param == "postgres" else sqlite_url(home / "db")
    return migrated(
        settings_for(home, database_url=url, reaper_enabled=False, pack_window_s=WINDOW_S)
    )


@pytest.fixture(scope="module")
def held_client(held_settings) -> Iterator[TestClient]:
    with TestClient(create_app(held_settings)) as client:
        yield client


@pytest.fixture(autouse=True)
def _empty_broker(held_client):
    broker.flush()
    yield
    broker.flush()


def key(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {new_project_key(settings)}"}


def submit(client: TestClient, headers: dict[str, str], **changes) -> str:
    response = client.post("/v1/jobs", json=cpu_pretrain_spec(**changes), headers=headers)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def sent_after_the_window(expected_jobs: int) -> list[tuple[str, list]]:
    """The messages once they name ``expected_jobs`` jobs in all (each ``args[0]`` a job id
    or a pack's list of them)."""

    def named() -> int:
        messages = broker.waiting_messages("cpu")
        return sum(1 if task == RUN_JOB_TASK else len(args[0]) for task, args in messages)

    wait_for(lambda: named() >= expected_jobs, DEADLINE_S, "the held jobs to be sent")
    return broker.waiting_messages("cpu")


def test_jobs_submitted_within_a_window_go_out_as_packs_of_one_project_and_shape(
    held_client, held_settings
):
    mine, theirs = key(held_settings), key(held_settings)
    same = [submit(held_client, mine, seed=seed) for seed in range(3)]
    wider = submit(held_client, mine, hidden=16)
    other_project = submit(held_client, theirs)
    assert broker.waiting_messages("cpu") == []  # held: nothing sent yet
    state = held_client.get(f"/v1/jobs/{same[0]}", headers=mine).json()["state"]
    assert state == "queued"

    messages = sent_after_the_window(5)
    packs = sorted(sorted(args[0]) for task, args in messages if task == RUN_PACK_TASK)
    alone = sorted(args[0] for task, args in messages if task == RUN_JOB_TASK)
    assert packs == [sorted(same)]
    assert alone == sorted([wider, other_project])


def test_a_job_submitted_within_the_first_ones_window_joins_its_pack(held_client, held_settings):
    headers = key(held_settings)
    first, later = submit(held_client, headers), submit(held_client, headers, seed=1)
    with held_client.app.state.sessionmaker() as session:  # as if submitted half a window on
        job = session.get(Job, later)
        job.hold_until = session.get(Job, first).hold_until + timedelta(seconds=WINDOW_S / 2)
        session.commit()
    messages = sent_after_the_window(2)
    assert [(task, sorted(args[0])) for task, args in messages] == [
        (RUN_PACK_TASK, sorted([first, later]))
    ]


def test_a_job_cancelled_while_held_is_never_sent(held_client, held_settings):
    headers = key(held_settings)
    kept, cancelled = submit(held_client, headers), submit(held_client, headers, seed=1)
    response = held_client.post(f"/v1/jobs/{cancelled}/cancel", headers=headers)
    assert response.status_code == 200, response.text
    assert sent_after_the_window(1) == [(RUN_JOB_TASK, [kept])]
    state = held_client.app.state  # a later round sends nothing more either
    assert send_held_jobs(state.sessionmaker, state.celery, held_settings) == []
    assert broker.waiting_messages("cpu") == [(RUN_JOB_TASK, [kept])]
    job = held_client.get(f"/v1/jobs/{cancelled}", headers=headers).json()
    assert job["state"] == "cancelled"


def test_the_reaper_never_resends_a_held_job(held_client, held_settings):
    held = submit(held_client, key(held_settings))
    with held_client.app.state.sessionmaker() as session:
        resent = stale_queued_jobs(session, older_than_s=0)
    assert held not in [job_id for job_id, _ in resent]
    sent_after_the_window(1)  # the packer sends it in its time
    assert broker.queued_job_ids("cpu") == [held]


def test_a_killed_pack_of_standalone_jobs_is_sent_back_as_one_pack(held_client, held_settings):
    headers = key(held_settings)
    members = [submit(held_client, headers, seed=seed) for seed in range(3)]
    (pack,) = sent_after_the_window(3)
    assert pack == (RUN_PACK_TASK, [members])
    broker.flush()
    state = held_client.app.state
    with state.sessionmaker() as session:
        for job_id in members:  # started, then their worker went silent
            execution.start_attempt(session, job_id)
            job = session.get(Job, job_id)
            silent_for = timedelta(seconds=held_settings.heartbeat_timeout_s + 60)
            job.heartbeat_at = job.updated_at = utcnow() - silent_for
            session.commit()
    done = sweep(state.sessionmaker, state.celery, held_settings)
    assert sorted(done.requeued) == sorted(members)
    ((task, args),) = broker.waiting_messages("cpu")
    assert task == RUN_PACK_TASK and sorted(args[0]) == sorted(members)
