"""Webhooks: signed deliveries to a local receiver (allowlisted here), retried after a 500,
listed at /v1/jobs/{id}/deliveries; destinations inside the deployment refused at submit."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from noisefa.service.webhooks import dispatch_once
from noisefa.testing.specs import tiny_spec
from noisefa.testing.waiting import wait_for


class Receiver(ThreadingHTTPServer):
    """Answers 500 to the first delivery, 204 after; keeps every request it got."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ReceiverHandler)
        self.received: list[tuple[dict[str, str], bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class ReceiverHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server: Receiver = self.server  # type: ignore[assignment]
        server.received.append((dict(self.headers), body))
        self.send_response(500 if len(server.received) == 1 else 204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def allow_loopback(settings) -> Iterator[None]:
    before = settings.webhook_allowed_hosts, settings.webhook_retry_base_s
    settings.webhook_allowed_hosts = ["127.0.0.1"]
    settings.webhook_retry_base_s = 0.1
    yield
    settings.webhook_allowed_hosts, settings.webhook_retry_base_s = before


def test_loopback_webhook_is_refused_at_submit_naming_notify_url(client, headers):
    body = {**tiny_spec(), "notify": {"url": "http://127.0.0.1:9/hook"}}
    answer = client.post("/v1/jobs", json=body, headers=headers)
    assert answer.status_code == 422
    assert [e["field"] for e in answer.json()["errors"]] == ["notify.url"]


def test_non_http_webhook_url_is_refused(client, headers):
    body = {**tiny_spec(), "notify": {"url": "file:///etc/passwd"}}
    answer = client.post("/v1/jobs", json=body, headers=headers)
    assert answer.status_code == 422


def test_deliveries_are_signed_retried_after_a_500_and_listed(
    app, client, headers, settings, receiver, allow_loopback
):
    body = {**tiny_spec(), "notify": {"url": receiver.url, "events": ["state"]}}
    answer = client.post("/v1/jobs", json=body, headers=headers)
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=headers).status_code == 200
    secret = client.get("/v1/webhook-secret", headers=headers).json()["secret"]

    def all_delivered():
        dispatch_once(app.state.sessionmaker, settings)
        items = client.get(f"/v1/jobs/{job_id}/deliveries", headers=headers).json()["items"]
        return items if items and all(i["status"] == "delivered" for i in items) else None

    items = wait_for(all_delivered, 60, "every delivery to be delivered")
    states = [item["payload"]["state"] for item in items]
    assert states[0] == "queued" and states[-1] in ("cancelled", "cancelling")
    assert items[0]["attempts"] == 2 and items[0]["last_status_code"] == 204
    assert len(receiver.received) == sum(item["attempts"] for item in items)
    for sent_headers, sent in receiver.received:
        timestamp = sent_headers["X-Noisefa-Timestamp"]
        expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + sent, hashlib.sha256)
        assert sent_headers["X-Noisefa-Signature"] == f"sha256={expected.hexdigest()}"
        assert json.loads(sent)["job_id"] == job_id
