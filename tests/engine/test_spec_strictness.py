"""Spec values mean what they say: no number from text or a boolean, no boolean from a
number, in every job kind; and what the CLI, the database and experiments hand the models
(integers for floats, lists for pairs, YAML exponents, merged conditions) still validates."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from noisefa.engine.contract.bodies import parse_job
from noisefa.engine.contract.experiment_spec import expand_experiment
from noisefa.engine.contract.spec import JobSpec, parse_spec
from noisefa.engine.spec_files import read_spec_file
from noisefa.testing.specs import experiment_spec, train_spec


def refused_fields(body: dict) -> list[str]:
    with pytest.raises(ValidationError) as refused:
        parse_job(body)
    return [".".join(str(part) for part in error["loc"]) for error in refused.value.errors()]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (train_spec(model={"hidden": [True]}), "model.hidden.0"),
        (train_spec(model={"hidden": ["16"]}), "model.hidden.0"),
        (train_spec(model={"batch_norm": 1}), "model.batch_norm"),
        (train_spec(model={"feedback_scale": "2"}), "model.feedback_scale"),
        (train_spec(checkpoint_every=2.0), "checkpoint_every"),
        ({"kind": "evaluate", "init_from": "j", "eval_batch_size": "64"}, "eval_batch_size"),
        ({"kind": "evaluate", "init_from": "j", "shifts": {"rotate": ["15"]}}, "shifts.rotate.0"),
        (experiment_spec(train_spec(), seeds=[True]), "seeds.0"),
        (experiment_spec(train_spec(), target_accuracy="0.5"), "target_accuracy"),
        (
            experiment_spec(train_spec(), conditions={"slow": {"train": {"epochs": "3"}}}),
            "conditions.slow.train.epochs",
        ),
    ],
)
def test_loose_values_are_refused_naming_the_field(body, field):
    assert field in refused_fields(body)


def test_integer_floats_listed_pairs_and_stored_specs_still_validate():
    spec = train_spec()
    spec["train"]["optimizer"] = {"lr": 1, "betas": [0.5, 0.9]}
    parsed = parse_spec(spec)
    assert parsed.train.optimizer.lr == 1.0
    assert parsed.train.optimizer.betas == (0.5, 0.9)
    # What the service stores and the worker reads back: the normalised spec as JSON.
    stored = json.loads(json.dumps(parsed.model_dump(mode="json")))
    assert JobSpec.model_validate(stored) == parsed
    assert JobSpec.model_validate(parsed.model_dump()) == parsed


def test_experiment_conditions_still_merge_over_the_base():
    base = train_spec(model={"hidden": [8]})
    body = experiment_spec(base, conditions={"slow": {"train": {"optimizer": {"lr": 1}}}})
    (child, *_) = expand_experiment(parse_job(body))["slow"]
    assert (child.model.hidden, child.train.optimizer.lr) == ([8], 1.0)


def test_yaml_exponents_are_read_as_numbers(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(
        "kind: pretrain\n"
        "pretrain:\n"
        "  dataset: digits\n"
        "  optimizer: {lr: 1e-3, weight_decay: 5E-4, betas: [0.9, 0.999]}\n"
        "  noise: {std: 2.5e+0}\n"
    )
    spec = parse_spec(read_spec_file(path))
    assert spec.pretrain.optimizer.lr == 1e-3
    assert spec.pretrain.optimizer.weight_decay == 5e-4
    assert spec.pretrain.noise.std == 2.5
