"""What a noisefa checkpoint file is, as far as the API needs to know without torch.

A checkpoint is a safetensors file (an 8-byte little-endian header length, a JSON header
naming every tensor's dtype, shape and byte range, then the bytes) whose header metadata holds
one JSON document under :data:`METADATA_KEY` (:mod:`noisefa.engine.checkpoint` writes and reads
it). The API validates uploaded checkpoints against this module (``service/checkpoint_check``)
and jobs name an uploaded one ``checkpoint:<id>`` in ``init_from``.
"""

from __future__ import annotations

from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from .spec import Activation, ModelSpec, RuleName

FORMAT_VERSION = 1
METADATA_KEY = "noisefa"

CHECKPOINT_PREFIX = "checkpoint:"
"""``init_from: "checkpoint:<id>"`` names an uploaded checkpoint of the caller's project."""

TORCH_DTYPES = {
    "F64": "torch.float64",
    "F32": "torch.float32",
    "F16": "torch.float16",
    "I64": "torch.int64",
    "I32": "torch.int32",
    "I16": "torch.int16",
    "I8": "torch.int8",
    "U8": "torch.uint8",
    "BOOL": "torch.bool",
}
"""The safetensors dtypes a checkpoint may hold, by the name torch gives them (the tensors'
checksum hashes torch's name, see ``engine.checkpoint.tensors_digest``)."""

FLOAT_DTYPES = ("F64", "F32", "F16")
TENSOR_SECTIONS = ("model", "optim", "rng", "extra")
"""Every tensor name starts with one of these and a dot (``engine.checkpoint``'s layout)."""


def checkpoint_upload_id(init_from: str | None) -> str | None:
    """The upload id in ``checkpoint:<id>``; None for a job id (or no ``init_from``)."""
    if init_from is None or not init_from.startswith(CHECKPOINT_PREFIX):
        return None
    return init_from[len(CHECKPOINT_PREFIX) :]


def checkpoint_ref(upload_id: str) -> str:
    """What a job writes in ``init_from`` to start from upload ``upload_id``."""
    return f"{CHECKPOINT_PREFIX}{upload_id}"


class StoredModelConfig(BaseModel):
    """A checkpoint's ``model_config``: exactly the fields of ``engine.model.MLPConfig`` (a
    test holds the two to the same names), so what passes here builds a model in a worker.

    Every field a spec's ``model`` block has too is held to :class:`~.spec.ModelSpec`'s
    bounds (an odd ``kernel_size`` up to 15, seeds below 2**31, ``feedback_scale`` up to
    100, ...) by validating it there: the bounds are written once, in the spec.
    """

    model_config = ConfigDict(extra="forbid")

    input_shape: list[PositiveInt] = Field(min_length=1, max_length=4)
    num_classes: PositiveInt
    hidden: list[PositiveInt]
    conv: list[PositiveInt] = Field(default_factory=list)
    kernel_size: PositiveInt = 5
    activation: Activation
    rule: RuleName
    batch_norm: bool
    seed: int = Field(ge=0)
    feedback_seed: int = Field(ge=0)
    feedback_scale: float = Field(gt=0)

    @field_validator("*")
    @classmethod
    def _within_model_spec(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name not in ModelSpec.model_fields:
            return value
        try:
            ModelSpec.model_validate({info.field_name: value})
        except ValidationError as error:
            message = error.errors(include_url=False)[0]["msg"]
            message = message.removeprefix("Value error, ")
            raise PydanticCustomError(
                "model_spec_bound", "{message}", {"message": message}
            ) from None
        return value
