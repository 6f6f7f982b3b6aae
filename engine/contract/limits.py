"""Size limits on jobs, one place for all of them.

The engine enforces them while validating a spec; the service fills them from its settings
(``NOISEFA_MAX_*``), and the CLI reads the same environment variables.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from .spec import JobSpec


class Limits(BaseModel):
    """Upper bounds on what one job may ask for."""

    max_width: int = Field(4096, ge=1, description="Widest hidden layer.")
    max_depth: int = Field(8, ge=1, description="Most hidden layers.")
    max_epochs: int = Field(1000, ge=1, description="Most epochs in one phase.")
    max_samples_per_epoch: int = Field(10_000_000, ge=1, description="Most noise samples/epoch.")
    max_experiment_runs: int = Field(
        64, ge=1, description="Most child runs (conditions × seeds) of one experiment."
    )

    @classmethod
    def from_env(cls) -> Limits:
        """Limits from ``NOISEFA_MAX_WIDTH`` etc., defaults where unset."""
        values = {}
        for name in cls.model_fields:
            raw = os.environ.get(f"NOISEFA_{name.upper()}")
            if raw is not None:
                values[name] = int(raw)
        return cls(**values)

    def check(self, spec: JobSpec) -> None:
        """Raise ``ValueError`` naming the field and the allowed range when over a limit."""
        hidden = spec.model.hidden
        if len(hidden) > self.max_depth:
            raise ValueError(f"model.hidden: at most {self.max_depth} layers, got {len(hidden)}")
        for i, width in enumerate(hidden):
            if width > self.max_width:
                raise ValueError(
                    f"model.hidden[{i}]: width must be in [1, {self.max_width}], got {width}"
                )
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
