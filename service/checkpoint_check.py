"""Checking an uploaded checkpoint without trusting it, and without torch.

A checkpoint is a safetensors file (:mod:`noisefa.engine.contract.checkpoint_format`). In
order, nothing read before it is bounded:

1. the 8-byte header length against the file size and ``max_checkpoint_header_bytes`` (413);
2. the JSON header: the ``noisefa`` metadata (format version, a spec the engine accepts, a
   model config within the limits, progress, normalisation: :mod:`.checkpoint_metadata`)
   and every tensor's dtype, shape and byte range, which must tile the data exactly (a
   truncated or padded file is refused here);
3. the model's tensors against the model config: each layer's weight and bias, batch-norm
   tensors, and per-layer feedback buffers of a shape a rule can have; nothing else;
4. the values, one chunk of at most :data:`CHUNK_BYTES` at a time: floats must be finite and
   the tensors must hash to the checksum the writer stored with them;
5. last, the ``safetensors`` library opens the file (header only), so what passes is what the
   worker's reader (``engine.checkpoint.load_checkpoint``) reads.

Nothing is unpickled: safetensors holds raw numbers and JSON. Each refusal is an
:class:`~.npz_check.InvalidUpload` naming the metadata field or the tensor.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from safetensors import SafetensorError, safe_open

from noisefa.engine.contract.catalogue import known_datasets
from noisefa.engine.contract.checkpoint_format import (
    FLOAT_DTYPES,
    TENSOR_SECTIONS,
    TORCH_DTYPES,
    StoredModelConfig,
)
from noisefa.engine.contract.conv_shape import conv_blocks, feature_size
from noisefa.engine.contract.limits import Limits

from .checkpoint_metadata import (
    SAFE_NAME,
    check_limits,
    check_matches_spec,
    checked_metadata,
    checked_spec,
)
from .npz_check import InvalidUpload

CHUNK_BYTES = 1 << 20
"""Most bytes of one tensor held in memory while its values are checked."""
LENGTH_BYTES = 8
NUMPY_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
}
MODEL_DTYPE = "F32"
MAX_ECHOED_DIMS = 6  # a shape is file content: a message quotes this many dimensions at most
_BUFFER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class CheckpointLimits:
    """The deployment's bounds on one uploaded checkpoint (from its settings)."""

    max_header_bytes: int
    limits: Limits


@dataclass(frozen=True)
class CheckpointInfo:
    """What validation learnt about a checkpoint."""

    model_config: dict[str, Any]
    trained_on: str | None  # the built-in dataset it trained on; None for any other


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as the header declares it; ``begin``/``end`` count from the data's start."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def check_checkpoint(path: Path, limits: CheckpointLimits) -> CheckpointInfo:
    """Validate the safetensors checkpoint at ``path``; :class:`InvalidUpload` if refused."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        header, data_start = _read_header(handle, size, limits.max_header_bytes)
        meta = checked_metadata(header.pop("__metadata__", None))
        spec = checked_spec(meta)
        config = meta.model_config_
        check_limits(config, limits.limits)
        check_matches_spec(config, spec)
        entries = _entries(header, size - data_start)
        _check_model_tensors(entries, config)
        digest = _check_values(handle, entries, data_start)
    if meta.tensors_sha256 is not None and digest != meta.tensors_sha256:
        raise InvalidUpload(
            "metadata.tensors_sha256", "the tensors do not match the checksum stored with them"
        )
    _open_with_safetensors(path)
    trained = spec.train.dataset if spec.train is not None else None
    return CheckpointInfo(
        model_config=config.model_dump(),
        trained_on=trained if trained in known_datasets() else None,
    )


def _read_header(handle: BinaryIO, size: int, max_header_bytes: int) -> tuple[dict, int]:
    """The JSON header (413 past ``max_header_bytes``) and where the data starts."""
    raw = handle.read(LENGTH_BYTES)
    if len(raw) < LENGTH_BYTES:
        raise InvalidUpload("file", "not a safetensors file: shorter than its header length")
    length = int.from_bytes(raw, "little")
    if LENGTH_BYTES + length > size:  # a pickle, a zip, a cut-off file
        raise InvalidUpload(
            "file",
            f"not a safetensors file, or truncated: the header declares {length} bytes but "
            f"the file holds {size - LENGTH_BYTES} after its length",
        )
    if length > max_header_bytes:
        raise InvalidUpload(
            "max_checkpoint_header_bytes",
            f"the header declares {length} bytes, over {max_header_bytes}",
            status=413,
        )
    try:
        header = json.loads(handle.read(length))
    except (UnicodeDecodeError, ValueError) as error:
        raise InvalidUpload("file", "not a safetensors file: its header is not JSON") from error
    except RecursionError as error:  # "[[[[…" deeper than the parser's stack
        raise InvalidUpload("file", "its JSON header nests too deeply to read") from error
    if not isinstance(header, dict):
        raise InvalidUpload("file", "not a safetensors file: its header is not a JSON object")
    return header, LENGTH_BYTES + length


def _entries(header: dict[str, Any], data_bytes: int) -> list[TensorEntry]:
    """Every tensor's entry, checked to tile the ``data_bytes`` after the header exactly."""
    entries = []
    for name, raw in header.items():
        field = _tensor_field(name)
        if name.split(".", 1)[0] not in TENSOR_SECTIONS or "." not in name:
            raise InvalidUpload(
                field, f"tensor names start with one of {[s + '.' for s in TENSOR_SECTIONS]}"
            )
        if not isinstance(raw, dict):
            raise InvalidUpload(field, "its header entry is not an object")
        dtype, shape, offsets = raw.get("dtype"), raw.get("shape"), raw.get("data_offsets")
        if dtype not in NUMPY_DTYPES:
            raise InvalidUpload(
                field, f"dtype {str(dtype)[:20]!r} is not one of {sorted(NUMPY_DTYPES)}"
            )
        if not _ints(shape, 0) or not _ints(offsets, 2):
            raise InvalidUpload(field, "shape and data_offsets must be lists of integers ≥ 0")
        begin, end = offsets
        if end - begin != np.dtype(NUMPY_DTYPES[dtype]).itemsize * math.prod(shape):
            raise InvalidUpload(
                field, f"data_offsets do not hold a {dtype} tensor of {_shape_text(shape)}"
            )
        entries.append(TensorEntry(name, dtype, tuple(shape), begin, end))
    position = 0
    for entry in sorted(entries, key=lambda e: (e.begin, e.end)):
        if entry.begin != position:
            raise InvalidUpload(_tensor_field(entry.name), "data_offsets overlap or leave a gap")
        position = entry.end
    if position != data_bytes:
        raise InvalidUpload(
            "file",
            f"truncated or padded: the tensors hold {position} bytes, the file {data_bytes}",
        )
    return entries


def _ints(value: Any, length: int) -> bool:
    """A list of integers ≥ 0 (of ``length`` items when ``length`` is not 0)."""
    return (
        isinstance(value, list)
        and (length == 0 or len(value) == length)
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
    )


def _check_model_tensors(entries: list[TensorEntry], config: StoredModelConfig) -> None:
    """``model.*`` as the config's network holds them, whatever its rule.

    Every rule's layer (``convs.<k>``, then ``layers.<i>``) has ``weight`` and ``bias``; a
    rule may own one buffer per layer, of the weight's shape or, for rules that send the
    output error directly, (classes, *the layer's input); batch norm adds four tensors and a
    step count per hidden layer. The exact set a rule owns is the engine's to check when it
    loads the weights.
    """
    model = {e.name[len("model.") :]: e for e in entries if e.name.startswith("model.")}
    shapes = _layer_shapes(config)  # layer name → (weight shape, one sample's input shape)
    expected: dict[str, tuple[tuple[int, ...], str]] = {}
    for layer, (weight, _) in shapes.items():
        expected[f"{layer}.weight"] = (weight, MODEL_DTYPE)
        expected[f"{layer}.bias"] = ((weight[0],), MODEL_DTYPE)
    if config.batch_norm:
        for j, width in enumerate(config.hidden):
            for tensor in ("weight", "bias", "running_mean", "running_var"):
                expected[f"norms.{j}.{tensor}"] = ((width,), MODEL_DTYPE)
            expected[f"norms.{j}.num_batches_tracked"] = ((), "I64")
    for name, (shape, dtype) in expected.items():
        entry = model.get(name)
        if entry is None:
            raise InvalidUpload(
                f"tensors.model.{name}", "missing: the model its model_config describes has it"
            )
        _check_entry(entry, {shape}, dtype)
    for name, entry in model.items():
        if name in expected:
            continue
        layer = name.rsplit(".", 1)[0]
        if layer not in shapes or not _BUFFER.match(name.rsplit(".", 1)[1]):
            raise InvalidUpload(
                _tensor_field(entry.name), "not a tensor of the model its model_config describes"
            )
        weight, layer_input = shapes[layer]
        _check_entry(entry, {weight, (config.num_classes, *layer_input)}, MODEL_DTYPE)


def _layer_shapes(config: StoredModelConfig) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """Each rule layer's weight shape and input shape, by its name in the model's state."""
    try:
        blocks = conv_blocks(config.input_shape, config.conv, config.kernel_size)
    except ValueError as error:
        raise InvalidUpload("metadata.model_config.conv", str(error)) from error
    shapes = {
        f"convs.{k}": (block.weight_shape, (block.in_channels, block.height, block.width))
        for k, block in enumerate(blocks)
    }
    features = feature_size(config.input_shape, config.conv, config.kernel_size)
    widths = [features, *config.hidden, config.num_classes]
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        shapes[f"layers.{i}"] = ((n_out, n_in), (n_in,))
    return shapes


def _check_entry(entry: TensorEntry, shapes: set[tuple[int, ...]], dtype: str) -> None:
    field = _tensor_field(entry.name)
    if entry.dtype != dtype:
        raise InvalidUpload(field, f"dtype {entry.dtype}; the model's tensor is {dtype}")
    if entry.shape not in shapes:
        wanted = " or ".join(str(list(s)) for s in sorted(shapes))
        raise InvalidUpload(field, f"shape {_shape_text(entry.shape)}; model_config gives {wanted}")


def _check_values(handle: BinaryIO, entries: list[TensorEntry], data_start: int) -> str:
    """Stream every tensor once (finite floats); the tensors' checksum, computed as
    ``engine.checkpoint.tensors_digest`` computes it (name order, torch's dtype names)."""
    hasher = hashlib.sha256()
    for entry in sorted(entries, key=lambda e: e.name):
        hasher.update(f"{entry.name}|{TORCH_DTYPES[entry.dtype]}|{entry.shape}\n".encode())
        dtype = np.dtype(NUMPY_DTYPES[entry.dtype])
        chunk = max(dtype.itemsize, CHUNK_BYTES - CHUNK_BYTES % dtype.itemsize)
        handle.seek(data_start + entry.begin)
        left = entry.end - entry.begin
        while left > 0:
            data = handle.read(min(chunk, left))
            left -= len(data)
            hasher.update(data)
            if entry.dtype in FLOAT_DTYPES and not np.isfinite(np.frombuffer(data, dtype)).all():
                raise InvalidUpload(_tensor_field(entry.name), "holds NaN or infinite values")
    return hasher.hexdigest()


def _open_with_safetensors(path: Path) -> None:
    """The worker reads checkpoints with ``safetensors``: it must agree (header only)."""
    try:
        with safe_open(str(path), framework="numpy") as handle:
            handle.keys()
    except (SafetensorError, OSError, ValueError) as error:
        raise InvalidUpload("file", "not a file the safetensors reader accepts") from error


def _shape_text(shape: Sequence[int]) -> str:
    """A shape from the file for a message: in full when short, else its first dimensions."""
    if len(shape) <= MAX_ECHOED_DIMS:
        return str(list(shape))
    head = ", ".join(str(size) for size in shape[:MAX_ECHOED_DIMS])
    return f"[{head}, ...] ({len(shape)} dimensions)"


def _tensor_field(name: str) -> str:
    """The field naming a tensor: ``tensors.<name>`` when the name is plain, else ``tensors``
    (a name is file content; only a short plain one is echoed)."""
    return f"tensors.{name}" if SAFE_NAME.match(name) else "tensors"
