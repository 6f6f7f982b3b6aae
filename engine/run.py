"""Run one job end to end: set up data, model and phases, train, write ``result.json``.

This is the engine's entry point for the CLI and the worker. Re-running a job into the same
folder resumes from its newest checkpoint; a folder holding another spec's checkpoints is
refused rather than overwritten.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .callbacks import RunCallbacks
from .checkpoint import Checkpoint, latest_checkpoint, load_checkpoint, load_model_state
from .contract import metric_names as mn
from .contract.errors import CheckpointError, InvalidSpecError
from .contract.spec import JobSpec, MetaLossSpec, NoiseSpec
from .datasets import Dataset, dataset_info, load_dataset
from .meta import MetaLoss
from .model import MLP, build_model
from .noise import NoiseSource
from .trainer import Phase, Trainer, derive_seed

log = logging.getLogger(__name__)


def resolve_device(requested: str) -> str:
    """``auto`` → ``cuda`` when available, else ``cpu`` (CUDA is touched only here)."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise InvalidSpecError("device: 'cuda' requested but no CUDA device is available")
    return requested


def run_job(
    spec: JobSpec,
    out_dir: Path,
    *,
    device: str | None = None,
    callbacks: RunCallbacks | None = None,
    data_dir: Path | None = None,
    init_checkpoint: Path | None = None,
    dataset_files: Mapping[str, Path] | None = None,
) -> dict:
    """Run (or resume) ``spec`` into ``out_dir`` and return the ``result.json`` content.

    ``init_checkpoint`` (else ``spec.init_from`` as a path) supplies the starting weights and
    feedback matrices of a fresh run. ``dataset_files`` maps dataset names that are not in
    the registry (``upload:<id>``) to local ``.npz`` files. Raises :class:`RunStopped` when
    ``callbacks`` asked to stop (a checkpoint is on disk), engine errors for bad inputs;
    torch's OOM propagates.
    """
    out_dir = Path(out_dir)
    device = resolve_device(device or spec.device)
    resume = _find_resume(spec, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    dataset, input_shape, num_classes = _data_and_shape(spec, data_dir, device, dataset_files)

    model = build_model(spec.model, input_shape, num_classes, device)
    if resume is not None:
        load_model_state(model, resume)
    else:
        init = init_checkpoint or (Path(spec.init_from) if spec.init_from else None)
        if init is not None:
            load_model_state(model, load_checkpoint(init))

    trainer = build_trainer(
        spec,
        model,
        dataset,
        out_dir,
        device=device,
        callbacks=callbacks,
        data_dir=data_dir,
        dataset_files=dataset_files,
    )
    progress = trainer.run(resume)
    return write_result(spec, progress.history, trainer.last_checkpoint, out_dir)


def build_trainer(
    spec: JobSpec,
    model: MLP,
    dataset: Dataset | None,
    out_dir: Path,
    *,
    device: str,
    callbacks: RunCallbacks | None = None,
    data_dir: Path | None = None,
    dataset_files: Mapping[str, Path] | None = None,
) -> Trainer:
    """The trainer of one run: its phases (with meta-loss tasks) and fixed readout noise.

    Shared by :func:`run_job` and the batched trainer, so both measure a run identically.
    """
    input_shape, num_classes = model.config.input_shape, model.config.num_classes
    noise_spec = spec.pretrain.noise if spec.pretrain is not None else NoiseSpec()
    phases = _plan_phases(spec, dataset, noise_spec, input_shape, num_classes, device)
    for phase in phases:
        block = spec.pretrain if phase.name == "pretrain" else spec.train
        if block is not None and block.meta_loss is not None:
            phase.meta = build_meta_loss(
                block.meta_loss, spec, input_shape, num_classes, device, data_dir, dataset_files
            )
    readout_gen = torch.Generator(device=device)
    readout_gen.manual_seed(derive_seed(spec.model.seed, "readout"))
    readout_x = NoiseSource(noise_spec, input_shape, num_classes, generator=readout_gen).inputs(
        spec.metrics.readout_size
    )
    return Trainer(spec, model, phases, out_dir, readout_x=readout_x, callbacks=callbacks)


def write_result(
    spec: JobSpec, history: list[dict[str, Any]], final_checkpoint: Path | None, out_dir: Path
) -> dict:
    """Write ``result.json`` atomically into ``out_dir`` and return its content."""
    result = build_result(spec, history, final_checkpoint, out_dir)
    tmp = out_dir / ".result.json.tmp"
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, out_dir / "result.json")
    return result


def _find_resume(spec: JobSpec, out_dir: Path) -> Checkpoint | None:
    """The newest checkpoint in ``out_dir`` if it is this spec's; refuse another spec's."""
    path = latest_checkpoint(out_dir) if out_dir.is_dir() else None
    if path is None:
        return None
    checkpoint = load_checkpoint(path)
    if checkpoint.fingerprint != spec.fingerprint():
        raise CheckpointError(
            f"{out_dir} holds checkpoints of a different spec (fingerprint "
            f"{checkpoint.fingerprint}, this spec {spec.fingerprint()}); "
            "use another output folder"
        )
    return checkpoint


def build_meta_loss(
    meta_spec: MetaLossSpec,
    spec: JobSpec,
    input_shape: tuple[int, ...],
    num_classes: int,
    device: str,
    data_dir: Path | None,
    dataset_files: Mapping[str, Path] | None,
) -> MetaLoss:
    """A phase's meta-loss measurer with its task datasets loaded onto the device."""
    tasks = {
        name: load_dataset(name, data_dir, device, dataset_files)
        for name in dict.fromkeys(meta_spec.tasks)
    }
    return MetaLoss(
        meta_spec, tasks, input_shape=input_shape, num_classes=num_classes, seed=spec.model.seed
    )


def _data_and_shape(
    spec: JobSpec,
    data_dir: Path | None,
    device: str,
    dataset_files: Mapping[str, Path] | None = None,
) -> tuple[Dataset | None, tuple[int, ...], int]:
    """The training data (if any) on the device, and the network's input shape and classes."""
    dataset = None
    if spec.train is not None:
        dataset = load_dataset(spec.train.dataset, data_dir, device, dataset_files)
        if spec.shape_dataset == dataset.name:
            return dataset, dataset.input_shape, dataset.num_classes
    input_shape, num_classes = dataset_info(spec.shape_dataset, data_dir, dataset_files)
    if dataset is not None and (dataset.input_shape, dataset.num_classes) != (
        tuple(input_shape),
        num_classes,
    ):
        raise InvalidSpecError(
            f"train.dataset {dataset.name!r} has inputs {dataset.input_shape} and "
            f"{dataset.num_classes} classes, but pretrain.dataset {spec.shape_dataset!r} "
            f"has {tuple(input_shape)} and {num_classes}"
        )
    return dataset, tuple(input_shape), num_classes


def _plan_phases(
    spec: JobSpec,
    dataset: Dataset | None,
    noise_spec: NoiseSpec,
    input_shape: tuple[int, ...],
    num_classes: int,
    device: str,
) -> list[Phase]:
    """The job's phases in order, each with its batch source."""
    phases = []
    if spec.pretrain is not None:
        block = spec.pretrain
        noise = NoiseSource(
            noise_spec, input_shape, num_classes, generator=torch.Generator(device=device)
        )
        phases.append(
            Phase(
                "pretrain",
                block.epochs,
                block.batch_size,
                block.samples_per_epoch,
                block.optimizer,
                noise=noise,
            )
        )
    if spec.train is not None:
        block = spec.train
        phases.append(
            Phase(
                "train",
                block.epochs,
                block.batch_size,
                len(dataset.x_train),
                block.optimizer,
                dataset=dataset,
            )
        )
    return phases


def build_result(
    spec: JobSpec, history: list[dict[str, Any]], final_checkpoint: Path | None, out_dir: Path
) -> dict:
    """``result.json``: spec, last epoch's metrics, a per-phase summary, final checkpoint."""
    phases = []
    for name in spec.phases():
        points = [p for p in history if p["phase"] == name]
        if not points:
            continue
        last_epoch = max(p["epoch"] for p in points)
        phases.append({"name": name, "epochs": last_epoch})
    final_metrics: dict[str, float] = {}
    if phases:
        last = phases[-1]
        final_metrics = {
            p["name"]: p["value"]
            for p in history
            if p["phase"] == last["name"] and p["epoch"] == last["epochs"]
        }
    return {
        "spec": json.loads(spec.canonical_json()),
        "final_metrics": final_metrics,
        "summary": summarize_history(history),
        "final_checkpoint": (
            final_checkpoint.relative_to(out_dir).as_posix() if final_checkpoint else None
        ),
        "phases": phases,
    }


def summarize_history(history: list[dict[str, Any]]) -> dict[str, Any]:
    """Per phase: first and last alignment angle of the readout layer, best test accuracy."""
    summary: dict[str, Any] = {}
    layers = [int(p["name"].split("/")[1]) for p in history if p["name"].startswith("alignment")]
    last_layer = max(layers, default=0)
    angle_name = mn.layer_metric(mn.ALIGNMENT_ANGLE, last_layer)
    for phase in dict.fromkeys(p["phase"] for p in history):
        points = [p for p in history if p["phase"] == phase]
        angles = sorted((p["epoch"], p["value"]) for p in points if p["name"] == angle_name)
        tests = [(p["value"], p["epoch"]) for p in points if p["name"] == mn.TEST_ACCURACY]
        entry: dict[str, Any] = {
            "epochs": max(p["epoch"] for p in points),
            "last_layer": last_layer,
            "alignment_angle_first": angles[0][1] if angles else None,
            "alignment_angle_last": angles[-1][1] if angles else None,
        }
        if tests:
            best, best_epoch = max(tests, key=lambda t: (t[0], -t[1]))
            entry |= {"best_test_accuracy": best, "best_test_accuracy_epoch": best_epoch}
        summary[phase] = entry
    return summary
