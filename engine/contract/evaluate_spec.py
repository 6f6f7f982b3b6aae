"""The ``evaluate`` job: a finished model against datasets and affine shifts.

Imports no torch (part of the contract the API validates against).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from .spec import DeviceName, SpecModel

ShiftKind = Literal["rotate", "translate", "scale"]
Normalize = Literal["model", "own"]

# Per shift kind: the identity severity (no transform is applied there, so its accuracy is
# exactly the plain test accuracy) and the allowed range.
SHIFT_IDENTITY: dict[str, float] = {"rotate": 0.0, "translate": 0.0, "scale": 1.0}
SHIFT_RANGE: dict[str, tuple[float, float]] = {
    "rotate": (-180.0, 180.0),
    "translate": (-64.0, 64.0),
    "scale": (0.05, 10.0),
}


def _default_shifts() -> dict[str, list[float]]:
    return {"rotate": [0, 15, 30], "translate": [0, 2, 4], "scale": [1.0, 0.8, 1.2]}


class EvaluateSpec(SpecModel):
    """A finished model against datasets and affine shifts (out-of-distribution accuracy).

    Shifts (our choices, applied to whole test batches on the device): ``rotate`` by the
    severity in degrees; ``translate`` by the severity in pixels along both axes (a
    diagonal shift); ``scale`` by the severity as a zoom factor about the centre. Uncovered
    pixels take the image's background (the split's minimum value). Datasets whose inputs
    differ from the model's are resized to its input shape first: flat inputs are viewed as
    square single-channel images (``digits``: 8×8), images are resized with bilinear
    interpolation (antialiased when shrinking), and 1 and 3 channels are mapped onto each
    other by repeating or averaging. With ``normalize: model`` each dataset is first taken
    back to raw values with its own statistics, resized, then standardised with the
    statistics the model trained with (recorded in its checkpoint); raw values are pixels on
    a [0, 1] scale for built-in sets and an upload's values as stored.
    """

    kind: Literal["evaluate"] = Field(description="`evaluate`.")
    init_from: str = Field(
        min_length=1,
        max_length=4096,
        description="What to evaluate: a succeeded job's id, `checkpoint:<id>` (an upload, "
        "`POST /v1/checkpoints`), or for `noisefa evaluate` a checkpoint file.",
    )
    datasets: list[str] | None = Field(
        None,
        min_length=1,
        max_length=16,
        description="Test sets; default: the checkpoint's training dataset.",
    )
    shifts: dict[ShiftKind, list[float]] = Field(
        default_factory=_default_shifts,
        description="Severities per shift kind: rotate (degrees), translate (pixels), "
        "scale (factor).",
    )
    normalize: Normalize = Field(
        "model",
        description="`model`: standardise every dataset with the statistics the model trained "
        "with (a checkpoint without them falls back to `own`, with a note in the result); "
        "`own`: each dataset with its own training statistics.",
    )
    device: DeviceName = Field("auto", description="`cpu`, `cuda`, or `auto` (cuda if present).")
    eval_batch_size: int = Field(4096, ge=1, le=1_000_000, description="Evaluation batch size.")

    @field_validator("shifts")
    @classmethod
    def _severities_in_range(cls, shifts: dict[str, list[float]]) -> dict[str, list[float]]:
        for kind, severities in shifts.items():
            low, high = SHIFT_RANGE[kind]
            if not 1 <= len(severities) <= 32:
                raise ValueError(f"{kind}: between 1 and 32 severities, got {len(severities)}")
            for i, value in enumerate(severities):
                if not low <= value <= high:
                    raise ValueError(f"{kind}[{i}]: must be in [{low}, {high}], got {value}")
        return shifts
