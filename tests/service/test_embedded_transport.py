"""The embedded broker's transport: kombu's filesystem transport with short drains."""

from __future__ import annotations

import socket

import pytest
from kombu import Connection, Queue
from kombu.transport import filesystem

from noisefa.service.broker import celery_config
from noisefa.service.embedded_transport import DRAIN_WAIT_S, TRANSPORT, Transport
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


def test_the_embedded_config_names_this_transport(tmp_path):
    config = celery_config(Settings(home=str(tmp_path)))
    assert config["broker_url"] == "filesystem://"
    assert config["broker_transport"] == TRANSPORT


def test_messages_go_through_it(tmp_path):
    with connection(tmp_path) as conn:
        assert isinstance(conn.transport, Transport)
        queue = conn.SimpleQueue("cpu")
        queue.put({"job": "a"})
        queue.put({"job": "b"})
        got = [queue.get(timeout=2).payload for _ in range(2)]
        queue.close()
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
