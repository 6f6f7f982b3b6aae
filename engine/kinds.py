"""The job kinds beyond training (``evaluate``, ``experiment``) and :func:`parse_job`.

Like :mod:`.spec`, this module imports no torch. :func:`parse_job` is the API's one entry
point: it dispatches on ``kind`` and returns a :class:`~.spec.JobSpec` (``pretrain`` /
``train``), an :class:`EvaluateSpec` or an :class:`ExperimentSpec`. Validation errors carry
the full field path (``conditions.fa.model.hidden``), so a 422 names what to fix.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from .limits import Limits
from .spec import DeviceName, JobSpec, SpecModel, parse_spec

ShiftKind = Literal["rotate", "translate", "scale"]
ConditionName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_+.\-]{1,64}$")]
JOB_KINDS = ("pretrain", "train", "evaluate", "experiment")

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
    differ from the model's are resized (bilinear) to its input shape first; flat inputs are
    viewed as square single-channel images (``digits``: 8×8).
    """

    kind: Literal["evaluate"] = Field(description="`evaluate`.")
    init_from: str = Field(
        min_length=1, max_length=4096, description="The job (or checkpoint) to evaluate."
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


class ExperimentSpec(SpecModel):
    """Conditions × seeds of one training spec, aggregated into a table and plots.

    Each condition is a partial spec deep-merged over ``base`` (mappings merge key by key;
    lists, scalars and ``null`` replace, so ``"pretrain": null`` removes pretraining), then
    run once per seed with ``model.seed`` set to the seed. Every child is validated here,
    errors named ``conditions.<name>.<field>``.
    """

    kind: Literal["experiment"] = Field(description="`experiment`.")
    base: dict[str, Any] = Field(description="A `train` (or `pretrain`) spec shared by all.")
    conditions: dict[ConditionName, dict[str, Any]] = Field(
        min_length=1, max_length=32, description="Condition name → partial spec over `base`."
    )
    seeds: list[Annotated[int, Field(ge=0, le=2**31 - 1)]] = Field(
        default_factory=lambda: [0, 1, 2],
        min_length=1,
        max_length=64,
        description="One run per seed and condition (sets model.seed).",
    )
    target_accuracy: float = Field(
        0.9, gt=0, le=1, description="Test accuracy for the 'epochs to target' column."
    )

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct, got {seeds}")
        return seeds

    @model_validator(mode="after")
    def _children_valid(self, info: ValidationInfo) -> ExperimentSpec:
        expand_experiment(self, (info.context or {}).get("limits"))
        return self


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``: nested mappings merge, anything else replaces (copies)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def child_body(spec: ExperimentSpec, condition: str, seed: int) -> dict[str, Any]:
    """The raw training spec of one (condition, seed) child, before validation."""
    body = deep_merge(spec.base, spec.conditions[condition])
    model = body.get("model")
    body["model"] = {**(model if isinstance(model, dict) else {}), "seed": seed}
    return body


def expand_experiment(
    spec: ExperimentSpec, limits: Limits | None = None
) -> dict[str, list[JobSpec]]:
    """Condition → one validated :class:`JobSpec` per seed (in ``spec.seeds`` order).

    Raises ``ValidationError`` with every child's errors located under
    ``conditions.<name>``, or naming ``seeds`` when there are more than
    ``limits.max_experiment_runs`` children.
    """
    limits = limits or Limits()
    runs = len(spec.conditions) * len(spec.seeds)
    if runs > limits.max_experiment_runs:
        raise _error(
            ("seeds",),
            runs,
            f"conditions × seeds = {runs} runs, at most {limits.max_experiment_runs}",
        )
    children: dict[str, list[JobSpec]] = {}
    errors: list[dict[str, Any]] = []
    for condition in spec.conditions:
        children[condition] = []
        for seed in spec.seeds:
            try:
                child = parse_spec(child_body(spec, condition, seed), limits)
            except ValidationError as exc:
                errors += [_relocate(e, ("conditions", condition)) for e in exc.errors()]
                break  # the other seeds of this condition fail the same way
            if child.init_from is not None:
                errors.append(
                    _line(
                        ("conditions", condition, "init_from"),
                        child.init_from,
                        "not allowed in an experiment (every child starts from its seed)",
                    )
                )
                break
            children[condition].append(child)
    if errors:
        raise ValidationError.from_exception_data("ExperimentSpec", errors)
    return children


def parse_job(data: Any, limits: Limits | None = None) -> JobSpec | EvaluateSpec | ExperimentSpec:
    """Validate any job body, dispatching on ``kind``; errors name the field."""
    limits = limits or Limits()
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind == "evaluate":
        return EvaluateSpec.model_validate(data, context={"limits": limits})
    if kind == "experiment":
        return ExperimentSpec.model_validate(data, context={"limits": limits})
    if kind in ("pretrain", "train"):
        return parse_spec(data, limits)
    if not isinstance(data, dict):
        raise _error((), data, "a job spec must be a JSON object")
    raise _error(("kind",), kind, f"must be one of {', '.join(JOB_KINDS)}, got {kind!r}")


def _line(loc: tuple[Any, ...], value: Any, message: str) -> dict[str, Any]:
    return {"type": "value_error", "loc": loc, "input": value, "ctx": {"error": message}}


def _error(loc: tuple[Any, ...], value: Any, message: str) -> ValidationError:
    return ValidationError.from_exception_data("JobSpec", [_line(loc, value, message)])


def _relocate(error: dict[str, Any], prefix: tuple[Any, ...]) -> dict[str, Any]:
    """A child's error dict moved under ``prefix`` (fit for ``from_exception_data``)."""
    line = {"type": error["type"], "loc": (*prefix, *error["loc"]), "input": error["input"]}
    if "ctx" in error:
        line["ctx"] = error["ctx"]
    return line
