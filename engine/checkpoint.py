"""Checkpoints: one ``.safetensors`` file holding everything needed to resume bit-exactly.

Tensors: the model's state (forward weights, biases, feedback matrices, batch-norm buffers),
the optimizer's per-parameter state flattened to ``optim.<index>.<key>``, generator states as
uint8 tensors (``rng.<name>``) and the loop's running sums (``extra.<name>``). The safetensors
metadata holds one JSON document under ``"noisefa"``: format version, canonical spec and its
fingerprint, model shape, the input normalisation the model trained with (absent from
checkpoints written before it, and from runs that saw no data), phase, epoch, step, finished
phases, the metric history (so a resumed run can rewrite ``metrics.jsonl``) and a sha256 of
the tensors: safetensors notices a
truncated file or a broken header, the digest notices a flipped byte in the data. Loading reads
safetensors only: never pickle. A damaged file raises :class:`CorruptCheckpointError`, whose
message names the file but not its folder (a worker's folders mean nothing to a client).

File names order the checkpoints of a run: ``<phase>-<epoch:04d>.safetensors`` after ``epoch``
full epochs, ``<phase>-<epoch:04d>-step<step:06d>.safetensors`` when stopped ``step`` steps into
epoch ``epoch``. A run keeps the newest few and each phase's final one
(:func:`names_to_prune`, the one retention rule for run folders and object storage).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .contract.checkpoint_format import FORMAT_VERSION, METADATA_KEY
from .contract.errors import CheckpointError, CorruptCheckpointError, InvalidSpecError
from .contract.spec import JobSpec
from .model import MLP, MLPConfig

CHECKPOINT_DIR = "checkpoints"
PHASE_ORDER = ("pretrain", "train")
# Checkpoints a run folder keeps besides each phase's final one (the service's is a setting).
KEEP_LAST = 2
_NAME = re.compile(r"^(pretrain|train)-(\d{4})(?:-step(\d{6}))?\.safetensors$")


@dataclass
class Progress:
    """Where a run stands: ``epoch`` full epochs done in ``phase``, ``step`` steps into the next."""

    phase: str
    epoch: int
    step: int = 0
    phases_done: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class InputNormalisation:
    """How the model's inputs were standardised from raw values: ``(raw - mean) / std``.

    ``mean`` and ``std`` hold one value per image channel or a single value for every
    channel (:class:`~.datasets.Dataset`'s ``norm_mean``/``norm_std``); ``input_shape`` is
    the model's input. An evaluation re-normalises other datasets with it.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_shape: tuple[int, ...]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InputNormalisation:
        return cls(
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
            input_shape=tuple(int(v) for v in data["input_shape"]),
        )


@dataclass
class Checkpoint:
    """A loaded checkpoint: its tensors (on the CPU) and its metadata."""

    path: Path
    tensors: dict[str, torch.Tensor]
    spec: JobSpec
    fingerprint: str
    model_config: MLPConfig
    progress: Progress
    optimizer_scalars: dict[str, Any]
    normalisation: InputNormalisation | None = None

    def section(self, prefix: str) -> dict[str, torch.Tensor]:
        """Tensors under ``prefix.``, with the prefix removed."""
        start = len(prefix) + 1
        return {k[start:]: v for k, v in self.tensors.items() if k.startswith(prefix + ".")}

    def load_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Restore the optimizer's per-parameter state (hyperparameters come from the spec)."""
        state: dict[int, dict[str, Any]] = {}
        for key, tensor in self.section("optim").items():
            index, name = key.split(".", 1)
            state.setdefault(int(index), {})[name] = tensor
        for key, value in self.optimizer_scalars.items():
            index, name = key.split(".", 1)
            state.setdefault(int(index), {})[name] = value
        full = optimizer.state_dict()
        full["state"] = state
        optimizer.load_state_dict(full)


def checkpoint_name(phase: str, epoch: int, step: int = 0) -> str:
    """File name for a checkpoint after ``epoch`` epochs (+ ``step`` steps) of ``phase``."""
    if step:
        return f"{phase}-{epoch + 1:04d}-step{step:06d}.safetensors"
    return f"{phase}-{epoch:04d}.safetensors"


def checkpoint_order(path: Path) -> tuple[int, int, int] | None:
    """Where a checkpoint file sits in a run (phase, epoch, step), for ordering; None when
    the name is not a checkpoint's."""
    match = _NAME.match(path.name)
    if match is None:
        return None
    phase, epoch, step = match.group(1), int(match.group(2)), int(match.group(3) or 0)
    # A mid-epoch file of epoch e sits after the boundary file of epoch e-1.
    return PHASE_ORDER.index(phase), epoch - 1 if step else epoch, step


def list_checkpoints(out_dir: Path) -> list[Path]:
    """A run's checkpoint files, oldest first (temporary files excluded)."""
    folder = Path(out_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(key, p) for p in folder.iterdir() if (key := checkpoint_order(p)) is not None]
    return [p for _, p in sorted(found)]


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest checkpoint in ``out_dir/checkpoints``, or None."""
    paths = list_checkpoints(out_dir)
    return paths[-1] if paths else None


def final_checkpoint_names(spec: JobSpec) -> set[str]:
    """File names of the checkpoints that end each of the spec's phases (always kept)."""
    return {checkpoint_name(phase, getattr(spec, phase).epochs) for phase in spec.phases()}


def names_to_prune(newest_first: Sequence[str], keep: Collection[str], keep_last: int) -> list[str]:
    """The retention rule: every name but the newest ``keep_last`` and those in ``keep``."""
    return [name for name in newest_first[keep_last:] if name not in keep]


def tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over each tensor's name, dtype, shape and bytes, in name order (CPU tensors)."""
    hasher = hashlib.sha256()
    for key in sorted(tensors):
        tensor = tensors[key].contiguous()
        hasher.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        hasher.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return hasher.hexdigest()


def save_checkpoint(
    path: Path,
    *,
    spec: JobSpec,
    model: MLP,
    progress: Progress,
    optimizer: torch.optim.Optimizer | None = None,
    generators: dict[str, torch.Tensor] | None = None,
    extra: dict[str, torch.Tensor] | None = None,
    normalisation: InputNormalisation | None = None,
) -> Path:
    """Write a checkpoint atomically (temp file, fsync, rename) and return its path.

    ``generators`` maps names to ``Generator.get_state()`` tensors; ``extra`` holds any other
    tensors the loop needs to resume (e.g. running loss sums); ``normalisation`` is the
    training data's input normalisation (None for a run that saw no data).
    """
    tensors: dict[str, torch.Tensor] = {f"model.{k}": v for k, v in model.state_dict().items()}
    scalars: dict[str, Any] = {}
    if optimizer is not None:
        for index, state in optimizer.state_dict()["state"].items():
            for name, value in state.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim.{index}.{name}"] = value
                elif value is not None:
                    scalars[f"{index}.{name}"] = value
    tensors |= {f"rng.{k}": v for k, v in (generators or {}).items()}
    tensors |= {f"extra.{k}": v for k, v in (extra or {}).items()}
    cpu = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    meta = {
        "format_version": FORMAT_VERSION,
        "spec": json.loads(spec.canonical_json()),
        "fingerprint": spec.fingerprint(),
        "model_config": asdict(model.config),
        "progress": asdict(progress),
        "optimizer_scalars": scalars,
        "tensors_sha256": tensors_digest(cpu),
    }
    if normalisation is not None:
        meta["input_normalisation"] = asdict(normalisation)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(cpu, str(tmp), metadata={METADATA_KEY: json.dumps(meta, separators=(",", ":"))})
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint (safetensors only).

    :class:`CorruptCheckpointError` when the file is damaged; :class:`CheckpointError` when
    it is missing, not ours, or of another format version.
    """
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise CheckpointError(f"checkpoint {name} not found")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            raw = (handle.metadata() or {}).get(METADATA_KEY)
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CorruptCheckpointError(
            f"{name} is not a readable safetensors checkpoint ({exc})"
        ) from exc
    if raw is None:
        raise CheckpointError(f"{name} is a safetensors file but not a noisefa checkpoint")
    try:
        meta = json.loads(raw)
        version = meta.get("format_version")
    except (ValueError, AttributeError) as exc:
        raise CorruptCheckpointError(f"checkpoint {name}: unreadable metadata ({exc})") from exc
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {name}: format {version} is not supported (expected {FORMAT_VERSION})"
        )
    expected = meta.get("tensors_sha256")  # absent from checkpoints written before it
    if expected is not None and tensors_digest(tensors) != expected:
        raise CorruptCheckpointError(
            f"checkpoint {name} is damaged: its tensors do not match the checksum written with them"
        )
    try:
        config = meta["model_config"]
        config["input_shape"] = tuple(config["input_shape"])
        normalisation = meta.get("input_normalisation")
        return Checkpoint(
            path=path,
            tensors=tensors,
            spec=JobSpec.model_validate(meta["spec"]),
            fingerprint=meta["fingerprint"],
            model_config=MLPConfig(**config),
            progress=Progress(**meta["progress"]),
            optimizer_scalars=meta["optimizer_scalars"],
            normalisation=InputNormalisation.from_json(normalisation) if normalisation else None,
        )
    except ValidationError as exc:  # intact, but its spec is not one this version accepts
        raise CheckpointError(f"checkpoint {name}: its stored spec is not valid ({exc})") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptCheckpointError(f"checkpoint {name}: malformed metadata ({exc})") from exc


def load_model_state(model: MLP, checkpoint: Checkpoint) -> None:
    """Copy weights, biases, feedback and batch-norm buffers into ``model`` (shapes must match)."""
    state = checkpoint.section("model")
    expected = model.state_dict()
    problems = [f"missing {k}" for k in expected if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in expected]
    problems += [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if problems:
        raise InvalidSpecError(
            f"checkpoint {checkpoint.path.name} does not fit this model: " + "; ".join(problems)
        )
    model.load_state_dict(state)


def model_from_checkpoint(path: Path, device: str | torch.device = "cpu") -> MLP:
    """The checkpoint's model, rebuilt from its stored shape, in eval mode on ``device``."""
    checkpoint = load_checkpoint(path)
    model = MLP(checkpoint.model_config)
    load_model_state(model, checkpoint)
    return model.to(device).eval()


def prune_checkpoints(out_dir: Path, keep: set[str], keep_last: int = KEEP_LAST) -> None:
    """Delete old checkpoints, keeping the newest ``keep_last`` and the names in ``keep``."""
    folder = Path(out_dir) / CHECKPOINT_DIR
    newest_first = [path.name for path in reversed(list_checkpoints(out_dir))]
    for name in names_to_prune(newest_first, keep, keep_last):
        (folder / name).unlink(missing_ok=True)
