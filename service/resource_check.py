"""Resource estimates at submit: a job that cannot fit or finish is refused before it is stored.

The arithmetic is the torch-free contract's (:mod:`noisefa.engine.contract.estimates`, formulas
in docs/design.md); here are the dataset sizes it needs (built-ins from the catalogue, uploads
from their rows) and the 422 that names the limit (``max_job_memory_bytes``,
``max_job_compute``), the estimate and the limit as numbers and human-readable, and the field
that drives the estimate most. An experiment is estimated child by child: each child must fit
the per-job limits on its own (children run as separate jobs; their count is bounded by
``max_experiment_runs``). A job reading a dataset whose size the API cannot know without
opening a server file (``npz:`` paths) is not estimated; ``max_job_seconds`` still bounds it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from pydantic import ValidationError
from sqlalchemy.orm import Session

from noisefa.engine.contract.bodies import JobBody
from noisefa.engine.contract.catalogue import UPLOAD_PREFIX, known_datasets
from noisefa.engine.contract.checkpoint_format import checkpoint_upload_id
from noisefa.engine.contract.estimates import (
    DatasetSize,
    Estimate,
    Term,
    builtin_size,
    estimate_evaluation,
    estimate_job,
)
from noisefa.engine.contract.evaluate_spec import EvaluateSpec
from noisefa.engine.contract.experiment_spec import ExperimentSpec, expand_experiment
from noisefa.engine.contract.references import referenced_datasets
from noisefa.engine.contract.spec import JobSpec, ModelSpec, parse_spec

from .models import Project
from .problems import FieldError, ProblemError
from .repositories import checkpoints as checkpoint_repo
from .repositories import datasets as dataset_repo
from .repositories import jobs as job_repo
from .settings import Settings

logger = logging.getLogger(__name__)

BYTE_UNITS = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB")

ESTIMATES_RULE = (
    "A job whose estimated device memory is over `max_job_memory_bytes`, or whose estimated "
    "compute is over `max_job_compute`, is refused (`job-too-large`; `errors` names the field "
    "driving the estimate, with the estimate and the limit). Memory = 4 bytes × (parameters, "
    "feedback matrices, gradients, optimizer state: Adam 2×, SGD with momentum 1× the "
    "parameters) + the largest transient (one batch's activations kept for backward, an "
    "evaluation batch, a meta-loss adaptation) + the datasets on the device (both splits; "
    "noise: one batch). Compute, in multiply-adds = 3 × Σ in·out over layers × samples per "
    "epoch × epochs per phase, plus per-epoch metrics and meta-loss. An experiment's children "
    "are each held to these per-job limits."
)
"""The rule in a paragraph, for the API's documentation of ``POST /v1/jobs``' 422 (the
estimates module's docstring has the full formulas)."""


def check_resources(session: Session, project: Project, spec: JobBody, settings: Settings) -> None:
    """422 naming ``max_job_memory_bytes`` / ``max_job_compute`` when the job's estimate (or
    any experiment child's) is over it; runs after the dataset checks."""
    errors: list[FieldError] = []
    for prefix, estimate in _estimates(session, project.id, spec, settings):
        if estimate.memory_bytes > settings.max_job_memory_bytes:
            errors.append(
                _over(
                    "max_job_memory_bytes",
                    " of device memory",
                    human_bytes(estimate.memory_bytes),
                    human_bytes(settings.max_job_memory_bytes),
                    estimate.largest_memory,
                    human_bytes(estimate.largest_memory.amount),
                    prefix,
                )
            )
        if estimate.compute > settings.max_job_compute:
            errors.append(
                _over(
                    "max_job_compute",
                    "",
                    human_macs(estimate.compute),
                    human_macs(settings.max_job_compute),
                    estimate.largest_compute,
                    human_macs(estimate.largest_compute.amount),
                    prefix,
                )
            )
    if errors:
        raise ProblemError(
            422,
            "; ".join(f"{error.field}: {error.message}" for error in errors),
            slug="job-too-large",
            errors=errors,
        )


def human_bytes(amount: int) -> str:
    """``9663676416`` → ``9.0 GiB (9,663,676,416 bytes)``."""
    value, unit = float(amount), 0
    while value >= 1024 and unit < len(BYTE_UNITS) - 1:
        value, unit = value / 1024, unit + 1
    if unit == 0:
        return f"{amount:,} bytes"
    return f"{value:.1f} {BYTE_UNITS[unit]} ({amount:,} bytes)"


def human_macs(amount: int) -> str:
    """``3620782080000000000`` → ``3.62e18 multiply-adds (3,620,782,080,000,000,000)``."""
    return f"{amount:.3g}".replace("e+", "e") + f" multiply-adds ({amount:,})"


def _over(
    limit: str, what: str, estimate: str, allowed: str, term: Term, share: str, prefix: str
) -> FieldError:
    """The field error of one estimate over its limit, at the field of its largest share."""
    return FieldError(
        field=prefix + term.field,
        message=f"the job needs an estimated {estimate}{what}, over {limit} = {allowed}; "
        f"the largest share is {term.what}: {share}",
    )


def _estimates(
    session: Session, project_id: str, spec: JobBody, settings: Settings
) -> Iterator[tuple[str, Estimate]]:
    """``(field prefix, estimate)`` of the job, or of each experiment condition (its seeds
    differ only in ``model.seed``, which changes no size); none where a size is unknown."""
    if isinstance(spec, ExperimentSpec):
        for condition, runs in expand_experiment(spec, settings.limits).items():
            if runs:
                yield from _job_estimate(session, project_id, runs[0], f"conditions.{condition}.")
    elif isinstance(spec, EvaluateSpec):
        estimate = _evaluation_estimate(session, project_id, spec, settings)
        if estimate is not None:
            yield "", estimate
    else:
        yield from _job_estimate(session, project_id, spec, "")


def _job_estimate(
    session: Session, project_id: str, spec: JobSpec, prefix: str
) -> Iterator[tuple[str, Estimate]]:
    names = [name for _, name in referenced_datasets(spec)]
    sizes = dataset_sizes(session, project_id, [spec.shape_dataset, *names])
    if sizes is not None:
        try:
            estimate = estimate_job(spec, sizes)
        except ValueError as exc:  # conv blocks an upload's input shape cannot take
            field, _, message = str(exc).partition(": ")
            raise ProblemError(
                422,
                f"{prefix}{exc}",
                slug="validation",
                title="Invalid request",
                errors=[FieldError(field=prefix + field, message=message)],
            ) from exc
        yield prefix, estimate


def _evaluation_estimate(
    session: Session, project_id: str, spec: EvaluateSpec, settings: Settings
) -> Estimate | None:
    """The estimate of an evaluate job, from its source job's model (already checked to be a
    succeeded job of the project) or uploaded checkpoint; None when a size is unknown."""
    upload_id = checkpoint_upload_id(spec.init_from)
    if upload_id is not None:
        return _uploaded_checkpoint_estimate(session, project_id, spec, upload_id)
    source = job_repo.get_job(session, project_id, spec.init_from)
    if source is None:
        return None
    try:
        trained = parse_spec(source.spec, settings.limits)
    except ValidationError:  # stored under other limits; the worker decides
        return None
    names = spec.datasets or ([trained.train.dataset] if trained.train is not None else [])
    sizes = dataset_sizes(session, project_id, [trained.shape_dataset, *names])
    if sizes is None or not names:
        return None
    evaluated = {name: sizes[name] for name in names}
    return estimate_evaluation(spec, trained.model, sizes[trained.shape_dataset], evaluated)


def _uploaded_checkpoint_estimate(
    session: Session, project_id: str, spec: EvaluateSpec, upload_id: str
) -> Estimate | None:
    """The estimate of evaluating an uploaded checkpoint, from the model config stored with
    it at upload (already checked to be the project's)."""
    row = checkpoint_repo.get_upload(session, project_id, upload_id)
    names = spec.datasets or ([row.trained_on] if row is not None and row.trained_on else [])
    sizes = dataset_sizes(session, project_id, names) if names else None
    if row is None or sizes is None:
        return None
    config = row.model_config
    model = ModelSpec.model_validate({k: config[k] for k in ModelSpec.model_fields if k in config})
    shape = DatasetSize(tuple(config["input_shape"]), config["num_classes"], 0, 0)
    return estimate_evaluation(spec, model, shape, sizes)


def dataset_sizes(
    session: Session, project_id: str, names: list[str]
) -> dict[str, DatasetSize] | None:
    """Sizes of built-ins (catalogue) and the project's uploads (their rows); None when one
    of ``names`` is neither (a server file, or a name the worker will refuse)."""
    builtins = set(known_datasets())
    sizes: dict[str, DatasetSize] = {}
    for name in dict.fromkeys(names):
        if name in builtins:
            sizes[name] = builtin_size(name)
            continue
        row = None
        if name.startswith(UPLOAD_PREFIX):
            row = dataset_repo.get_upload(session, project_id, name[len(UPLOAD_PREFIX) :])
        if row is None:
            logger.info("no size known for dataset %r; the job is not estimated", name)
            return None
        sizes[name] = DatasetSize(
            tuple(row.input_shape), row.num_classes, row.train_size, row.test_size
        )
    return sizes
