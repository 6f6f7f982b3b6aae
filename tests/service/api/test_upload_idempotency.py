"""``Idempotency-Key`` on ``POST /v1/datasets``: a duplicate sent while the first upload is
still arriving is a 409, and once the first is stored the key replays it."""

from __future__ import annotations

import io
import threading

import httpx
import numpy as np
from sqlalchemy import func, select

from noisefa.service.idempotency import UPLOAD_KEYS
from noisefa.service.models import Dataset
from noisefa.service.repositories.projects import project_for_key
from noisefa.testing.db import new_project_key
from noisefa.testing.http import serve_in_thread
from noisefa.testing.waiting import wait_for

DEADLINE_S = 30.0
BOUNDARY = "noisefa-test-boundary"


def small_npz() -> bytes:
    """A valid two-class dataset of a few rows."""
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        x_train=rng.random((20, 4), dtype=np.float32),
        y_train=np.arange(20) % 2,
        x_test=rng.random((6, 4), dtype=np.float32),
        y_test=np.arange(6) % 2,
    )
    return buffer.getvalue()


def held_open_body(data: bytes, release: threading.Event):
    """A multipart body that sends its first bytes, then waits for ``release`` (or the
    deadline) before sending the rest."""
    head = (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="file"; filename="set.npz"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    yield head + data[:100]
    release.wait(timeout=DEADLINE_S)
    yield data[100:] + f"\r\n--{BOUNDARY}--\r\n".encode()


def test_a_duplicate_upload_while_the_first_is_arriving_is_409_then_replays(app, settings, session):
    api_key = new_project_key(settings)
    project_id = project_for_key(session, api_key).id
    headers = {"Authorization": f"Bearer {api_key}", "Idempotency-Key": "slow-upload"}
    data = small_npz()
    release = threading.Event()
    first: list[httpx.Response] = []

    with serve_in_thread(app) as base_url, httpx.Client(base_url=base_url, timeout=60) as http:

        def send_slowly() -> None:
            first.append(
                http.post(
                    "/v1/datasets",
                    content=held_open_body(data, release),
                    headers={
                        **headers,
                        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
                    },
                )
            )

        sender = threading.Thread(target=send_slowly)
        sender.start()
        try:
            claim = UPLOAD_KEYS.claim(project_id, "slow-upload")
            wait_for(lambda: app.state.in_flight_keys.holds(claim), DEADLINE_S, "the claim")
            duplicate = http.post(
                "/v1/datasets", files={"file": ("set.npz", data)}, headers=headers
            )
        finally:
            release.set()
            sender.join(timeout=DEADLINE_S)
        replayed = http.post("/v1/datasets", files={"file": ("set.npz", data)}, headers=headers)

    assert duplicate.status_code == 409
    assert duplicate.headers["content-type"] == "application/problem+json"
    assert "Idempotency-Key" in duplicate.json()["detail"]
    assert not sender.is_alive() and first[0].status_code == 201, first
    assert replayed.status_code == 201 and replayed.json()["id"] == first[0].json()["id"]
    stored = select(func.count()).select_from(Dataset).where(Dataset.project_id == project_id)
    assert session.scalar(stored) == 1
