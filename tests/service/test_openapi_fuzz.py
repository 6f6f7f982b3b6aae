"""Property-based fuzz of the whole OpenAPI document against the live API on a real socket.

Schemathesis generates requests for every operation from the document the API serves, both
schema-conforming ones and ones that break it on purpose, sent with a valid API key. What
must hold for each: no 5xx, and every 4xx is ``application/problem+json``. CI sends a few
hundred cases; ``NOISEFA_FULL=1`` sends many more.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator

import hypothesis
import pytest
import requests
import schemathesis
from schemathesis.generation import GenerationMode

from noisefa.engine.contract.spec import parse_spec
from noisefa.service.app import create_app
from noisefa.service.repositories import execution
from noisefa.service.repositories.jobs import create_job
from noisefa.service.repositories.projects import project_for_key
from noisefa.testing import broker
from noisefa.testing.db import migrated, new_project_key, postgres_database, settings_for
from noisefa.testing.http import serve_in_thread

FULL = os.environ.get("NOISEFA_FULL") == "1"
CASES_PER_OPERATION_AND_MODE = 300 if FULL else 20
# Our own Redis database: fuzzed jobs must never reach another suite's worker.
REDIS_URL = "redis://127.0.0.1:6379/9"  # not the fault suite's 12


@pytest.fixture(scope="module")
def live_api(tmp_path_factory) -> Iterator[tuple[str, str, str]]:
    """The API on Postgres over a real socket, a valid API key, and a finished job of its
    project with metrics and an artifact (so fuzzed filters and names reach real rows)."""
    broker.flush(REDIS_URL)
    home = tmp_path_factory.mktemp("fuzz")
    with postgres_database() as url:
        settings = migrated(
            settings_for(
                home,
                database_url=url,
                broker_url=REDIS_URL,
                reaper_enabled=False,
                max_concurrent_jobs=50,
            )
        )
        key = new_project_key(settings)
        app = create_app(settings)
        job_id = finished_job(app, key)
        with serve_in_thread(app) as base_url:
            yield base_url, key, job_id
    broker.flush(REDIS_URL)


def finished_job(app, key: str) -> str:
    """A succeeded job of the key's project, with two epochs of metrics and one artifact."""
    with app.state.sessionmaker() as session:
        project = project_for_key(session, key)
        spec = parse_spec({"kind": "pretrain", "pretrain": {"dataset": "digits"}})
        job_id = create_job(session, project.id, spec, max_attempts=1).id
        attempt = execution.start_attempt(session, job_id)
        for epoch in (1, 2):
            execution.record_epoch(session, attempt, "pretrain", epoch, {"loss": 1.0 / epoch})
        name = "checkpoints/epoch-0002.safetensors"
        storage_key = execution.artifact_key(project.id, job_id, name)
        app.state.storage.put_bytes(storage_key, b"weights")
        execution.record_artifact(session, attempt, name, storage_key, 7, "text/plain")
        execution.finish(session, attempt, "succeeded", result={"final_checkpoint": name})
    return job_id


def check(response, label: str) -> None:
    """What must hold for every answer (a schemathesis ``Response``), whatever was sent."""
    assert response.status_code < 500, f"{label} → {response.status_code}: {response.text[:500]}"
    if response.status_code >= 400:
        content_type = (response.headers.get("content-type") or [""])[0]
        assert content_type.startswith("application/problem+json"), (
            f"{label} → {response.status_code} as {content_type!r}: {response.text[:300]}"
        )
        problem = response.json()
        assert problem["status"] == response.status_code, label


def fuzz_operation(operation, mode, send, seen: Counter[int], **fixed) -> None:
    """Send ``CASES_PER_OPERATION_AND_MODE`` generated cases of one operation; check each.

    ``fixed`` pins parts of the request (``path_parameters={"job_id": ...}``)."""
    label = f"{operation.method.upper()} {operation.path} ({mode.value}, {fixed or 'free'})"

    @hypothesis.settings(
        max_examples=CASES_PER_OPERATION_AND_MODE,
        deadline=None,
        database=None,
        derandomize=not FULL,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.generate],
    )
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode, **fixed))
    def fuzz(case) -> None:
        response = send(case)
        seen[response.status_code] += 1
        check(response, f"{label}: {case.path_parameters} {case.query}")

    try:
        fuzz()
    except hypothesis.errors.Unsatisfiable:
        # Nothing to break: an operation without parameters or body has no negative cases.
        assert mode == GenerationMode.NEGATIVE, label


def test_no_request_gets_a_5xx_and_every_error_is_problem_json(live_api):
    base_url, key, job_id = live_api
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    auth = {"Authorization": f"Bearer {key}"}
    seen: Counter[int] = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10, "the document lost operations"
    with requests.Session() as session:

        def send(case):
            return case.call(base_url=base_url, session=session, headers=auth, timeout=10)

        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                fuzz_operation(operation, mode, send, seen)
            if "{job_id}" in operation.path:
                # The same operations on a real job: filters, pages and names meet real rows.
                real = {"path_parameters": {"job_id": job_id}}
                fuzz_operation(operation, GenerationMode.POSITIVE, send, seen, **real)
    assert sum(seen.values()) >= len(operations) * 2 * 5, f"too few cases ran: {dict(seen)}"
