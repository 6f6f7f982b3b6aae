"""Random-noise inputs and labels for pretraining, drawn on the device, fresh every batch.

Inputs come from N(mean, std²) or from the uniform with the same mean and variance
(mean ± std·√3). Labels are a uniformly drawn class per sample, or with ``labels="soft"``
the uniform distribution over classes as the target; hard labels are drawn either way so
accuracy (which sits at chance) is always defined.
"""

from __future__ import annotations

import math

import torch

from .contract.spec import NoiseSpec


class NoiseSource:
    """Batches of noise in the data's input shape, from one device generator."""

    def __init__(
        self,
        spec: NoiseSpec,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        generator: torch.Generator,
    ):
        self.spec = spec
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.generator = generator
        self.device = generator.device

    def inputs(self, batch_size: int) -> torch.Tensor:
        """Noise inputs (B, *input_shape)."""
        shape = (batch_size, *self.input_shape)
        x = torch.empty(shape, device=self.device)
        if self.spec.distribution == "normal":
            return x.normal_(self.spec.mean, self.spec.std, generator=self.generator)
        half_width = self.spec.std * math.sqrt(3.0)
        return x.uniform_(
            self.spec.mean - half_width, self.spec.mean + half_width, generator=self.generator
        )

    def fill(self, x: torch.Tensor, labels: torch.Tensor) -> None:
        """Draw a batch into ``x`` (B, *input_shape) and ``labels`` (B,), in place.

        The same draws, in the same order, as :meth:`batch`: the stacked trainer fills each
        run's slice of its static buffers this way (no allocation, CUDA-graph safe).
        """
        if self.spec.distribution == "normal":
            x.normal_(self.spec.mean, self.spec.std, generator=self.generator)
        else:
            half_width = self.spec.std * math.sqrt(3.0)
            x.uniform_(
                self.spec.mean - half_width, self.spec.mean + half_width, generator=self.generator
            )
        labels.random_(0, self.num_classes, generator=self.generator)

    def batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x, labels, target)``: target is the labels, or (B, C) uniform probabilities."""
        x = self.inputs(batch_size)
        labels = torch.randint(
            self.num_classes, (batch_size,), device=self.device, generator=self.generator
        )
        if self.spec.labels == "soft":
            target = torch.full(
                (batch_size, self.num_classes), 1.0 / self.num_classes, device=self.device
            )
            return x, labels, target
        return x, labels, labels
