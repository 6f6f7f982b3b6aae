"""The body of ``POST /v1/jobs``: one discriminated union over ``kind``, and its parser.

``JobBody`` is the one spelling of "any job": the API's request body, the type the worker
and repositories take, and what :func:`parse_job` returns. Imports no torch.
"""

from __future__ import annotations

from typing import Annotated, Any, get_args

from pydantic import BaseModel, Field

from .evaluate_spec import EvaluateSpec
from .experiment_spec import ExperimentSpec
from .field_errors import field_error
from .limits import Limits
from .spec import JobSpec
from .states import JobKind

JobBody = Annotated[JobSpec | EvaluateSpec | ExperimentSpec, Field(discriminator="kind")]
"""Any job body, told apart by ``kind``."""

BODY_MODELS: dict[JobKind, type[BaseModel]] = {
    JobKind(kind): model
    for model in get_args(get_args(JobBody)[0])
    for kind in get_args(model.model_fields["kind"].annotation)
}
"""``kind`` → the model of that body, read off :data:`JobBody`.

The models spell ``kind`` as text literals (pydantic's error for a wrong kind would print
enum members' reprs); ``JobKind(kind)`` refuses at import any spelling that is not a kind.
"""


def parse_job(data: Any, limits: Limits | None = None) -> JobSpec | EvaluateSpec | ExperimentSpec:
    """Validate any job body against ``limits``, dispatching on ``kind``; errors name the field.

    Dispatching by hand (rather than validating the union) keeps error locations relative to
    the body (``model.hidden``, not ``train.model.hidden``).
    """
    if not isinstance(data, dict):
        raise field_error((), data, "a job spec must be a JSON object")
    kind = data.get("kind")
    model = BODY_MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        kinds = ", ".join(k.value for k in JobKind)
        raise field_error(("kind",), kind, f"must be one of {kinds}, got {kind!r}")
    return model.model_validate(data, context={"limits": limits or Limits()})
