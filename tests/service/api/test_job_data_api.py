"""What a job produces, read over HTTP: metrics, the SSE stream, cancel and artifacts."""

from __future__ import annotations

import json

import pytest

from noisefa.service.repositories import execution, running
from noisefa.testing.specs import pretrain_spec


@pytest.fixture
def job_id(client, headers) -> str:
    return client.post("/v1/jobs", json=pretrain_spec(), headers=headers).json()["id"]


def read_events(client, headers, job_id, last_event_id=None) -> list[dict]:
    """The whole SSE stream of a job (it ends after the terminal state event)."""
    extra = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
    events, current = [], {}
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers={**headers, **extra}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if not line:
                if "event" in current:
                    events.append(current)
                current = {}
            elif line.startswith(("id:", "event:", "data:")):
                field, _, value = line.partition(": ")
                current[field.rstrip(":")] = json.loads(value) if field == "data" else value
    return events


def run_two_epochs(session, job_id: str) -> None:
    attempt = execution.start_attempt(session, job_id)
    for epoch in (1, 2):
        running.report_progress(session, attempt, {"phase": "pretrain", "epoch": epoch})
        metrics = {"loss": 1.0 / epoch, "alignment_angle[2]": 90.0 - epoch, "accuracy": 0.1}
        running.record_epoch(session, attempt, "pretrain", epoch, metrics)
    execution.finish(session, attempt, "succeeded", result={"loss": 0.5})


def test_metrics_filter_by_name_phase_and_epoch(client, headers, session, job_id):
    run_two_epochs(session, job_id)
    url = f"/v1/jobs/{job_id}/metrics"
    items = client.get(url, headers=headers).json()["items"]
    assert [(i["epoch"], i["name"]) for i in items] == [
        (1, "accuracy"),
        (1, "alignment_angle[2]"),
        (1, "loss"),
        (2, "accuracy"),
        (2, "alignment_angle[2]"),
        (2, "loss"),
    ]
    loss = client.get(url, headers=headers, params={"name": "loss"}).json()["items"]
    assert [(i["epoch"], i["value"]) for i in loss] == [(1, 1.0), (2, 0.5)]
    late = client.get(url, headers=headers, params={"epoch_min": 2, "phase": "pretrain"})
    assert {i["epoch"] for i in late.json()["items"]} == {2}
    assert client.get(url, headers=headers, params={"phase": "train"}).json()["items"] == []


def test_metric_pages_cover_every_point_once_in_order(client, headers, session, job_id):
    run_two_epochs(session, job_id)
    url = f"/v1/jobs/{job_id}/metrics"
    everything = client.get(url, headers=headers).json()["items"]
    seen, token = [], None
    while True:
        params = {"page_size": 4, **({"page_token": token} if token else {})}
        page = client.get(url, headers=headers, params=params).json()
        seen += page["items"]
        token = page["next_page_token"]
        if token is None:
            break
    assert seen == everything and len(seen) == 6


def test_event_stream_delivers_every_event_in_order_and_ends(client, headers, session, job_id):
    run_two_epochs(session, job_id)
    events = read_events(client, headers, job_id)
    assert [e["event"] for e in events] == [
        "state",
        "state",
        "progress",
        "metrics",
        "progress",
        "metrics",
        "state",
    ]
    assert [e["data"].get("state") for e in events if e["event"] == "state"] == [
        "queued",
        "running",
        "succeeded",
    ]
    assert [int(e["id"]) for e in events] == sorted(int(e["id"]) for e in events)
    assert events[3]["data"]["metrics"]["loss"] == 1.0


def test_event_stream_resumes_after_last_event_id(client, headers, session, job_id):
    run_two_epochs(session, job_id)
    events = read_events(client, headers, job_id)
    resumed = read_events(client, headers, job_id, last_event_id=events[2]["id"])
    assert resumed == events[3:]
    assert read_events(client, headers, job_id, last_event_id=events[-1]["id"]) == []


def test_cancel_of_a_queued_job_is_immediate_and_idempotent(client, headers, job_id):
    first = client.post(f"/v1/jobs/{job_id}/cancel", headers=headers)
    assert first.status_code == 200
    assert first.json()["state"] == "cancelled" and first.json()["finished_at"]
    again = client.post(f"/v1/jobs/{job_id}/cancel", headers=headers)
    assert again.status_code == 200 and again.json()["state"] == "cancelled"
    states = [e["data"]["state"] for e in read_events(client, headers, job_id)]
    assert states == ["queued", "cancelled"]


def test_cancel_of_a_running_job_asks_the_worker_to_stop(client, headers, session, job_id):
    attempt = execution.start_attempt(session, job_id)
    body = client.post(f"/v1/jobs/{job_id}/cancel", headers=headers).json()
    assert body["state"] == "cancelling" and body["cancel_requested"] is True
    assert running.cancel_requested(session, job_id)
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=headers).json()["state"] == (
        "cancelling"
    )
    assert execution.finish(session, attempt, "cancelled")
    final = client.post(f"/v1/jobs/{job_id}/cancel", headers=headers).json()
    assert final["state"] == "cancelled"


def test_cancel_of_a_finished_job_changes_nothing(client, headers, session, job_id):
    run_two_epochs(session, job_id)
    body = client.post(f"/v1/jobs/{job_id}/cancel", headers=headers).json()
    assert body["state"] == "succeeded" and body["cancel_requested"] is False


def test_artifacts_are_listed_and_streamed_from_storage(client, headers, session, app, job_id):
    attempt = execution.start_attempt(session, job_id)
    payload = bytes(range(256)) * 4096  # 1 MiB, more than one chunk
    for name, data, kind in (
        ("checkpoints/epoch-0001.safetensors", payload, "application/octet-stream"),
        ("result.json", b'{"loss": 0.5}', "application/json"),
    ):
        key = execution.artifact_key(attempt.project_id, job_id, name)
        app.state.storage.put_bytes(key, data)
        execution.record_artifact(session, attempt, name, key, len(data), kind)
    listed = client.get(f"/v1/jobs/{job_id}/artifacts", headers=headers).json()["items"]
    assert [(a["name"], a["size"]) for a in listed] == [
        ("checkpoints/epoch-0001.safetensors", len(payload)),
        ("result.json", 13),
    ]
    url = f"/v1/jobs/{job_id}/artifacts/checkpoints/epoch-0001.safetensors"
    with client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-length"] == str(len(payload))
        assert b"".join(response.iter_bytes()) == payload
    result = client.get(f"/v1/jobs/{job_id}/artifacts/result.json", headers=headers)
    assert result.json() == {"loss": 0.5}
    assert result.headers["content-type"].startswith("application/json")
    missing = client.get(f"/v1/jobs/{job_id}/artifacts/nope.bin", headers=headers)
    assert missing.status_code == 404


@pytest.mark.parametrize(
    "name", ["..%2F..%2Fsecret", "%2Fetc%2Fpasswd", "a%5C..%5Cb", "checkpoints%2F..%2F..%2Fx"]
)
def test_artifact_names_that_escape_the_job_folder_are_refused(client, headers, job_id, name):
    response = client.get(f"/v1/jobs/{job_id}/artifacts/{name}", headers=headers)
    assert response.status_code in (400, 404)
    assert response.headers["content-type"] == "application/problem+json"
