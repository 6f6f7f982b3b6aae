"""The model block of a job spec: the network's shape and the rule its layers learn by.

Torch-free, like the whole contract package, so the API validates a model without loading
the training stack; :mod:`.spec` re-exports every name here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .spec_base import PositiveInt, SpecModel

RuleName = Literal["bp", "fa", "dfa", "usf", "brsf", "frsf", "kp"]
Activation = Literal["relu", "tanh"]

MAX_KERNEL_SIZE = 15  # a bound on the field (an odd size up to 15×15), not a deployment's limit


class ModelSpec(SpecModel):
    """A network whose layers learn by the chosen rule: optional conv blocks, then fully
    connected layers. Input shape and classes come from the data."""

    conv: list[PositiveInt] = Field(
        default_factory=list,
        description="Output channels of each conv block, in order: a convolution "
        "(`kernel_size`, padding that keeps the size) → the activation → a 2×2 max-pool, before "
        "the `hidden` layers. `[]` (default): no convolutions. Needs image inputs; each block "
        "halves the size, so an 8×8 input allows at most 3 blocks. `[6, 16]` with `hidden` "
        "`[120, 84]` is LeNet-5.",
    )
    kernel_size: int = Field(
        5,
        ge=1,
        le=MAX_KERNEL_SIZE,
        description=f"Side of every conv kernel: odd, in [1, {MAX_KERNEL_SIZE}] (used only "
        "with `conv`).",
    )
    hidden: list[PositiveInt] = Field(
        default_factory=lambda: [100], description="Hidden layer widths, e.g. [100]."
    )
    activation: Activation = Field("relu", description="Hidden activation: `relu` or `tanh`.")
    rule: RuleName = Field(
        "fa",
        description="How the error travels back (docs/rules.md): `bp` backprop (through W); "
        "`fa` feedback alignment (a fixed random B of W's shape); `dfa` direct feedback "
        "alignment (the output error to each layer through a fixed B of shape (classes, "
        "width)); `usf` sign(W); `brsf` |R|∘sign(W), R redrawn every batch; `frsf` "
        "|B|∘sign(W), B fixed; `kp` Kolen-Pollack (B trained with W's gradient and weight "
        "decay). `feedback_scale` scales every random B and R.",
    )
    batch_norm: bool = Field(False, description="Batch norm after each hidden linear layer.")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of forward weights and data order.")
    feedback_seed: int | None = Field(
        None,
        ge=0,
        le=2**31 - 1,
        description="Seed of the feedback matrices and of brSF's per-batch draws; default: "
        "seed + 1_000_003.",
    )
    feedback_scale: float = Field(
        1.0, gt=0, le=100, description="Multiplier on the He-normal feedback init."
    )

    @model_validator(mode="after")
    def _kernel_is_odd(self) -> ModelSpec:
        if self.kernel_size % 2 == 0:
            raise ValueError(
                f"kernel_size: must be odd (so padding keeps the size), got {self.kernel_size}"
            )
        return self

    @property
    def resolved_feedback_seed(self) -> int:
        """The feedback seed actually used (independent of the forward seed by default)."""
        return self.feedback_seed if self.feedback_seed is not None else self.seed + 1_000_003
