"""Resource estimates against hand counts on small specs (engine/contract/estimates.py).

Every expected number below is counted by hand from the formulas in the module docstring,
not computed with the module's own helpers.
"""

from __future__ import annotations

from typing import Any, get_args

import pytest

from noisefa.engine.contract.estimates import (
    DatasetSize,
    Network,
    builtin_size,
    builtin_sizes,
    estimate_evaluation,
    estimate_job,
)
from noisefa.engine.contract.evaluate_spec import EvaluateSpec
from noisefa.engine.contract.network_size import RULE_FEEDBACK
from noisefa.engine.contract.spec import ModelSpec, RuleName, parse_spec

METRICS = {"probe_size": 16, "readout_size": 32, "eval_batch_size": 100}
DIGITS = DatasetSize((64,), 10, 1437, 360)


def spec(**fields: Any):
    return parse_spec({"model": {"hidden": [8]}, "metrics": METRICS, **fields})


def test_builtin_sizes_come_from_the_catalogue():
    assert builtin_size("digits") == DIGITS
    assert builtin_size("mnist") == DatasetSize((1, 28, 28), 10, 60_000, 10_000)
    assert builtin_size("cifar100") == DatasetSize((3, 32, 32), 100, 50_000, 10_000)
    assert set(builtin_sizes()) >= {"digits", "mnist", "kmnist", "stl10", "usps"}


def test_a_small_fa_train_job_matches_the_hand_count():
    job = spec(kind="train", train={"dataset": "digits", "epochs": 2, "batch_size": 32})
    estimate = estimate_job(job, {"digits": DIGITS})
    # 64-8-10: 592 multiply-adds per sample, 610 parameters, 592 feedback entries.
    resident = 4 * (610 + 592) + 4 * 32 * 64 + (1437 + 360) * (4 * 64 + 8)
    gradients, adam = 4 * 610, 4 * 2 * 610
    # Per sample: the input, 2 × hidden, 2 × the widest layer (10), 2 × classes.
    batch = 4 * 32 * (64 + 2 * 8 + 2 * 10 + 2 * 10)  # the largest transient here
    assert estimate.memory_bytes == resident + gradients + adam + batch == 510_088
    assert estimate.largest_memory.field == "train.dataset"
    training = 3 * 592 * 1437 * 2
    svd = 8 * 8 * 64 + 8 * 8 * 10
    per_epoch = 592 * (32 + 360 + 6 * 16) + svd
    metrics = 3 * per_epoch + 592 * 1437  # epochs 0..2, plus the train split at epoch 0
    assert estimate.compute == training + metrics == 6_835_824
    assert estimate.largest_compute.field == "train"


def test_a_noise_job_holds_one_batch_not_a_dataset_and_bp_has_no_feedback():
    pretrain = {"dataset": "digits", "epochs": 3, "samples_per_epoch": 5000, "batch_size": 500}
    estimate = estimate_job(
        spec(kind="pretrain", model={"hidden": [8], "rule": "bp"}, pretrain=pretrain),
        {"digits": DIGITS},
    )
    resident = 4 * 610 + 4 * 32 * 64  # no feedback matrices, no dataset
    batch = 4 * 500 * 120
    assert estimate.memory_bytes == resident + 4 * 610 + 4 * 2 * 610 + batch
    assert estimate.largest_memory.field == "pretrain.batch_size"
    per_epoch = 592 * (32 + 6 * 16) + 8 * 8 * 64 + 8 * 8 * 10
    assert estimate.compute == 3 * 592 * 5000 * 3 + 4 * per_epoch


@pytest.mark.parametrize(
    ("optimizer", "state_floats"),
    [({"name": "adam"}, 2 * 610), ({"name": "sgd", "momentum": 0.9}, 610), ({"name": "sgd"}, 0)],
)
def test_optimizer_state_is_two_one_or_no_copies_of_the_parameters(optimizer, state_floats):
    pretrain = {"dataset": "digits", "samples_per_epoch": 64, "optimizer": optimizer}
    estimate = estimate_job(spec(kind="pretrain", pretrain=pretrain), {"digits": DIGITS})
    state = [term for term in estimate.memory_terms if term.what == "optimizer state"]
    assert [term.amount for term in state] == [4 * state_floats]


def test_batch_norm_keeps_a_third_activation_and_its_statistics():
    pretrain = {"dataset": "digits", "samples_per_epoch": 64, "batch_size": 64}
    plain = estimate_job(spec(kind="pretrain", pretrain=pretrain), {"digits": DIGITS})
    normed = estimate_job(
        spec(kind="pretrain", model={"hidden": [8], "batch_norm": True}, pretrain=pretrain),
        {"digits": DIGITS},
    )
    # 16 more parameters (scale, shift), each in weights, gradients and two Adam moments,
    # 16 running statistics, and 8 more kept floats per batch sample.
    extra = 4 * (16 * 4 + 16) + 4 * 64 * 8
    assert normed.memory_bytes - plain.memory_bytes == extra


def test_meta_loss_adds_its_tasks_and_their_adaptations():
    meta = {"tasks": ["digits"], "every": 2, "steps": 5, "batch_size": 10, "eval_size": 100}
    train = {"dataset": "digits", "epochs": 3, "batch_size": 32}
    plain = estimate_job(spec(kind="train", train=train), {"digits": DIGITS})
    measured = estimate_job(
        spec(kind="train", train={**train, "meta_loss": meta}), {"digits": DIGITS}
    )
    # The task's splits again (same shape as the model: no fitted copy), and the adaptation
    # becomes the largest transient: a model copy with its gradients (plain SGD) and the
    # forward pass over its 100 held-out samples, in place of the 32-sample training batch.
    adaptation = 4 * (610 + 592) + 4 * 610 + 4 * 100 * 3 * 10
    batch = 4 * 32 * 120
    added = (1437 + 360) * (4 * 64 + 8) + adaptation - batch
    assert measured.memory_bytes - plain.memory_bytes == added
    assert "a meta-loss adaptation" in [term.what for term in measured.memory_terms]
    # Measured at epochs 0, 2 and 3 (the last); each: 5 steps of 10 samples, 100 held out.
    assert measured.compute - plain.compute == 3 * (5 * 10 * 3 * 592 + 100 * 592)


def test_meta_tasks_of_another_shape_add_a_fitted_copy():
    meta = {"tasks": ["small"], "eval_size": 50, "batch_size": 10}
    small = DatasetSize((4, 4), 10, 100, 20)
    train = {"dataset": "digits", "epochs": 1, "meta_loss": meta}
    estimate = estimate_job(spec(kind="train", train=train), {"digits": DIGITS, "small": small})
    tasks = [term for term in estimate.memory_terms if term.field == "train.meta_loss.tasks"]
    assert [term.amount for term in tasks] == [(100 + 20) * (4 * 16 + 8) + 4 * (100 + 20) * 64]


def test_an_evaluation_counts_the_model_the_largest_dataset_and_one_pass_per_severity():
    evaluate = EvaluateSpec.model_validate(
        {
            "kind": "evaluate",
            "init_from": "job",
            "shifts": {"rotate": [0, 15], "scale": [1.0]},
            "eval_batch_size": 100,
        }
    )
    estimate = estimate_evaluation(evaluate, ModelSpec(hidden=[8]), DIGITS, {"digits": DIGITS})
    model = 4 * (610 + 592)
    data = (1437 + 360) * (4 * 64 + 8) + 4 * 360 * 64  # plus one shifted test split
    assert estimate.memory_bytes == model + data + 4 * 100 * 3 * 10
    assert estimate.compute == 360 * 3 * 592


def test_the_reported_oversized_job_is_far_over_8_gib_and_1e15():
    """8 × 4096 hidden, 10⁷ noise samples × 1000 epochs (issue 10): memory at batch 65,536,
    compute at any batch."""
    big = {"hidden": [4096] * 8}
    pretrain = {"dataset": "mnist", "epochs": 1000, "samples_per_epoch": 10**7}
    sizes = {"mnist": builtin_size("mnist")}
    wide = estimate_job(
        parse_spec(
            {"kind": "pretrain", "model": big, "pretrain": {**pretrain, "batch_size": 65_536}}
        ),
        sizes,
    )
    assert wide.memory_bytes > 2 * 8 * 2**30
    assert wide.largest_memory.field == "pretrain.batch_size"
    narrow = estimate_job(
        parse_spec({"kind": "pretrain", "model": big, "pretrain": {**pretrain, "batch_size": 64}}),
        sizes,
    )
    assert narrow.memory_bytes < 8 * 2**30
    assert narrow.compute > 1000 * 10**15
    assert narrow.largest_compute.field == "pretrain"


def _train_memory(rule: str) -> int:
    train = {"dataset": "digits", "epochs": 2, "batch_size": 32}
    job = spec(kind="train", model={"hidden": [8], "rule": rule}, train=train)
    return estimate_job(job, {"digits": DIGITS}).memory_bytes


def test_each_rule_s_feedback_is_counted_as_the_engine_keeps_it():
    fa = 510_088  # the hand count above: 64-8-10, FA's 592 fixed feedback entries, Adam
    # KP: the 592 entries of B also get a gradient (4 B each) and Adam's two moments (8 B).
    assert _train_memory("kp") == fa + 4 * 592 + 8 * 592 == 517_192
    # DFA: B_l is (classes, input of layer l): 10 × (64 + 8) = 720 entries, not 592.
    assert _train_memory("dfa") == fa + 4 * (720 - 592)
    # frsf keeps FA's buffers; bp and usf none; brsf none but a 592-entry draw per batch.
    assert _train_memory("frsf") == fa
    assert _train_memory("usf") == _train_memory("bp") == fa - 4 * 592
    assert _train_memory("brsf") == fa - 4 * 592 + 4 * 592
    train = {"dataset": "digits", "epochs": 1}
    kp = estimate_job(
        spec(kind="train", model={"hidden": [8], "rule": "kp"}, train=train), {"digits": DIGITS}
    )
    assert "the trained feedback's gradients and state" in [t.what for t in kp.memory_terms]


@pytest.mark.parametrize("rule", get_args(RuleName))
@pytest.mark.parametrize("conv", [[], [3]])
def test_the_estimate_s_feedback_and_parameters_are_what_a_built_model_holds(rule, conv):
    """The torch-free rule table against the engine's real models (MLP and conv)."""
    import torch

    from noisefa.engine.feedback_rules import FEEDBACK_RULES
    from noisefa.engine.model import build_model

    assert set(RULE_FEEDBACK) == set(FEEDBACK_RULES) == set(get_args(RuleName))
    hooks, table = FEEDBACK_RULES[rule], RULE_FEEDBACK[rule]
    assert (table.redraws, table.trains) == (hooks.redraws, hooks.trains_feedback)
    model_spec = ModelSpec(hidden=[8, 6], rule=rule, conv=conv, kernel_size=3)
    torch.manual_seed(0)
    model = build_model(model_spec, DIGITS.input_shape, DIGITS.num_classes, "cpu")
    net = Network.of(model_spec, DIGITS)
    buffers = [layer.feedback_buffer for layer in model.rule_layers]
    assert net.feedback_entries == sum(b.numel() for b in buffers if b is not None)
    assert net.parameters == sum(p.numel() for p in model.parameters())
    weights = sum(layer.weight.numel() for layer in model.rule_layers)
    assert net.draw_entries == (weights if hooks.redraws else 0)
