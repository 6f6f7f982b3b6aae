"""An :class:`~noisefa.worker.epoch_writer.EpochWriter` held busy, for tests of what waits
for it and of what it writes together."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from noisefa.service.repositories.execution import Attempt
from noisefa.service.repositories.running import EpochMetrics
from noisefa.worker.epoch_writer import EpochWriter

DEADLINE_S = 30


@contextmanager
def writer_busy(writer: EpochWriter, attempt: Attempt) -> Iterator[None]:
    """The writer busy writing an epoch of ``attempt`` until the block ends: what is handed
    over inside the block waits, all of it, for the writer's next write."""
    writing, release = threading.Event(), threading.Event()

    def hold(held: bool) -> None:
        writing.set()
        release.wait(DEADLINE_S)

    writer.add(EpochMetrics(attempt, "pretrain", 1, {"loss": 0.5}), hold)
    if not writing.wait(DEADLINE_S):
        raise TimeoutError(f"the epoch writer did not start writing within {DEADLINE_S} s")
    try:
        yield
    finally:
        release.set()
