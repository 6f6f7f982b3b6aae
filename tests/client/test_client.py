"""The Python client against a real running service (embedded and Postgres/Redis)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from noisefa.client import ApiError, Client, ServiceUnavailable
from noisefa.commands.processes import free_port
from noisefa.engine.checkpoint import model_from_checkpoint
from noisefa.testing.specs import long_spec, tiny_spec
from noisefa.testing.waiting import wait_for

WAIT_S = 120


@pytest.fixture(scope="module")
def client(service) -> Client:
    with Client(service.url, service.api_key, retries=1, backoff_s=0.1) as client:
        yield client


def test_submit_and_wait_follows_a_job_to_success(client: Client) -> None:
    seen: list[str] = []
    job = client.submit(tiny_spec())
    assert job["state"] == "queued"
    done = client.wait(job["id"], timeout=WAIT_S, on_progress=lambda e: seen.append(e["event"]))
    assert done["state"] == "succeeded"
    assert done["result"]["final_metrics"]["train_loss"] > 0
    assert "state" in seen and "metrics" in seen
    assert client.get(job["id"])["state"] == "succeeded"


def test_metrics_come_as_points_and_filter_by_name(client: Client) -> None:
    job = client.wait(client.submit(tiny_spec())["id"], timeout=WAIT_S)
    points = client.metrics(job["id"])
    names = {p["name"] for p in points}
    assert {"train_loss", "alignment_angle/2", "readout_entropy"} <= names
    angles = client.metrics(job["id"], name="alignment_angle/2")
    assert [p["epoch"] for p in angles] == [0, 1]
    assert all(set(p) == {"name", "phase", "epoch", "value"} for p in angles)


def test_metrics_frame_is_a_dataframe_of_the_points(client: Client) -> None:
    job = client.wait(client.submit(tiny_spec())["id"], timeout=WAIT_S)
    frame = client.metrics_frame(job["id"], name="train_loss")
    assert list(frame.columns) == ["name", "phase", "epoch", "value"]
    assert frame["epoch"].tolist() == [0, 1]


def test_download_writes_the_artifact_and_a_checkpoint_loads(client: Client, tmp_path) -> None:
    job = client.wait(client.submit(tiny_spec())["id"], timeout=WAIT_S)
    names = {a["name"] for a in client.artifacts(job["id"])}
    assert "result.json" in names
    final = job["result"]["final_checkpoint"]
    assert final in names
    path = client.download(job["id"], final, tmp_path)
    assert path == tmp_path / final.split("/")[-1]
    assert not list(tmp_path.glob("*.part"))
    model = model_from_checkpoint(path)
    assert model(__import__("torch").zeros(1, 64)).shape == (1, 10)


def test_list_iterates_across_pages(client: Client) -> None:
    ids = {client.submit(tiny_spec())["id"] for _ in range(3)}
    listed = [job["id"] for job in client.list(kind="pretrain", page_size=1)]
    assert ids <= set(listed)
    assert len(listed) == len(set(listed)), "a job was listed twice across pages"
    for job_id in ids:
        client.wait(job_id, timeout=WAIT_S)


def test_resubmit_with_the_same_idempotency_key_returns_the_same_job(client: Client) -> None:
    first = client.submit(tiny_spec(), idempotency_key="client-test-key")
    again = client.submit(tiny_spec(), idempotency_key="client-test-key")
    assert again["id"] == first["id"]
    with pytest.raises(ApiError) as err:
        client.submit(tiny_spec(samples=512), idempotency_key="client-test-key")
    assert err.value.status == 422
    client.wait(first["id"], timeout=WAIT_S)


def test_cancel_stops_a_running_job(client: Client) -> None:
    job = client.submit(long_spec())
    wait_for(lambda: client.get(job["id"])["state"] == "running", WAIT_S, "the job to run")
    client.cancel(job["id"])
    assert client.wait(job["id"], timeout=WAIT_S)["state"] == "cancelled"
    assert client.cancel(job["id"])["state"] == "cancelled"  # idempotent


def test_a_bad_spec_raises_an_error_carrying_the_problem(client: Client) -> None:
    spec = tiny_spec()
    spec["pretrain"]["epochs"] = 0
    with pytest.raises(ApiError) as err:
        client.submit(spec)
    assert err.value.status == 422
    assert "pretrain.epochs" in [e["field"] for e in err.value.problem["errors"]]


def test_a_wrong_key_raises_401_with_the_problem(service) -> None:
    with Client(service.url, "nfa_wrong", retries=0) as client, pytest.raises(ApiError) as err:
        client.get("0" * 32)
    assert err.value.status == 401
    assert err.value.problem["status"] == 401


def test_an_unknown_job_raises_404(client: Client) -> None:
    with pytest.raises(ApiError) as err:
        client.get("f" * 32)
    assert err.value.status == 404


def test_no_server_gives_a_clear_error_after_retries() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with (
        Client(url, "nfa_any", retries=2, backoff_s=0.01) as client,
        pytest.raises(ServiceUnavailable) as err,
    ):
        client.get("x")
    assert url in str(err.value.problem["detail"])


def test_submit_without_a_key_is_not_retried(monkeypatch) -> None:
    """A POST without an idempotency key must not be sent twice on a connection error."""
    calls = []
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url, "nfa_any", retries=3, backoff_s=0.01) as client:
        original = client._http.request

        def counting(*args, **kwargs):
            calls.append(args)
            return original(*args, **kwargs)

        monkeypatch.setattr(client._http, "request", counting)
        with pytest.raises(ServiceUnavailable):
            client.submit(tiny_spec())
        assert len(calls) == 1
        calls.clear()
        with pytest.raises(ServiceUnavailable):
            client.submit(tiny_spec(), idempotency_key="k")
        assert len(calls) == 4


def test_events_can_resume_after_a_given_event_id(client: Client) -> None:
    job = client.wait(client.submit(tiny_spec())["id"], timeout=WAIT_S)
    events = list(client.events(job["id"]))
    assert events[-1]["event"] == "state" and events[-1]["data"]["state"] == "succeeded"
    later = list(client.events(job["id"], last_event_id=events[0]["id"]))
    assert [e["id"] for e in later] == [e["id"] for e in events[1:]]


@pytest.mark.parametrize(
    "refusal",
    [
        ServiceUnavailable(503, {"detail": "no SSE here"}),
        ApiError(429, {"detail": "max_streams_per_project: 100 streams open"}),
    ],
    ids=["unavailable", "stream-cap"],
)
def test_wait_falls_back_to_polling_when_events_are_unavailable(
    client: Client, monkeypatch, refusal: ApiError
):
    job = client.submit(tiny_spec())

    def no_stream(*args, **kwargs):
        raise refusal

    monkeypatch.setattr(client, "events", no_stream)
    polled = []
    done = client.wait(job["id"], timeout=WAIT_S, on_progress=polled.append, poll_s=0.1)
    assert done["state"] == "succeeded"
    assert polled and all(e["event"] == "poll" for e in polled)


def test_parallel_waits_on_one_client_do_not_interfere(client: Client) -> None:
    ids = [client.submit(tiny_spec())["id"] for _ in range(2)]
    results: dict[str, str] = {}
    threads = [
        threading.Thread(target=lambda i=i: results.__setitem__(i, client.wait(i)["state"]))
        for i in ids
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    assert results == {i: "succeeded" for i in ids}


def test_upload_dataset_refusal_carries_the_problem(client: Client, tmp_path) -> None:
    path = tmp_path / "d.npz"
    path.write_bytes(b"not an npz")
    with pytest.raises(ApiError) as err:
        client.upload_dataset(path)
    assert err.value.status == 422
    assert err.value.problem["errors"]


def test_upload_dataset_then_list_and_train_on_it(client: Client, tmp_path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "mine.npz"
    np.savez(
        path,
        x_train=rng.normal(size=(40, 64)).astype(np.float32),
        y_train=np.arange(40) % 10,
        x_test=rng.normal(size=(20, 64)).astype(np.float32),
        y_test=np.arange(20) % 10,
    )
    record = client.upload_dataset(path, idempotency_key="client-upload")
    assert record["input_shape"] == [64] and record["num_classes"] == 10
    assert client.upload_dataset(path, idempotency_key="client-upload")["id"] == record["id"]
    assert record["name"] in {item["name"] for item in client.datasets()}
    spec = {"kind": "train", "model": {"hidden": [8]}, "train": {"dataset": record["name"]}}
    spec["train"]["epochs"] = 1
    job = client.wait(client.submit(spec)["id"], timeout=WAIT_S)
    assert job["state"] == "succeeded", job["error"]
