"""Metric names: the one place they are spelled. Per-layer names are ``<base>/<layer>``.

Layers are numbered 1..L: conv layers first, then the linear layers; layer L is the readout.
"""

from __future__ import annotations

TRAIN_LOSS = "train_loss"
TRAIN_ACCURACY = "train_accuracy"
TEST_LOSS = "test_loss"
TEST_ACCURACY = "test_accuracy"
GEN_GAP = "gen_gap"
ECE = "ece"
"""Expected calibration error on the test split (15 equal-width confidence bins)."""
READOUT_MAX_PROB = "readout_max_prob"
READOUT_ENTROPY = "readout_entropy"

ALIGNMENT_ANGLE = "alignment_angle"
"""Degrees between the matrix carrying the error back to layer l's input and the one BP would
use there: W_l itself, or for a direct rule (DFA) the linear part of BP's path from there to
the logits: W_L ··· W_l for linear layers; through a conv layer, with each max-pool taken as
an average pool (docs/rules.md)."""
SIGNAL_ANGLE = "signal_angle"
"""Degrees between the rule's error signal at hidden layer l's output and the true BP one."""
NORM_RATIO = "norm_ratio"
"""‖M_l‖ / ‖W_l‖ (Frobenius) for the matrix ``M_l`` and reference of ``alignment_angle``."""
EFF_DIM = "eff_dim"
EFF_RANK = "eff_rank"

OOD_AUROC = "ood_auroc"
"""Evaluate results: how well the maximum softmax probability tells the in-distribution
test split from a cell's inputs (0.5: not at all)."""

META_LOSS = "meta_loss"
"""Mean over a phase's meta-loss tasks; ``meta_loss/<task>`` per task (when configured)."""

RELIABILITY_COUNT = "reliability_count"
RELIABILITY_ACCURACY = "reliability_accuracy"
RELIABILITY_CONFIDENCE = "reliability_confidence"
"""Per confidence bin b (``<base>/<b>``, b = 1..15, ``((b-1)/15, b/15]`` of the maximum softmax
probability) on the test split: samples in it, their accuracy, their mean confidence (0 when
empty). Recorded once per data phase, at its last epoch: the reliability diagram's bars."""
RELIABILITY = (RELIABILITY_COUNT, RELIABILITY_ACCURACY, RELIABILITY_CONFIDENCE)

DATA_ONLY = (TEST_LOSS, TEST_ACCURACY, GEN_GAP, ECE)
"""Recorded only in phases with a dataset (not in noise pretraining)."""

# Layer 1's feedback matrix multiplies the gradient w.r.t. the network input, which no
# parameter uses, so its angle is reported but carries no learning signal.
NO_SIGNAL_METRICS = (f"{ALIGNMENT_ANGLE}/1",)


def layer_metric(base: str, layer: int) -> str:
    """``alignment_angle/2`` etc. (``layer`` counts from 1)."""
    return f"{base}/{layer}"


def reliability_metric(base: str, bin_index: int) -> str:
    """``reliability_count/3`` etc. (``bin_index`` counts from 1)."""
    return f"{base}/{bin_index}"


def meta_task_metric(task: str) -> str:
    """``meta_loss/<task>``: the adapted loss on one task."""
    return f"{META_LOSS}/{task}"


def metric_names(num_layers: int, *, with_data: bool) -> list[str]:
    """Every metric a phase records, for a network of ``num_layers`` linear layers.

    ``signal_angle`` exists for hidden layers only (1..L-1): at the readout the error signal
    is the loss gradient itself under every rule.
    """
    names = [TRAIN_LOSS, TRAIN_ACCURACY]
    if with_data:
        names += list(DATA_ONLY)
    names += [layer_metric(ALIGNMENT_ANGLE, k) for k in range(1, num_layers + 1)]
    names += [layer_metric(SIGNAL_ANGLE, k) for k in range(1, num_layers)]
    names += [layer_metric(NORM_RATIO, k) for k in range(1, num_layers + 1)]
    names += [layer_metric(EFF_DIM, k) for k in range(1, num_layers + 1)]
    names += [layer_metric(EFF_RANK, k) for k in range(1, num_layers + 1)]
    return names + [READOUT_MAX_PROB, READOUT_ENTROPY]
