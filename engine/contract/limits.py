"""Size limits on jobs, one place for all of them.

The engine enforces them while validating a spec. Each field is written only here: the
service's ``Settings`` inherits them (read from ``NOISEFA_MAX_*``), and the API, the worker
and ``noisefa run`` all pass ``settings.limits`` in. The engine reads no environment itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from .catalogue import builtin_shape, known_datasets
from .conv_shape import conv_blocks

if TYPE_CHECKING:
    from .spec import JobSpec


class Limits(BaseModel):
    """Upper bounds on what one job may ask for."""

    max_width: int = Field(4096, ge=1, description="Widest hidden layer.")
    max_classes: int = Field(
        1000,
        ge=1,
        description="Most classes of a dataset (the output layer's width): refused in a "
        "built-in a spec names, and in an upload.",
    )
    max_depth: int = Field(8, ge=1, description="Most hidden layers.")
    max_conv_layers: int = Field(6, ge=0, description="Most conv blocks (`model.conv` entries).")
    max_channels: int = Field(512, ge=1, description="Most output channels of one conv block.")
    max_epochs: int = Field(1000, ge=1, description="Most epochs in one phase.")
    max_samples_per_epoch: int = Field(10_000_000, ge=1, description="Most noise samples/epoch.")
    max_experiment_runs: int = Field(
        64, ge=1, description="Most child runs (conditions × seeds) of one experiment."
    )

    def check(self, spec: JobSpec) -> None:
        """Raise ``ValueError`` naming the field and the allowed range when over a limit."""
        over = self.model_size_error(spec.model.hidden, spec.model.conv)
        if over is not None:
            raise ValueError(f"model.{over[0]}: {over[1]}")
        self._check_conv(spec)
        self._check_classes(spec)
        for phase in ("pretrain", "train"):
            block = getattr(spec, phase)
            if block is not None and block.epochs > self.max_epochs:
                raise ValueError(
                    f"{phase}.epochs: must be in [1, {self.max_epochs}], got {block.epochs}"
                )
        if spec.pretrain is not None and (
            spec.pretrain.samples_per_epoch > self.max_samples_per_epoch
        ):
            raise ValueError(
                "pretrain.samples_per_epoch: must be in "
                f"[1, {self.max_samples_per_epoch}], got {spec.pretrain.samples_per_epoch}"
            )

    def model_size_error(
        self, hidden: Sequence[int], conv: Sequence[int]
    ) -> tuple[str, str] | None:
        """The first of a model's layer lists over a limit, as ``(field under model, why)``;
        None when both are within. Specs and uploaded checkpoints' configs both go by it."""
        if len(hidden) > self.max_depth:
            return "hidden", f"at most {self.max_depth} layers, got {len(hidden)}"
        for i, width in enumerate(hidden):
            if width > self.max_width:
                return f"hidden[{i}]", f"width must be in [1, {self.max_width}], got {width}"
        if len(conv) > self.max_conv_layers:
            return "conv", f"at most {self.max_conv_layers} conv blocks, got {len(conv)}"
        for i, channels in enumerate(conv):
            if channels > self.max_channels:
                return f"conv[{i}]", f"channels must be in [1, {self.max_channels}], got {channels}"
        return None

    def _check_conv(self, spec: JobSpec) -> None:
        """(For a built-in shape dataset) conv blocks few enough that no pool meets an empty
        map (an upload's shape is checked at submit)."""
        conv = spec.model.conv
        if conv and spec.shape_dataset in known_datasets():
            conv_blocks(builtin_shape(spec.shape_dataset)[0], conv, spec.model.kernel_size)

    def _check_classes(self, spec: JobSpec) -> None:
        """The output layer is as wide as the data's class count; known here for built-ins
        (an upload's is checked when it is uploaded)."""
        for phase in ("pretrain", "train"):
            block = getattr(spec, phase)
            name = block.dataset if block is not None else None
            if name in known_datasets():
                classes = builtin_shape(name)[1]
                if classes > self.max_classes:
                    raise ValueError(
                        f"{phase}.dataset: {name!r} has {classes} classes; at most "
                        f"max_classes ({self.max_classes}) are allowed"
                    )
