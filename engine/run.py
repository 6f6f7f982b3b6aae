"""Run jobs end to end: set up data, model and phases, train, write ``result.json``.

This is the engine's entry point for the CLI and the worker: :func:`run_job` for one job,
:func:`run_jobs` for several trained as one stack (one job is a stack of one). Re-running a
job into the same folder resumes from its newest intact checkpoint (a damaged one is skipped
with a warning); a folder holding another spec's checkpoints is refused, not overwritten.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from .callbacks import RunCallbacks
from .checkpoint import (
    Checkpoint,
    load_checkpoint,
    load_model_state,
)
from .contract.errors import (
    EngineError,
    InvalidSpecError,
)
from .contract.spec import JobSpec, MetaLossSpec, NoiseSpec
from .datasets import Dataset, dataset_info, load_dataset
from .member import Member, Phase, derive_seed
from .meta import MetaLoss
from .model import MLP, build_model
from .noise import NoiseSource
from .resume import common_resume, find_resume
from .trainer import train_stack

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
    download: bool = False,
    init_checkpoint: Path | None = None,
    dataset_files: Mapping[str, Path] | None = None,
) -> dict:
    """Run (or resume) ``spec`` into ``out_dir`` and return the ``result.json`` content.

    ``init_checkpoint`` (else ``spec.init_from`` as a path) supplies the starting weights and
    feedback matrices of a fresh run. Torchvision sets are read from ``data_dir`` and fetched
    only when ``download`` is true (the caller's settings decide both). ``dataset_files``
    maps dataset names that are not in the registry (``upload:<id>``) to local ``.npz``
    files. Raises :class:`RunStopped` when ``callbacks`` asked to stop (a checkpoint is on
    disk), :class:`TrainingDiverged` when the loss stopped being finite, engine errors for
    bad inputs; torch's OOM propagates. One job is a stack of one (:func:`run_jobs`).
    """
    (outcome,) = run_jobs(
        [spec],
        [out_dir],
        device=device,
        callbacks=[callbacks],
        data_dir=data_dir,
        download=download,
        init_checkpoints=[init_checkpoint],
        dataset_files=dataset_files,
    )
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def run_jobs(
    specs: Sequence[JobSpec],
    out_dirs: Sequence[Path],
    *,
    device: str | None = None,
    callbacks: Sequence[RunCallbacks | None] | None = None,
    data_dir: Path | None = None,
    download: bool = False,
    init_checkpoints: Sequence[Path | None] | None = None,
    dataset_files: Mapping[str, Path] | None = None,
) -> list[dict | BaseException]:
    """Run (or resume) ``specs[i]`` into ``out_dirs[i]`` as one stack; per run its
    ``result.json`` content, or the exception that ended it.

    Each run is what :func:`run_job` would make of it alone (folder, metrics, checkpoints,
    resume from its own newest checkpoint); runs that fit together train as one stacked
    computation (see :func:`~.trainer.train_stack`). A run that fails to set up, stops
    (:class:`RunStopped`) or diverges leaves the others going; torch's OOM propagates.
    """
    if len(specs) != len(out_dirs):
        raise ValueError(f"{len(specs)} specs but {len(out_dirs)} output folders")
    count = len(specs)
    callbacks = list(callbacks) if callbacks is not None else [None] * count
    inits = list(init_checkpoints) if init_checkpoints is not None else [None] * count
    datasets: dict[tuple[str, str], Dataset] = {}
    outcomes: list[dict | BaseException | None] = [None] * count
    members, resumes, slots = [], [], []
    for i, (spec, out_dir) in enumerate(zip(specs, out_dirs, strict=True)):
        try:
            member, resume = _prepare(
                spec,
                Path(out_dir),
                device=device,
                callbacks=callbacks[i],
                data_dir=data_dir,
                download=download,
                init_checkpoint=inits[i],
                dataset_files=dataset_files,
                datasets=datasets,
            )
        except EngineError as exc:
            outcomes[i] = exc
            continue
        members.append(member)
        resumes.append(resume)
        slots.append(i)
    resumes = common_resume(members, resumes)
    for i, member, left in zip(slots, members, train_stack(members, resumes), strict=True):
        outcomes[i] = member.end(left)  # the same outcome for a run that ended early
    return outcomes


def _prepare(
    spec: JobSpec,
    out_dir: Path,
    *,
    device: str | None,
    callbacks: RunCallbacks | None,
    data_dir: Path | None,
    download: bool,
    init_checkpoint: Path | None,
    dataset_files: Mapping[str, Path] | None,
    datasets: dict[tuple[str, str], Dataset],
) -> tuple[Member, Checkpoint | None]:
    """One run's member of the stack (data, model, phases) and the checkpoint it resumes."""
    device = resolve_device(device or spec.device)
    resume = find_resume(spec, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset, input_shape, num_classes = _data_and_shape(
        spec, data_dir, device, dataset_files, download=download, datasets=datasets
    )
    model = build_model(spec.model, input_shape, num_classes, device)
    if resume is not None:
        load_model_state(model, resume)
    else:
        init = init_checkpoint or (Path(spec.init_from) if spec.init_from else None)
        if init is not None:
            load_model_state(model, load_checkpoint(init))
    member = build_member(
        spec,
        model,
        dataset,
        out_dir,
        device=device,
        callbacks=callbacks,
        data_dir=data_dir,
        download=download,
        dataset_files=dataset_files,
    )
    return member, resume


def build_member(
    spec: JobSpec,
    model: MLP,
    dataset: Dataset | None,
    out_dir: Path,
    *,
    device: str,
    callbacks: RunCallbacks | None = None,
    data_dir: Path | None = None,
    download: bool = False,
    dataset_files: Mapping[str, Path] | None = None,
) -> Member:
    """One run's member of a stack: its phases (with meta-loss tasks) and fixed readout noise."""
    input_shape, num_classes = model.config.input_shape, model.config.num_classes
    noise_spec = spec.pretrain.noise if spec.pretrain is not None else NoiseSpec()
    phases = _plan_phases(spec, dataset, noise_spec, input_shape, num_classes, device)
    for phase in phases:
        block = spec.pretrain if phase.name == "pretrain" else spec.train
        if block is not None and block.meta_loss is not None:
            phase.meta = build_meta_loss(
                block.meta_loss,
                spec,
                input_shape,
                num_classes,
                device,
                data_dir,
                dataset_files,
                download=download,
            )
    readout_gen = torch.Generator(device=device)
    readout_gen.manual_seed(derive_seed(spec.model.seed, "readout"))
    readout_x = NoiseSource(noise_spec, input_shape, num_classes, generator=readout_gen).inputs(
        spec.metrics.readout_size
    )
    return Member(spec, model, phases, out_dir, readout_x=readout_x, callbacks=callbacks)


def build_meta_loss(
    meta_spec: MetaLossSpec,
    spec: JobSpec,
    input_shape: tuple[int, ...],
    num_classes: int,
    device: str,
    data_dir: Path | None,
    dataset_files: Mapping[str, Path] | None,
    *,
    download: bool = False,
) -> MetaLoss:
    """A phase's meta-loss measurer with its task datasets loaded onto the device."""
    tasks = {
        name: load_dataset(name, data_dir, device, dataset_files, download=download)
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
    *,
    download: bool = False,
    datasets: dict[tuple[str, str], Dataset] | None = None,
) -> tuple[Dataset | None, tuple[int, ...], int]:
    """The training data (if any) on the device, and the network's input shape and classes.

    ``datasets`` caches loaded sets by (name, device): the runs of a stack share one copy.
    """
    dataset = None
    if spec.train is not None:
        key = (spec.train.dataset, device)
        cache = datasets if datasets is not None else {}
        if key not in cache:
            cache[key] = load_dataset(
                spec.train.dataset, data_dir, device, dataset_files, download=download
            )
        dataset = cache[key]
        if spec.shape_dataset == dataset.name:
            return dataset, dataset.input_shape, dataset.num_classes
    input_shape, num_classes = dataset_info(spec.shape_dataset, dataset_files)
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
