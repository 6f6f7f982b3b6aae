"""A list of stacked tensors (R, *shape) that are views into one flat buffer.

The stacked trainer keeps every parameter of R runs, their gradients and the optimizer's
state in this layout: each tensor is contiguous (so ``bmm`` can write into it), and so is
each run's slice of it, ``views[k][r]``, which is what the fused optimizer updates
(:mod:`.stacked_optim`). Checkpoints and stack changes copy whole runs in and out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


class FlatStack:
    """Tensors of shapes (R, *shape_k), each a contiguous segment of :attr:`flat`."""

    def __init__(
        self,
        runs: int,
        shapes: Sequence[torch.Size],
        *,
        device: torch.device | str,
        dtype: torch.dtype = torch.float32,
    ):
        self.runs = runs
        self.shapes = [torch.Size(shape) for shape in shapes]
        sizes = [runs * math.prod(shape) for shape in self.shapes]
        self.flat = torch.zeros(sum(sizes), device=device, dtype=dtype)
        self.views = [
            segment.view(runs, *shape)
            for segment, shape in zip(self.flat.split(sizes), self.shapes, strict=True)
        ]

    @classmethod
    def from_runs(cls, per_run: Sequence[Sequence[torch.Tensor]]) -> FlatStack:
        """Stack run ``r``'s tensors ``per_run[r]`` (one list per run, same shapes)."""
        first = per_run[0]
        stack = cls(
            len(per_run), [t.shape for t in first], device=first[0].device, dtype=first[0].dtype
        )
        with torch.no_grad():
            for r, tensors in enumerate(per_run):
                for view, tensor in zip(stack.views, tensors, strict=True):
                    view[r].copy_(tensor)
        return stack

    def like(self) -> FlatStack:
        """A zero stack of the same layout (gradients, optimizer moments)."""
        return FlatStack(self.runs, self.shapes, device=self.flat.device, dtype=self.flat.dtype)

    def run(self, r: int) -> list[torch.Tensor]:
        """Run ``r``'s tensors (views, not copies)."""
        return [view[r] for view in self.views]

    def take(self, keep: Sequence[int], views: int | None = None) -> FlatStack:
        """A new stack of the runs ``keep``, in that order (a member left the stack), of the
        first ``views`` tensors (default: all)."""
        shapes = self.shapes[:views]
        taken = FlatStack(len(keep), shapes, device=self.flat.device, dtype=self.flat.dtype)
        index = torch.tensor(list(keep), device=self.flat.device)
        for mine, theirs in zip(self.views[: len(shapes)], taken.views, strict=True):
            theirs.copy_(mine.index_select(0, index))
        return taken
