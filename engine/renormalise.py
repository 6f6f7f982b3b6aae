"""One dataset's inputs as a model trained on another expects them: resized and re-normalised.

Every dataset is standardised with its own training statistics when it is loaded
(:mod:`.datasets`). A model trained on MNIST but tested on USPS should see USPS as it would
see MNIST-like pixels: standardised with *MNIST's* statistics. So the inputs are taken back to
raw values with the dataset's own statistics, resized to the model's input (:mod:`.images`),
then standardised with the statistics recorded in the model's checkpoint. Resizing is
bilinear, so it commutes with the per-channel affine maps; it runs on raw values so that
channel averaging (3 → 1) mixes pixels, not differently scaled standard scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .checkpoint import InputNormalisation
from .contract.errors import InvalidSpecError
from .datasets import Dataset
from .images import as_images, fit_inputs


def per_channel(values: Sequence[float], images: torch.Tensor) -> torch.Tensor:
    """``values`` (one per channel of ``images`` (N, C, H, W), or one for all) as (1, C, 1, 1)."""
    if len(values) not in (1, images.shape[1]):
        raise InvalidSpecError(
            f"{len(values)} normalisation values for images of {images.shape[1]} channels"
        )
    return torch.tensor(values, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)


def inputs_for_model(
    data: Dataset, x: torch.Tensor, input_shape: tuple[int, ...], model: InputNormalisation | None
) -> torch.Tensor:
    """``x`` (N, *data.input_shape), standardised with ``data``'s statistics, as (N,
    *input_shape) standardised with ``model``'s; only resized when ``model`` is None (each
    dataset keeps its own normalisation) or has ``data``'s statistics (then the values are
    exactly the dataset's own, with no round trip through raw values)."""
    if model is None or (data.norm_mean, data.norm_std) == (model.mean, model.std):
        return fit_inputs(x, input_shape)
    images = as_images(x)
    raw = images * per_channel(data.norm_std, images) + per_channel(data.norm_mean, images)
    fitted = as_images(fit_inputs(raw.reshape(x.shape), input_shape))
    standard = (fitted - per_channel(model.mean, fitted)) / per_channel(model.std, fitted)
    return standard.reshape(len(x), *input_shape)
