"""Which stacked model a stack of runs trains as: the one place the loop learns whether its
runs have conv layers."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .model import MLP
from .stacked_conv import StackedConvNet
from .stacked_model import StackedMLP


def stack_models(
    models: Sequence[MLP], draw_generators: Sequence[torch.Generator]
) -> StackedMLP | StackedConvNet:
    """The stacked model of runs of one shape (:class:`~.stacked_conv.StackedConvNet` when
    they have conv blocks, else :class:`~.stacked_model.StackedMLP`); ``draw_generators[r]``
    is run ``r``'s generator of brSF draws."""
    stacked = StackedConvNet if models[0].config.conv else StackedMLP
    return stacked(models, draw_generators)
