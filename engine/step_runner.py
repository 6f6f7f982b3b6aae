"""Running a stack's training step: eagerly, or captured once in a CUDA graph and replayed.

A step of small layers is launch-bound on a GPU: dozens of tiny kernels, each waiting on
the CPU to issue it. Captured in a CUDA graph, the whole step (batch gather or noise draw,
forward, rule backward, optimizer) is one launch. Capture needs a step that never syncs
with the host and reads and writes tensors that keep their addresses; the stacked step is
built that way (:mod:`.batches`, :mod:`.stacked_optim`). The runs' noise generators are
registered with the graph, so each replay advances them as eager draws would.

The first ``warmup`` calls run eagerly on a side stream (as torch requires before capture;
they are real steps), the next call captures the step and replays it. Anything that makes
capture fail falls back to eager for the rest of the phase, with a warning in the log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch

from .process_choices import CHOICES

log = logging.getLogger(__name__)

Step = Callable[[], None]
WARMUP_STEPS = 3


class EagerStep:
    """Calls the step as it is: the CPU path, and the fallback where capture fails."""

    captured = False

    def __init__(self, step: Step):
        self.step = step

    def __call__(self) -> None:
        self.step()


class CudaGraphStep:
    """Warm up, capture once, then replay the step as one CUDA graph launch per call."""

    def __init__(
        self, step: Step, generators: Sequence[torch.Generator] = (), warmup: int = WARMUP_STEPS
    ):
        self.step = step
        self.generators = list(generators)
        self.warmup = warmup
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.eager = False

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def __call__(self) -> None:
        self.calls += 1
        if self.graph is not None:
            self.graph.replay()
        elif self.eager:
            self.step()
        elif self.calls <= self.warmup:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.step()
            torch.cuda.current_stream().wait_stream(side)
        else:
            self._capture_and_replay()

    def _capture_and_replay(self) -> None:
        graph = torch.cuda.CUDAGraph()
        try:
            for generator in self.generators:
                graph.register_generator_state(generator)
            with torch.cuda.graph(graph):
                self.step()
        except Exception as exc:  # noqa: BLE001 - any capture failure means: run eagerly
            log.warning("CUDA graph capture failed (%s); running the step eagerly", exc)
            self.eager = True
            self.step()  # the capture ran nothing: this call's step is still due
            return
        self.graph = graph
        log.info("captured the training step in a CUDA graph")
        graph.replay()


def make_step_runner(
    step: Step, device: torch.device, generators: Sequence[torch.Generator] = ()
) -> EagerStep | CudaGraphStep:
    """A CUDA-graph runner on CUDA (unless the process's ``cuda_graphs`` choice is off:
    :mod:`.process_choices`), else eager."""
    if device.type == "cuda" and CHOICES.cuda_graphs:
        return CudaGraphStep(step, generators)
    return EagerStep(step)
