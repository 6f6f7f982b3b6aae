"""The embedded worker's transport: kombu's filesystem transport with short drains."""

from __future__ import annotations

import contextlib
import socket

import pytest
from kombu import Connection, Queue
from kombu.transport import filesystem

from noisefa.service.broker import enqueue_job, enqueue_pack, make_celery
from noisefa.service.broker_peek import waiting_job_ids
from noisefa.service.embedded_transport import (
    DRAIN_WAIT_S,
    TRANSPORT,
    Transport,
    worker_transport,
)
from noisefa.service.settings import Settings


def connection(folder) -> Connection:
    for sub in ("queue", "processed"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    options = {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "processed_folder": str(folder / "processed"),
        "control_folder": str(folder / "control"),
        "polling_interval": 0.05,
    }
    return Connection("filesystem://", transport=TRANSPORT, transport_options=options)


def test_only_the_embedded_worker_uses_it_and_the_reaper_still_reads_its_queue(tmp_path):
    assert worker_transport(Settings(home=str(tmp_path), broker_url="redis://h:6379/0")) == {}
    settings = Settings(home=str(tmp_path), broker_url=None)  # embedded, whatever the env says
    api = make_celery(settings)
    worker = make_celery(settings)
    worker.conf.update(worker_transport(settings))
    with api.connection_for_write() as conn:
        assert type(conn.transport) is not Transport  # the API's own stays kombu's
    with worker.connection_for_write() as conn:
        assert isinstance(conn.transport, Transport)
    enqueue_job(api, "job-a", "cpu")
    enqueue_pack(api, ["job-b", "job-c"], "cpu")
    # The reaper's peek at waiting messages works whichever app it is handed.
    assert waiting_job_ids(worker, "cpu") == {"job-a", "job-b", "job-c"}
    assert waiting_job_ids(api, "cpu") == {"job-a", "job-b", "job-c"}


def test_messages_go_through_it(tmp_path):
    got: list[dict] = []
    with connection(tmp_path) as conn:
        assert isinstance(conn.transport, Transport)
        queue = Queue("cpu")
        with conn.Producer() as producer:
            for job in ("a", "b"):
                producer.publish({"job": job}, routing_key="cpu", declare=[queue])
        # Drained as Celery's loop drains: short waits, again until both have come.
        with conn.Consumer(queue, callbacks=[lambda body, message: got.append(body)]):
            for _ in range(40):
                if len(got) == 2:
                    break
                with contextlib.suppress(socket.timeout):
                    conn.drain_events(timeout=2.0)
    # The filesystem transport does not promise order within one millisecond's files.
    assert sorted(message["job"] for message in got) == ["a", "b"]


def test_a_drain_waits_at_most_the_cap_however_long_celery_asks(tmp_path, monkeypatch):
    asked: list[float | None] = []
    real = filesystem.Transport.drain_events

    def recording(self, connection, timeout=None):
        asked.append(timeout)
        return real(self, connection, timeout=timeout)

    monkeypatch.setattr(filesystem.Transport, "drain_events", recording)
    with (
        connection(tmp_path) as conn,
        conn.Consumer(Queue("cpu"), callbacks=[]),
        pytest.raises(socket.timeout),
    ):
        conn.drain_events(timeout=2.0)  # what Celery's loop asks for, with nothing queued
    assert asked == [DRAIN_WAIT_S]
