"""Viewing inputs as images and fitting one dataset's inputs to another model's shape.

Flat inputs of a square size are single-channel images (``digits``: 64 → 1×8×8); image
inputs (C, H, W) are used as they are. Fitting resizes with bilinear interpolation
(antialiased when shrinking) and maps 1 ↔ 3 channels by repeating or averaging, so a model
of 28×28 digits can be tested on 16×16 USPS, or adapt to 8×8 ``digits``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .contract.errors import InvalidSpecError


def image_shape(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """The (C, H, W) an input shape is viewed as; flat shapes must be a square size."""
    if len(input_shape) == 3:
        return tuple(input_shape)  # type: ignore[return-value]
    if len(input_shape) == 2:
        return (1, *input_shape)
    size = math.prod(input_shape)
    side = math.isqrt(size)
    if side * side != size:
        raise InvalidSpecError(
            f"inputs of shape {tuple(input_shape)} are not images: a flat input must have a "
            "square size to be viewed as one"
        )
    return 1, side, side


def as_images(x: torch.Tensor) -> torch.Tensor:
    """(N, *input_shape) → (N, C, H, W), a view."""
    return x.reshape(len(x), *image_shape(tuple(x.shape[1:])))


def fit_inputs(x: torch.Tensor, input_shape: tuple[int, ...]) -> torch.Tensor:
    """``x`` (N, *shape) resized to (N, *input_shape); unchanged when the shapes agree."""
    input_shape = tuple(input_shape)
    if tuple(x.shape[1:]) == input_shape:
        return x
    channels, height, width = image_shape(input_shape)
    images = as_images(x)  # (N, C, H, W)
    if images.shape[1] != channels:
        if images.shape[1] == 1:
            images = images.expand(-1, channels, -1, -1)
        elif channels == 1:
            images = images.mean(1, keepdim=True)
        else:
            raise InvalidSpecError(
                f"cannot map {images.shape[1]} channels to {channels} "
                f"(inputs {tuple(x.shape[1:])} vs model {input_shape})"
            )
    shrinking = images.shape[-2] > height or images.shape[-1] > width
    images = F.interpolate(
        images, size=(height, width), mode="bilinear", align_corners=False, antialias=shrinking
    )
    return images.reshape(len(x), *input_shape).contiguous()
