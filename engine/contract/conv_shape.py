"""The shapes a conv network's blocks run at, from the data's input shape (no torch).

Each ``model.conv`` entry is a convolution whose padding keeps the size (odd kernel,
``padding = kernel_size // 2``), the activation, then a 2×2 max-pool that halves each side
(rounding down, as ``max_pool2d`` does). The spec check, the resource estimates and the
model read these sizes from this one place, so a network the engine would build with an
empty feature map is refused at submit, naming ``model.conv``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

POOL = 2  # each block's max-pool: kernel and stride


@dataclass(frozen=True)
class ConvBlock:
    """One conv block's sizes: channels in and out, and the spatial size it convolves at."""

    in_channels: int
    out_channels: int
    kernel_size: int
    height: int
    width: int

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.out_channels, self.in_channels, self.kernel_size, self.kernel_size)

    @property
    def kernel_entries(self) -> int:
        """Entries of the kernel (and of a feedback kernel of its shape)."""
        return math.prod(self.weight_shape)

    @property
    def macs(self) -> int:
        """Multiply-adds of one sample's convolution (same padding: one output per pixel)."""
        return self.kernel_entries * self.height * self.width

    @property
    def output_size(self) -> int:
        """Floats of one sample's conv output (before the pool)."""
        return self.out_channels * self.height * self.width

    @property
    def pooled_size(self) -> int:
        return self.out_channels * (self.height // POOL) * (self.width // POOL)


def image_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    """``(C, H, W)`` of one sample. ``(H, W)`` images have one channel; a flat sample whose
    size is a square is a one-channel square image (``digits`` is stored flat, 64 = 8×8, and
    so are flattened uploads); any other shape has no image (``ValueError`` naming
    ``model.conv``)."""
    shape = tuple(input_shape)
    if len(shape) == 3:
        return shape  # type: ignore[return-value]
    if len(shape) == 2:
        return (1, *shape)
    side = math.isqrt(shape[0]) if len(shape) == 1 else 0
    if side > 0 and side * side == shape[0]:
        return (1, side, side)
    raise ValueError(
        f"model.conv: convolutions need image inputs, (C, H, W), (H, W) or a flat square "
        f"(H·H); the dataset's samples have shape {list(shape)}"
    )


def conv_blocks(
    input_shape: Sequence[int], channels: Sequence[int], kernel_size: int
) -> list[ConvBlock]:
    """Every block's sizes, in order; ``ValueError`` naming ``model.conv`` when a pool would
    leave an empty feature map (e.g. a fourth pool of an 8×8 input)."""
    if not channels:
        return []
    c, h, w = image_shape(input_shape)
    blocks = []
    for index, out in enumerate(channels):
        if h < POOL or w < POOL:
            raise ValueError(
                f"model.conv: {len(channels)} conv blocks are too many for {_spatial(input_shape)} "
                f"inputs; block {index} would pool a {h}×{w} map (each block halves the "
                f"size, so at most {max_blocks(input_shape)} fit)"
            )
        blocks.append(ConvBlock(c, out, kernel_size, h, w))
        c, h, w = out, h // POOL, w // POOL
    return blocks


def feature_size(input_shape: Sequence[int], channels: Sequence[int], kernel_size: int) -> int:
    """Floats the conv blocks hand to the first fully connected layer (the flat input if
    there are no blocks)."""
    blocks = conv_blocks(input_shape, channels, kernel_size)
    return blocks[-1].pooled_size if blocks else math.prod(input_shape)


def max_blocks(input_shape: Sequence[int]) -> int:
    """How many blocks an input of this shape allows (each needs a map of at least 2×2)."""
    _, h, w = image_shape(input_shape)
    return int(math.log2(min(h, w))) if min(h, w) >= POOL else 0


def _spatial(input_shape: Sequence[int]) -> str:
    _, h, w = image_shape(input_shape)
    return f"{h}×{w}"
