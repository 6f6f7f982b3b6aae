"""Running out of memory, on the device or the host, fails a job ``out_of_memory``.

Each failure is the real one: a tensor or a buffer too large for any machine (1 PiB is more
than a process's address space), raised and caught as a job's run would be, then mapped by
the worker's own code.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from noisefa.engine.contract.states import FailureReason, JobState
from noisefa.worker.outcomes import failure_outcome

PEBIBYTE = 1 << 50


def raised(allocate: Callable[[], object]) -> Exception:
    try:
        allocate()
    except Exception as exc:
        return exc
    raise AssertionError("the allocation succeeded")


@pytest.mark.parametrize(
    "allocate",
    [
        pytest.param(lambda: torch.empty(PEBIBYTE, dtype=torch.uint8), id="torch-cpu-tensor"),
        pytest.param(lambda: bytearray(PEBIBYTE), id="python-buffer"),
    ],
)
def test_host_out_of_memory_fails_the_job_out_of_memory(allocate):
    exc = raised(allocate)
    assert not isinstance(exc, torch.OutOfMemoryError)  # torch says so only for devices
    outcome = failure_outcome(exc, "job test: attempt 1")
    assert outcome["state"] == JobState.FAILED
    assert outcome["error_reason"] == FailureReason.OUT_OF_MEMORY
    assert "host memory" in outcome["error_message"]


def test_device_out_of_memory_fails_the_job_out_of_memory():
    def allocate() -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 PiB")

    outcome = failure_outcome(raised(allocate), "job test: attempt 1")
    assert outcome["error_reason"] == FailureReason.OUT_OF_MEMORY
    assert "device memory" in outcome["error_message"]


def test_another_runtime_error_stays_internal():
    def fail() -> None:
        torch.zeros(2, 3) @ torch.zeros(2, 3)  # a shape error: RuntimeError, not memory

    outcome = failure_outcome(raised(fail), "job test: attempt 1")
    assert outcome["error_reason"] == FailureReason.INTERNAL
    assert "RuntimeError" in outcome["error_message"]
