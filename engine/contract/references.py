"""Which datasets a job reads, each with the field that names it.

The API checks every one at submit (uploads of the project, names the deployment can
serve); the worker fetches the uploads among them before it runs the job.
"""

from __future__ import annotations

from .bodies import JobBody
from .evaluate_spec import EvaluateSpec
from .experiment_spec import ExperimentSpec, expand_experiment
from .limits import Limits

# Expanding an already validated experiment only to read its children: no run-count limit.
_UNBOUNDED = Limits(max_experiment_runs=10**6)


def referenced_datasets(spec: JobBody) -> list[tuple[str, str]]:
    """``(field, dataset name)`` of every dataset a job reads, fields as dotted paths."""
    if isinstance(spec, EvaluateSpec):
        return [(f"datasets[{i}]", name) for i, name in enumerate(spec.datasets or [])]
    if isinstance(spec, ExperimentSpec):
        refs = []
        for condition, runs in expand_experiment(spec, _UNBOUNDED).items():
            if runs:  # every seed of a condition reads the same datasets
                prefix = f"conditions.{condition}."
                refs += [(prefix + field, name) for field, name in referenced_datasets(runs[0])]
        return refs
    refs = []
    for phase in ("pretrain", "train"):
        block = getattr(spec, phase)
        if block is None:
            continue
        if block.dataset is not None:
            refs.append((f"{phase}.dataset", block.dataset))
        if block.meta_loss is not None:
            refs += [
                (f"{phase}.meta_loss.tasks[{i}]", task)
                for i, task in enumerate(block.meta_loss.tasks)
            ]
    return refs
