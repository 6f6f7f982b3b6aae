"""Job kinds beyond training: parse_job dispatch, experiment expansion, evaluate specs."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from noisefa.engine.contract.bodies import parse_job
from noisefa.engine.contract.evaluate_spec import EvaluateSpec
from noisefa.engine.contract.experiment_spec import ExperimentSpec, deep_merge, expand_experiment
from noisefa.engine.contract.limits import Limits
from noisefa.engine.contract.presets import PRESETS
from noisefa.engine.contract.spec import JobSpec

BASE = {
    "kind": "train",
    "model": {"hidden": [32], "rule": "fa", "feedback_scale": 2.0},
    "train": {"dataset": "digits", "epochs": 2, "optimizer": {"lr": 0.01}},
}


def experiment(**overrides) -> dict:
    body = {
        "kind": "experiment",
        "base": BASE,
        "conditions": {
            "bp": {"model": {"rule": "bp"}},
            "fa": {},
            "fa+noise": {"pretrain": {"samples_per_epoch": 1024}},
        },
        "seeds": [3, 7],
    }
    return body | overrides


def fields(error: ValidationError) -> list[str]:
    """Dotted locations of the errors (as the service reports them)."""
    return [".".join(str(part) for part in e["loc"]) for e in error.errors()]


def test_parse_job_dispatches_on_kind():
    assert isinstance(parse_job(BASE), JobSpec)
    assert isinstance(parse_job({"kind": "evaluate", "init_from": "job-1"}), EvaluateSpec)
    assert isinstance(parse_job(experiment()), ExperimentSpec)
    with pytest.raises(ValidationError) as caught:
        parse_job({"kind": "fit"})
    assert fields(caught.value) == ["kind"]
    assert "evaluate" in caught.value.errors()[0]["msg"]


def test_experiment_children_deep_merge_over_base_and_take_their_seed():
    children = expand_experiment(parse_job(experiment()))
    assert list(children) == ["bp", "fa", "fa+noise"]
    for condition, specs in children.items():
        assert [s.model.seed for s in specs] == [3, 7]
        for spec in specs:
            assert spec.model.hidden == [32] and spec.model.feedback_scale == 2.0
            assert spec.train.optimizer.lr == 0.01  # nested base values survive the merge
            assert spec.model.rule == ("bp" if condition == "bp" else "fa")
            assert (spec.pretrain is not None) == (condition == "fa+noise")
    assert children["fa+noise"][0].pretrain.samples_per_epoch == 1024


def test_deep_merge_replaces_lists_and_null_removes_a_block():
    merged = deep_merge({"a": {"b": 1, "c": [1, 2]}, "p": {"x": 1}}, {"a": {"c": [3]}, "p": None})
    assert merged == {"a": {"b": 1, "c": [3]}, "p": None}


def test_invalid_children_are_named_by_condition_and_field():
    body = experiment(
        conditions={"fa": {"model": {"hidden": [0]}}, "fa+noise": {"train": {"epochs": 5000}}}
    )
    with pytest.raises(ValidationError) as caught:
        parse_job(body)
    assert fields(caught.value) == ["conditions.fa.model.hidden.0", "conditions.fa+noise"]
    assert "train.epochs" in caught.value.errors()[1]["msg"]


def test_experiment_run_count_is_limited():
    body = experiment(seeds=list(range(10)))  # 3 conditions × 10 seeds
    with pytest.raises(ValidationError) as caught:
        parse_job(body, Limits(max_experiment_runs=29))
    assert fields(caught.value) == ["seeds"]
    assert parse_job(body, Limits(max_experiment_runs=30))


def test_child_limits_come_from_the_deployment():
    with pytest.raises(ValidationError) as caught:
        parse_job(experiment(), Limits(max_width=16))
    assert "model.hidden[0]" in caught.value.errors()[0]["msg"]


def test_evaluate_severities_are_range_checked():
    with pytest.raises(ValidationError) as caught:
        parse_job({"kind": "evaluate", "init_from": "x", "shifts": {"rotate": [0, 400]}})
    assert "rotate[1]" in caught.value.errors()[0]["msg"]
    with pytest.raises(ValidationError):
        parse_job({"kind": "evaluate", "init_from": "x", "shifts": {"shear": [1]}})


def test_canonical_json_is_stable_for_every_kind():
    for body in (BASE, experiment(), {"kind": "evaluate", "init_from": "x"}):
        first, again = parse_job(body), parse_job(json.loads(parse_job(body).canonical_json()))
        assert first.canonical_json() == again.canonical_json()


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_validate_and_describe_themselves(name):
    preset = PRESETS[name]
    assert "our choice" in preset["description"]
    assert isinstance(parse_job(preset["body"]), ExperimentSpec)
    if "evaluate" in preset:
        assert isinstance(parse_job(preset["evaluate"]), EvaluateSpec)
