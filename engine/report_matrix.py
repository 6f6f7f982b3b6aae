"""The rule × noise matrix view of an experiment: does noise pretraining help each rule?

An experiment is a *rule × noise matrix* when its conditions' specs are the same in
everything except ``model.rule`` and whether a ``pretrain`` block is present (every
pretrained condition has the same one), at least two rules appear, and each rule has exactly
one condition without and one with pretraining (the ``rules_matrix`` presets). It is read
from the specs, never from the condition names, so a lab's own matrix under any names is
recognised and a look-alike that changes anything else is not.

For a matrix the report adds one row per rule: each metric of
:data:`.report_format.PAIRED_METRICS` without and with noise (mean ± std over the seeds that
succeeded) and the paired difference *with − without* over their common seeds
(:func:`.paired_stats.paired_difference`). Its all-pairs section keeps only the pairs that
share the rule (the effect of noise) or the noise setting (rule against rule): 49 of 91
pairs for 7 rules, the pairs that differ in both answering no question on their own.
"""

from __future__ import annotations

from typing import Any

from .contract.experiment_spec import ExperimentSpec, child_body
from .contract.spec import ModelSpec
from .paired_stats import paired_difference
from .report_format import PAIRED_METRICS
from .report_pairs import by_seed, mean_std

WITHOUT, WITH = "without", "with"  # the noise settings: no `pretrain` block, or one
DEFAULT_RULE = ModelSpec.model_fields["rule"].default
COMPARED_PAIRS = "pairs that share the rule or the noise setting"

Matrix = dict[str, dict[str, str]]  # rule → {"without": condition, "with": condition}


def find_rule_noise_matrix(spec: ExperimentSpec) -> Matrix | None:
    """Rule → its condition without and with noise pretraining, in the order the rules
    first appear; ``None`` when the conditions are not a rule × noise matrix."""
    matrix: Matrix = {}
    shared: dict[str, Any] | None = None  # every condition's spec without rule and pretrain
    noise: dict[str, Any] | None = None  # the one pretrain block of the pretrained ones
    for name in spec.conditions:
        body = child_body(spec, name, spec.seeds[0])
        model = dict(body["model"])
        rule = model.pop("rule", DEFAULT_RULE)
        pretrain = body.get("pretrain")
        rest = {key: value for key, value in body.items() if key != "pretrain"} | {"model": model}
        if shared is None:
            shared = rest
        if rest != shared:
            return None
        if pretrain is not None:
            noise = pretrain if noise is None else noise
            if pretrain != noise:
                return None
        setting = WITHOUT if pretrain is None else WITH
        cells = matrix.setdefault(rule, {})
        if setting in cells:
            return None  # two conditions in one cell of the matrix
        cells[setting] = name
    complete = all(len(cells) == 2 for cells in matrix.values())
    return matrix if len(matrix) >= 2 and complete else None


def rule_noise_rows(
    conditions: dict[str, Any], seeds: list[int], matrix: Matrix
) -> list[dict[str, Any]]:
    """One row per rule: ``{rule, without, with (condition names), metrics: {key: {without,
    with: {mean, std}, difference: paired_difference(with − without)}}}``."""
    rows = []
    for rule, cells in matrix.items():
        metrics = {}
        for key in PAIRED_METRICS:
            without = by_seed(conditions[cells[WITHOUT]], seeds, key)
            with_noise = by_seed(conditions[cells[WITH]], seeds, key)
            metrics[key] = {
                WITHOUT: mean_std(without.values()),
                WITH: mean_std(with_noise.values()),
                "difference": paired_difference(without, with_noise),
            }
        rows.append({"rule": rule, WITHOUT: cells[WITHOUT], WITH: cells[WITH], "metrics": metrics})
    return rows


def matrix_pairs(names: list[str], matrix: Matrix) -> list[tuple[str, str]]:
    """The condition pairs ``(a, b)``, in the spec's order, that share the rule or the noise
    setting."""
    place = {
        name: (rule, setting) for rule, cells in matrix.items() for setting, name in cells.items()
    }
    return [
        (a, b)
        for i, a in enumerate(names)
        for b in names[i + 1 :]
        if place[a][0] == place[b][0] or place[a][1] == place[b][1]
    ]
