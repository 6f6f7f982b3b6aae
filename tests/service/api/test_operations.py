"""Health, readiness, problem JSON for unknown routes, and the API over a
real socket (uvicorn on a free loopback port)."""

from __future__ import annotations

import json
import socket
import threading

import httpx
import openapi_spec_validator
from fastapi.testclient import TestClient

from noisefa.service.app import create_app
from noisefa.service.repositories import execution, running
from noisefa.testing.db import migrated, new_project_key, settings_for
from noisefa.testing.http import serve_in_thread
from noisefa.testing.specs import pretrain_spec

STREAM_DEADLINE_S = 30.0


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_healthz_answers_without_checking_anything(client):
    assert client.get("/healthz").json() == {"status": "ok", "checks": {}}


def test_readyz_checks_database_broker_and_storage(tmp_path):
    # Its own database: the shared one holds other tests' queued jobs, and no worker.
    with TestClient(create_app(migrated(settings_for(tmp_path)))) as client:
        response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "broker": "ok", "storage": "ok"}


def test_readyz_is_503_naming_the_broker_when_it_is_down(tmp_path):
    settings = settings_for(tmp_path, broker_url=f"redis://127.0.0.1:{closed_port()}/0")
    with TestClient(create_app(migrated(settings))) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert "broker" in response.json()["detail"]
    assert "database" not in response.json()["detail"]


def test_embedded_settings_are_ready_without_any_server(tmp_path):
    settings = settings_for(tmp_path, broker_url=None, database_url=None, storage_url=None)
    with TestClient(create_app(migrated(settings))) as client:
        assert client.get("/readyz").status_code == 200
        key = {"Authorization": f"Bearer {new_project_key(settings)}"}
        assert client.post("/v1/jobs", json=pretrain_spec(), headers=key).status_code == 202


def test_unknown_routes_and_methods_are_problem_json(client):
    for response in (client.get("/v2/nothing"), client.delete("/v1/jobs")):
        assert response.status_code in (404, 405)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == response.status_code


JOB_BODIES = {
    "pretrain": "JobSpec",
    "train": "JobSpec",
    "evaluate": "EvaluateSpec",
    "experiment": "ExperimentSpec",
}


def test_openapi_documents_the_job_spec_and_problem_responses(client):
    schema = client.get("/openapi.json").json()
    post = schema["paths"]["/v1/jobs"]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    refs = {kind: f"#/components/schemas/{name}" for kind, name in JOB_BODIES.items()}
    assert body["discriminator"] == {"propertyName": "kind", "mapping": refs}
    assert {item["$ref"] for item in body["oneOf"]} == set(refs.values())
    assert {"TrainSpec", "EvaluateSpec", "ExperimentSpec"} <= set(schema["components"]["schemas"])
    assert "application/problem+json" in post["responses"]["422"]["content"]
    assert schema["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"


def test_api_over_a_real_socket_streams_live_events_and_refuses_chunked_oversize(app, headers):
    events: list[dict] = []
    listening = threading.Event()

    with serve_in_thread(app) as base_url, httpx.Client(base_url=base_url) as http:
        job_id = http.post("/v1/jobs", json=pretrain_spec(), headers=headers).json()["id"]

        def listen() -> None:
            with http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response:
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        events.append(json.loads(line[6:]))
                        listening.set()

        listener = threading.Thread(target=listen)
        listener.start()
        assert listening.wait(timeout=STREAM_DEADLINE_S), "no event arrived"
        with app.state.sessionmaker() as session:
            attempt = execution.start_attempt(session, job_id)
            running.record_epoch(session, attempt, "pretrain", 1, {"loss": 1.0})
            execution.finish(session, attempt, "succeeded")
        listener.join(timeout=STREAM_DEADLINE_S)
        assert not listener.is_alive(), "the stream did not end after the terminal event"

        def chunks():
            yield b'{"kind": "pretrain", "x": "'
            yield b"y" * app.state.settings.max_body_bytes
            yield b'"}'

        oversize = http.post("/v1/jobs", content=chunks(), headers=headers)
    assert [e.get("state") for e in events] == ["queued", "running", None, "succeeded"]
    assert oversize.status_code == 413
    assert oversize.headers["content-type"] == "application/problem+json"


def test_job_is_accepted_and_kept_when_the_broker_is_down(tmp_path, caplog):
    settings = settings_for(tmp_path, broker_url=f"redis://127.0.0.1:{closed_port()}/0")
    with TestClient(create_app(migrated(settings))) as client:
        key = {"Authorization": f"Bearer {new_project_key(settings)}"}
        response = client.post("/v1/jobs", json=pretrain_spec(), headers=key)
        assert response.status_code == 202
        job_id = response.json()["id"]
        assert client.get(f"/v1/jobs/{job_id}", headers=key).json()["state"] == "queued"
    assert any(job_id in record.getMessage() for record in caplog.records)


def test_unexpected_errors_are_a_500_problem_without_the_traceback(tmp_path):
    app = create_app(migrated(settings_for(tmp_path)))

    def explode() -> None:
        raise RuntimeError("secret internals")

    app.add_api_route("/explode", explode)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/explode")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert "secret internals" not in response.text and "Traceback" not in response.text


def test_openapi_document_is_valid(client):
    openapi_spec_validator.validate(client.get("/openapi.json").json())
