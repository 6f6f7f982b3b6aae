"""A compression bomb against a real ``noisefa serve``: refused with a 413 naming
``max_upload_uncompressed_bytes`` while the API's peak resident memory grows by less than
100 MB; and a valid upload that unpacks to far more than that is checked in bounded chunks.

The peak is the server's ``VmHWM``, reset just before each request (Linux ``clear_refs``).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from noisefa.commands.processes import stop_process
from noisefa.testing.embedded import Server, start_server
from noisefa.testing.memory import memory_of, reset_peak, zeros_npz

MB = 1_000_000
GROWTH_LIMIT = 100 * MB
UNPACKED_LIMIT = 400 * MB  # over the growth limit, so a whole-array check would show
SETTINGS = {
    "NOISEFA_MAX_UPLOAD_UNCOMPRESSED_BYTES": str(UNPACKED_LIMIT),
    # Zeros pack ~1000×: let the valid case through the ratio check to its value pass.
    "NOISEFA_MAX_UPLOAD_COMPRESSION_RATIO": "2000",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("upload-bomb")
    running = start_server(
        root / "home", root / "serve.log", args=["--no-worker"], settings=SETTINGS
    )
    try:
        yield running
    finally:
        stop_process(running.process, sig=signal.SIGINT, timeout_s=30)


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    key = (server.home / "api_key").read_text().strip()
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=120) as client:
        small = zeros_npz(server.home / "warm.npz", 1 * MB)  # first upload loads lazy parts
        assert upload(client, small).status_code == 201
        yield client


def upload(http: httpx.Client, path: Path) -> httpx.Response:
    with path.open("rb") as handle:
        return http.post("/v1/datasets", files={"file": ("set.npz", handle)})


def peak_growth(server: Server, send) -> tuple[httpx.Response, int]:
    """The response of ``send()`` and how far the server's peak rose above its resident
    set of just before."""
    pid = server.process.pid
    reset_peak(pid)
    before = memory_of(pid).rss
    response = send()
    return response, memory_of(pid).peak - before


def test_a_gigabyte_bomb_is_a_413_and_the_api_stays_small(server, http, tmp_path):
    bomb = zeros_npz(tmp_path / "bomb.npz", 1000 * MB)
    assert bomb.stat().st_size < 5 * MB
    response, growth = peak_growth(server, lambda: upload(http, bomb))
    assert response.status_code == 413, response.text
    assert response.json()["errors"][0]["field"] == "max_upload_uncompressed_bytes"
    assert growth < GROWTH_LIMIT, f"API peak grew {growth / MB:.0f} MB"


def test_a_valid_upload_bigger_than_the_bound_is_checked_in_chunks(server, http, tmp_path):
    big = zeros_npz(tmp_path / "big.npz", 300 * MB)
    response, growth = peak_growth(server, lambda: upload(http, big))
    assert response.status_code == 201, response.text
    assert response.json()["train_size"] == 300 * MB // (4 * 64)
    assert growth < GROWTH_LIMIT, f"API peak grew {growth / MB:.0f} MB"
