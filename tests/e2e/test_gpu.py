"""On a CUDA machine: a ``device: cuda`` job runs in the worker's pool child, the worker's
parent never loads the CUDA driver, and the child that held the GPU exits after the job (so
its memory is returned). Skipped where no GPU is present, as in CI."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from noisefa.client import Client
from noisefa.commands.processes import stop_process
from noisefa.testing.embedded import children, start_server, wait_gone
from noisefa.testing.waiting import wait_for

# The driver's use is told by open /dev/nvidia* files (see uses_cuda_driver): a CUDA machine
# without them (WSL2's /dev/dxg) cannot show it.
pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or not any(Path("/dev").glob("nvidia[0-9]*")),
    reason="needs a CUDA device with NVIDIA device files",
)

DEADLINE_S = 180.0
SPEC = {
    "kind": "pretrain",
    "model": {"hidden": [256]},
    "pretrain": {"dataset": "digits", "epochs": 2, "samples_per_epoch": 300_000},
    "device": "cuda",
}


def uses_cuda_driver(pid: int) -> bool:
    """Whether the process initialised the CUDA driver: it holds ``/dev/nvidia*`` open.

    A mapped ``libcuda.so`` is not the signal: a CUDA build of torch maps it at import (seen
    on the H200 machine), before and without any ``cuInit``.
    """
    fds = Path(f"/proc/{pid}/fd")
    if not fds.exists():
        return False
    targets = []
    for fd in fds.iterdir():
        try:
            targets.append(os.readlink(fd))
        except OSError:  # closed between listing and reading
            continue
    return any(target.startswith("/dev/nvidia") for target in targets)


def test_cuda_job_runs_in_a_fresh_child_and_never_in_the_worker_parent(tmp_path: Path):
    server = start_server(tmp_path / "home", tmp_path / "serve.log")
    try:
        (worker,) = children(server.process.pid)
        key = (tmp_path / "home" / "api_key").read_text().strip()
        with Client(server.url, key, retries=0) as client:
            job = client.submit(SPEC)
            wait_for(
                lambda: (client.get(job["id"]).get("progress") or {}).get("step"),
                DEADLINE_S,
                "the cuda job to make progress",
                poll_s=0.1,
            )
            pool = children(worker)
            assert any(uses_cuda_driver(pid) for pid in pool), "no pool child runs on the GPU"
            assert not uses_cuda_driver(worker)
            ended = client.wait(job["id"], timeout=DEADLINE_S)
        assert ended["state"] == "succeeded", ended.get("error")
        wait_gone(pool, 30, "the child that ran the job to exit")
        assert not uses_cuda_driver(worker)
    finally:
        stop_process(server.process, sig=signal.SIGINT, timeout_s=30)
