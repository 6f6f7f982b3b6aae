"""How an attempt ended, as ``repo.finish``'s keyword arguments: the state, and for a failed
one the reason and a message for the caller (never a server path or a stack trace)."""

from __future__ import annotations

import logging
from typing import Any

import torch
from pydantic import ValidationError

from noisefa.engine.contract.errors import EngineError, RunStopped
from noisefa.engine.contract.states import FailureReason, JobState

from .callbacks import JobCallbacks

log = logging.getLogger(__name__)

HOST_OOM_MESSAGE = "DefaultCPUAllocator: can't allocate memory"


def failed(reason: FailureReason, message: str) -> dict[str, Any]:
    """A failed attempt's outcome."""
    return {"state": JobState.FAILED, "error_reason": reason, "error_message": message}


def run_outcome(
    result: dict | BaseException, callbacks: JobCallbacks, attempt_name: str
) -> dict[str, Any]:
    """The outcome of a run the engine trained: its result, or the exception it left with
    (:class:`RunStopped`: cancelled, or past its time limit)."""
    if isinstance(result, RunStopped):
        expired = callbacks.expired_time_limit()
        if expired is not None:
            return failed(FailureReason.TIME_LIMIT, expired.message())
        return {"state": JobState.CANCELLED}
    if isinstance(result, Exception):
        return failure_outcome(result, attempt_name)
    if isinstance(result, BaseException):
        raise result  # KeyboardInterrupt, SystemExit: not the run's failure
    return {"state": JobState.SUCCEEDED, "result": result}


def failure_outcome(exc: Exception, attempt_name: str) -> dict[str, Any]:
    """``finish``'s keyword arguments for an attempt that raised ``exc``: the reason it names
    (engine errors carry theirs; running out of device or host memory is ``out_of_memory``;
    anything else is ``internal``, logged with its traceback)."""
    if isinstance(exc, ValidationError):
        return failed(FailureReason.INVALID_SPEC, f"the stored spec is no longer valid: {exc}")
    if isinstance(exc, EngineError):
        return failed(exc.reason, str(exc) or type(exc).__name__)
    memory = out_of_memory(exc)
    if memory is not None:
        log.error("%s ran out of %s memory", attempt_name, memory, exc_info=exc)
        return failed(
            FailureReason.OUT_OF_MEMORY,
            f"the job ran out of {memory} memory; try a smaller model or batch",
        )
    log.error("%s crashed", attempt_name, exc_info=exc)
    return failed(
        FailureReason.INTERNAL,
        f"the worker failed unexpectedly ({type(exc).__name__}); see its log",
    )


def out_of_memory(exc: BaseException) -> str | None:
    """``device`` or ``host`` when ``exc`` says an allocation failed there, else None.

    torch raises :class:`torch.OutOfMemoryError` for an accelerator, but a plain
    ``RuntimeError`` ("DefaultCPUAllocator: can't allocate memory ...") when host memory runs
    out in a tensor allocation; Python's own allocations raise ``MemoryError``.
    """
    if isinstance(exc, torch.OutOfMemoryError):
        return "device"
    if isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and HOST_OOM_MESSAGE in str(exc)
    ):
        return "host"
    return None
