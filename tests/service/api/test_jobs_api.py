"""Submitting, reading and listing jobs over HTTP, on Postgres and SQLite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from noisefa.service.repositories import execution, running
from noisefa.testing import broker
from noisefa.testing.specs import pretrain_spec, train_spec


def submit(client, headers, spec=None, **kwargs):
    return client.post("/v1/jobs", json=spec or pretrain_spec(), headers=headers, **kwargs)


def test_submitted_job_is_accepted_stored_and_put_on_the_broker(client, headers):
    response = submit(client, headers)
    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["state"] == "queued"
    assert job["spec"]["pretrain"]["samples_per_epoch"] == 60_000  # normalised with defaults
    assert job["id"] in broker.queued_job_ids("cpu")


def test_cuda_jobs_go_to_the_gpu_queue(client, headers):
    job = submit(client, headers, pretrain_spec(device="cuda")).json()
    assert job["id"] in broker.queued_job_ids("gpu")
    assert job["id"] not in broker.queued_job_ids("cpu")


def test_job_reads_back_with_every_documented_field(client, headers):
    job_id = submit(client, headers).json()["id"]
    body = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
    for field in ("id", "kind", "state", "spec", "created_at", "started_at", "finished_at"):
        assert field in body
    assert body["attempt"] == 0
    assert body["progress"] is None and body["result"] is None and body["error"] is None
    assert body["created_at"].endswith(("Z", "+00:00"))


def test_failed_job_shows_reason_and_message(client, headers, session):
    job_id = submit(client, headers).json()["id"]
    attempt = execution.start_attempt(session, job_id)
    running.report_progress(session, attempt, {"phase": "pretrain", "epoch": 1, "epochs": 1})
    execution.finish(
        session, attempt, "failed", error_reason="out_of_memory", error_message="too big"
    )
    body = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
    assert body["state"] == "failed"
    assert body["error"] == {"reason": "out_of_memory", "message": "too big"}
    assert body["progress"]["phase"] == "pretrain"
    assert body["started_at"] and body["finished_at"]


def test_bad_spec_is_a_422_problem_naming_the_field(client, headers):
    response = submit(client, headers, train_spec(epochs=0))
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 422
    assert [e["field"] for e in problem["errors"]] == ["train.epochs"]
    assert "train.epochs" in problem["detail"]


def test_missing_phase_names_the_field_from_the_model_validator(client, headers):
    problem = submit(client, headers, {"kind": "train"}).json()
    assert problem["errors"][0]["field"] == "train"
    assert "required" in problem["errors"][0]["message"]


def test_unknown_field_and_wrong_type_are_both_named(client, headers):
    spec = train_spec(model={"hidden": ["wide"], "colour": "red"})
    fields = {e["field"] for e in submit(client, headers, spec).json()["errors"]}
    assert fields == {"model.hidden[0]", "model.colour"}


def test_width_over_the_limit_names_the_layer(client, headers, settings):
    spec = train_spec(model={"hidden": [settings.max_width + 1]})
    problem = submit(client, headers, spec).json()
    assert problem["errors"][0]["field"] == "model.hidden[0]"
    assert str(settings.max_width) in problem["errors"][0]["message"]


def test_body_that_is_not_an_object_is_a_422_problem(client, headers):
    response = client.post("/v1/jobs", content=b"[1, 2", headers=headers)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


def test_oversized_body_is_a_413_problem(client, headers, settings):
    padding = "x" * (settings.max_body_bytes + 1)
    response = submit(client, headers, pretrain_spec(padding=padding))
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"


def test_missing_or_wrong_key_is_a_401_problem_with_a_challenge(client):
    for headers in ({}, {"Authorization": "Bearer nfa_wrong"}, {"Authorization": "Basic x"}):
        response = client.get("/v1/jobs", headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json()["status"] == 401


def test_same_idempotency_key_and_body_answer_with_the_first_job(client, headers):
    key = {**headers, "Idempotency-Key": "abc-1"}
    first = submit(client, key)
    again = submit(client, key)
    assert again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    listed = client.get("/v1/jobs", headers=headers).json()["items"]
    assert len(listed) == 1


def test_same_idempotency_key_with_another_body_is_a_422_naming_the_header(client, headers):
    key = {**headers, "Idempotency-Key": "abc-2"}
    submit(client, key, pretrain_spec(epochs=1))
    response = submit(client, key, pretrain_spec(epochs=2))
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "Idempotency-Key"


def test_too_many_unfinished_jobs_is_a_429_problem(client, headers, settings, monkeypatch):
    monkeypatch.setattr(settings, "max_concurrent_jobs", 2)
    assert submit(client, headers).status_code == 202
    assert submit(client, headers).status_code == 202
    response = submit(client, headers)
    assert response.status_code == 429
    assert "max_concurrent_jobs" in response.json()["detail"]


def test_init_from_must_be_a_succeeded_job_of_the_same_project(
    client, headers, other_headers, session
):
    source = submit(client, headers).json()["id"]
    assert submit(client, headers, train_spec(init_from=source)).status_code == 409
    assert submit(client, other_headers, train_spec(init_from=source)).status_code == 404
    assert submit(client, headers, train_spec(init_from="nope")).status_code == 404
    attempt = execution.start_attempt(session, source)
    execution.finish(session, attempt, "succeeded", result={"final_checkpoint": "c"})
    assert submit(client, headers, train_spec(init_from=source)).status_code == 202


def test_list_filters_by_state_kind_and_time(client, headers, session):
    pretrain = submit(client, headers).json()["id"]
    train = submit(client, headers, train_spec()).json()["id"]
    execution.start_attempt(session, train)

    def ids(**params):
        items = client.get("/v1/jobs", headers=headers, params=params).json()["items"]
        return [item["id"] for item in items]

    assert ids() == [train, pretrain]
    assert ids(kind="pretrain") == [pretrain]
    assert ids(state="running") == [train]
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert ids(created_after=future) == []
    assert ids(created_before=future) == [train, pretrain]


def test_list_pages_cover_every_job_once_newest_first(client, headers):
    created = [submit(client, headers).json()["id"] for _ in range(5)]
    seen, token = [], None
    while True:
        params = {"page_size": 2, **({"page_token": token} if token else {})}
        page = client.get("/v1/jobs", headers=headers, params=params).json()
        seen += [item["id"] for item in page["items"]]
        token = page["next_page_token"]
        if token is None:
            break
    assert seen == created[::-1]


def test_page_size_over_the_limit_and_bad_tokens_are_422(client, headers, settings):
    too_big = client.get("/v1/jobs", headers=headers, params={"page_size": 10_000})
    assert too_big.json()["errors"][0]["field"] == "page_size"
    bad = client.get("/v1/jobs", headers=headers, params={"page_token": "garbage!"})
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "page_token"


def test_another_projects_job_is_404_on_every_route(client, headers, other_headers):
    job_id = submit(client, headers).json()["id"]
    for method, path in (
        ("GET", f"/v1/jobs/{job_id}"),
        ("GET", f"/v1/jobs/{job_id}/metrics"),
        ("GET", f"/v1/jobs/{job_id}/events"),
        ("POST", f"/v1/jobs/{job_id}/cancel"),
        ("GET", f"/v1/jobs/{job_id}/artifacts"),
        ("GET", f"/v1/jobs/{job_id}/artifacts/result.json"),
    ):
        response = client.request(method, path, headers=other_headers)
        assert response.status_code == 404, path
        assert response.headers["content-type"] == "application/problem+json"
    assert client.get("/v1/jobs", headers=other_headers).json()["items"] == []
    assert client.get(f"/v1/jobs/{job_id}", headers=headers).status_code == 200
