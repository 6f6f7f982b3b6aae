"""An uploaded checkpoint's ``noisefa`` metadata, checked as the worker's reader will read it
(``engine.checkpoint.load_checkpoint``): format version, a spec the engine accepts, a model
config of the engine's fields within the deployment's limits, progress and normalisation.

Each refusal is an :class:`~.npz_check.InvalidUpload` naming the field (``metadata.<path>``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

from noisefa.engine.contract.checkpoint_format import (
    FORMAT_VERSION,
    METADATA_KEY,
    StoredModelConfig,
)
from noisefa.engine.contract.limits import Limits
from noisefa.engine.contract.spec import JobSpec, ModelSpec

from .npz_check import InvalidUpload

SAFE_NAME = re.compile(r"^[A-Za-z0-9_.]{1,128}$")
"""A name from the file that may be echoed in a message: short and plain."""
MAX_ECHOED_PARTS = 8
"""Most parts of a location in the file that a message names."""
MAX_MESSAGE_CHARS = 300
"""Longest message of a validator about the file (pydantic's messages may quote it)."""


def safe_field(prefix: str, location: Sequence[Any]) -> str:
    """``prefix.<location>`` naming a place in the file, cut at the first part that is not a
    short plain name or an index (keys are file content), and after a few parts."""
    parts = [prefix]
    for part in location[:MAX_ECHOED_PARTS]:
        if isinstance(part, int) or SAFE_NAME.match(str(part)):
            parts.append(str(part))
        else:
            break
    return ".".join(parts)


def _first_error(error: ValidationError, prefix: str) -> tuple[str, str]:
    """The first error's field (:func:`safe_field`) and message (cut short)."""
    first = error.errors(include_url=False)[0]
    return safe_field(prefix, first["loc"]), first["msg"][:MAX_MESSAGE_CHARS]


class _Normalisation(BaseModel):
    mean: list[float] = Field(min_length=1)
    std: list[float] = Field(min_length=1)
    input_shape: list[PositiveInt] = Field(min_length=1)


class _Progress(BaseModel):
    phase: str
    epoch: int = Field(ge=0)
    step: int = Field(ge=0)
    phases_done: list[str]
    history: list[dict[str, Any]]


class StoredMetadata(BaseModel):
    """The ``noisefa`` metadata document, as ``load_checkpoint`` reads it."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    format_version: int
    spec: dict[str, Any]
    fingerprint: str
    model_config_: StoredModelConfig = Field(alias="model_config")
    progress: _Progress
    optimizer_scalars: dict[str, Any]
    tensors_sha256: str | None = None
    input_normalisation: _Normalisation | None = None


def checked_metadata(raw: Any) -> StoredMetadata:
    """The ``noisefa`` metadata, validated (422 naming its field)."""
    text = raw.get(METADATA_KEY) if isinstance(raw, dict) else None
    if not isinstance(text, str):
        raise InvalidUpload(
            "metadata", f"not a noisefa checkpoint: no {METADATA_KEY!r} metadata in its header"
        )
    try:
        document = json.loads(text)
    except ValueError as error:
        raise InvalidUpload("metadata", f"the {METADATA_KEY!r} metadata is not JSON") from error
    except RecursionError as error:  # "[[[[…" deeper than the parser's stack
        raise InvalidUpload(
            "metadata", f"the {METADATA_KEY!r} metadata nests too deeply to read"
        ) from error
    if not isinstance(document, dict):
        raise InvalidUpload("metadata", "must be a JSON object")
    version = document.get("format_version")
    if version != FORMAT_VERSION:
        raise InvalidUpload(
            "metadata.format_version", f"must be {FORMAT_VERSION}, got {str(version)[:20]}"
        )
    try:
        return StoredMetadata.model_validate(document)
    except ValidationError as error:
        raise InvalidUpload(*_first_error(error, "metadata")) from error


def checked_spec(meta: StoredMetadata) -> JobSpec:
    """The stored spec, validated as the worker's reader validates it."""
    try:
        return JobSpec.model_validate(meta.spec)
    except ValidationError as error:
        where, message = _first_error(error, "spec")
        raise InvalidUpload(
            "metadata.spec", f"not a valid job spec ({where}: {message})"
        ) from error


def check_matches_spec(config: StoredModelConfig, spec: JobSpec) -> None:
    """The model config is the stored spec's ``model`` block as the engine built it
    (``MLPConfig.from_spec``: the feedback seed resolved): a checkpoint whose two disagree
    would train one network and report another (422 naming the config's field)."""
    model = spec.model
    for name in ModelSpec.model_fields:
        if name not in StoredModelConfig.model_fields:
            continue
        stored = getattr(config, name)
        wanted = model.resolved_feedback_seed if name == "feedback_seed" else getattr(model, name)
        if stored != wanted:
            raise InvalidUpload(
                f"metadata.model_config.{name}",
                f"{str(stored)[:40]}, but the stored spec's model.{name} gives {str(wanted)[:40]}",
            )


def check_limits(config: StoredModelConfig, limits: Limits) -> None:
    """The model within the deployment's depth, widths, conv blocks and classes (422 naming
    the field)."""
    field = "metadata.model_config"
    over = limits.model_size_error(config.hidden, config.conv)
    if over is not None:
        raise InvalidUpload(f"{field}.{over[0]}", over[1])
    if config.num_classes > limits.max_classes:
        raise InvalidUpload(
            f"{field}.num_classes",
            f"{config.num_classes} classes; at most max_classes ({limits.max_classes})",
        )
