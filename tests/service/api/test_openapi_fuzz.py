"""Property-based fuzz of the whole OpenAPI document against the live API on a real socket.

Schemathesis generates requests for every operation from the document the API serves, both
schema-conforming ones and ones that break it on purpose, sent with a valid API key; then
schema-conforming ones again with values at the edges of what the API can hold put in their
parameters, headers and JSON bodies (lone surrogates, integers past the database's columns,
dates that leave the calendar in UTC, kilobytes of text). What must hold for each: no 5xx,
and every 4xx is ``application/problem+json``. CI sends a few hundred cases;
``NOISEFA_FULL=1`` sends many more.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from fastapi import FastAPI
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode

from noisefa.engine.contract.spec import parse_spec
from noisefa.service.app import create_app
from noisefa.service.repositories import execution, running
from noisefa.service.repositories.jobs import create_job
from noisefa.service.repositories.projects import project_for_key
from noisefa.testing import broker
from noisefa.testing.db import migrated, new_project_key, postgres_database, settings_for
from noisefa.testing.http import serve_in_thread
from noisefa.testing.redis_dbs import redis_url
from noisefa.testing.sizes import FULL
from noisefa.testing.specs import pretrain_spec

CASES_PER_OPERATION_AND_MODE = 300 if FULL else 20
EDGE_CASES_PER_OPERATION = 200 if FULL else 12

# Lone halves of UTF-16 pairs (two highs, a low before a high): JSON can spell them, no
# UTF-8 encoder can write them. Only bodies carry them (requests encodes the rest as UTF-8).
LONE_SURROGATES = st.sampled_from(["\ud800", "x\udfff", "\udbff\udbff", "\udc00\ud800"])
EDGE_INTEGERS = st.sampled_from(
    [-1, 0, 2**31 - 1, 2**31, 2**63 - 1, 2**63, -(2**63) - 1, 10**23, 10**400]
)
EDGE_DATES = st.sampled_from(
    [
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59-14:00",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999Z",
        "10000-01-01T00:00:00Z",
        "2024-02-30T00:00:00Z",
    ]
)
# Big, but within what the server reads as one request (uvicorn refuses larger heads as
# plain text, before any app runs).
HUGE_TEXT = st.builds(str.__mul__, st.sampled_from("9x%-"), st.integers(1_000, 2_000))
HUGE_HEADER = st.builds(str.__mul__, st.sampled_from("9x"), st.integers(2_000, 8_000))
PARAMETER_EDGES = st.one_of(EDGE_INTEGERS.map(str), EDGE_DATES, HUGE_TEXT)
BODY_EDGES = st.one_of(
    LONE_SURROGATES,
    st.builds(str.__add__, st.text(max_size=8), LONE_SURROGATES),
    EDGE_INTEGERS,
    EDGE_INTEGERS.map(str),
    st.booleans(),
    EDGE_DATES,
    HUGE_TEXT,
)


@pytest.fixture(scope="module")
def live_api(tmp_path_factory) -> Iterator[tuple[str, str, FastAPI]]:
    """The API on Postgres over a real socket, a valid API key, and the app (to give the
    key's project a finished job: see :func:`finished_job`)."""
    broker.flush(redis_url("fuzz"))
    home = tmp_path_factory.mktemp("fuzz")
    with postgres_database() as url:
        settings = migrated(
            settings_for(
                home,
                database_url=url,
                broker_url=redis_url("fuzz"),
                reaper_enabled=False,
                max_concurrent_jobs=50,
            )
        )
        key = new_project_key(settings)
        app = create_app(settings)
        with serve_in_thread(app) as base_url:
            yield base_url, key, app
    broker.flush(redis_url("fuzz"))


def finished_job(app, key: str) -> str:
    """A succeeded job of the key's project, with two epochs of metrics and one artifact."""
    with app.state.sessionmaker() as session:
        project = project_for_key(session, key)
        spec = parse_spec(pretrain_spec())
        job_id = create_job(session, project.id, spec, max_attempts=1).id
        attempt = execution.start_attempt(session, job_id)
        for epoch in (1, 2):
            running.record_epoch(session, attempt, "pretrain", epoch, {"loss": 1.0 / epoch})
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
    base_url, key, app = live_api
    job_id = finished_job(app, key)
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


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    """``value`` (a JSON value) with the item at ``path`` replaced by ``new``."""
    if not path:
        return new
    copy = list(value) if isinstance(value, list) else dict(value)
    copy[path[0]] = replaced(value[path[0]], path[1:], new)
    return copy


def leaf_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths to every scalar of a JSON value (the value's own when it is one)."""
    if isinstance(value, dict):
        return [leaf for key, item in value.items() for leaf in leaf_paths(item, (*path, key))]
    if isinstance(value, list):
        return [leaf for i, item in enumerate(value) for leaf in leaf_paths(item, (*path, i))]
    return [path]


EDGE_HEADERS = ("Last-Event-ID", "Idempotency-Key")


def put_edges(case, data, job_id: str) -> None:
    """An edge value in one place of the case (a query or path parameter, a header, or one
    scalar of its JSON body), so the rest stays valid and the value reaches the code behind
    it; maybe kilobytes of padding header; and ``job_id`` (a real job) as the job of some
    cases of a read-only operation."""
    operation = case.operation
    places = [("query", parameter.name) for parameter in operation.query]
    places += [("path", parameter.name) for parameter in operation.path_parameters]
    places += [("header", name) for name in EDGE_HEADERS]
    json_body = case.media_type == "application/json" and isinstance(case.body, dict | list)
    places += [("body", "")] if json_body else []
    where, name = data.draw(st.sampled_from(places), label="edge place")
    if where == "query":
        case.query = {**(case.query or {}), name: data.draw(PARAMETER_EDGES, label="edge")}
    elif where == "path":
        case.path_parameters[name] = data.draw(PARAMETER_EDGES, label="edge")
    elif where == "header":
        case.headers = {**(case.headers or {}), name: data.draw(PARAMETER_EDGES, label="edge")}
    else:
        path = data.draw(st.sampled_from(leaf_paths(case.body)), label="body place")
        body = replaced(case.body, path, data.draw(BODY_EDGES, label="edge"))
        if isinstance(body, dict) and data.draw(st.booleans(), label="surrogate key"):
            body = {**body, data.draw(LONE_SURROGATES): 1}
        # As JSON text (surrogates as \\u escapes), which schemathesis sends as is.
        case.body = json.dumps(body).encode()
    if data.draw(st.booleans(), label="padding header"):
        case.headers = {**(case.headers or {}), "X-Padding": data.draw(HUGE_HEADER)}
    reads_a_job = "job_id" in case.path_parameters and case.method.upper() == "GET"
    if reads_a_job and where != "path" and data.draw(st.booleans(), label="on the real job"):
        case.path_parameters["job_id"] = job_id


def fuzz_edges(operation, send, seen: Counter[int], job_id: str) -> None:
    """Send ``EDGE_CASES_PER_OPERATION`` schema-conforming cases of one operation with edge
    values put in (:func:`put_edges`); check each."""
    label = f"{operation.method.upper()} {operation.path} (edges)"

    @hypothesis.settings(
        max_examples=EDGE_CASES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=not FULL,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.generate],
    )
    @hypothesis.given(case=operation.as_strategy(), data=st.data())
    def fuzz(case, data) -> None:
        put_edges(case, data, job_id)
        response = send(case)
        seen[response.status_code] += 1
        check(response, f"{label}: {case.path_parameters} {case.query}")

    fuzz()


def test_edge_values_get_no_5xx_and_every_error_is_problem_json(live_api):
    base_url, key, app = live_api
    job_id = finished_job(app, key)
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    auth = {"Authorization": f"Bearer {key}"}
    seen: Counter[int] = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    with requests.Session() as session:

        def send(case):
            return case.call(base_url=base_url, session=session, headers=auth, timeout=10)

        for operation in operations:
            fuzz_edges(operation, send, seen, job_id)
    assert sum(seen.values()) >= len(operations) * 5, f"too few cases ran: {dict(seen)}"
    assert seen[422] > 0, f"no edge value was refused: the edges reached nothing ({dict(seen)})"
