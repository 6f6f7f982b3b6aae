"""The ``experiment`` job: conditions × seeds of one training spec, and its expansion.

Imports no torch. :func:`expand_experiment` validates every child, so an experiment's 422
names ``conditions.<name>.<field>``.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from .field_errors import field_error, relocate, value_error_line
from .limits import Limits
from .spec import JobSpec, SpecModel, parse_spec

ConditionName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_+.\-]{1,64}$")]


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
        raise field_error(
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
                errors += [relocate(e, ("conditions", condition)) for e in exc.errors()]
                break  # the other seeds of this condition fail the same way
            if child.init_from is not None:
                errors.append(
                    value_error_line(
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
