"""Per-epoch measurements: losses, calibration, alignment and signal angles, effective
dimension, readout.

Formulas (docs/design.md, docs/rules.md): the angle between two tensors is
``acos(<a, b> / (|a| |b|))`` in degrees; the participation ratio of singular values σ is
``(Σσ²)² / Σσ⁴``; the effective rank is ``exp(H(σ / Σσ))``; ``ece`` is
``Σ_b (n_b / N) |acc_b - conf_b|`` over 15 equal-width bins of the maximum softmax
probability. These run once per epoch and may sync to the host.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .contract import metric_names as mn
from .model import MLP
from .rules import true_gradient


def angle_degrees(a: torch.Tensor, b: torch.Tensor) -> float:
    """Degrees between vec(a) and vec(b), computed in float64 (90° if either is zero)."""
    a, b = a.detach().flatten().double(), b.detach().flatten().double()
    norms = a.norm() * b.norm()
    if norms == 0:
        return 90.0
    cosine = torch.clamp(a @ b / norms, -1.0, 1.0)
    return math.degrees(math.acos(cosine.item()))


def participation_ratio(singular_values: torch.Tensor) -> float:
    """``(Σσ²)² / Σσ⁴``: how many directions carry the matrix's energy."""
    power = singular_values.double() ** 2
    return (power.sum() ** 2 / (power**2).sum()).item()


def effective_rank(singular_values: torch.Tensor) -> float:
    """``exp(H(p))`` with ``p = σ / Σσ`` (Roy & Vetterli)."""
    p = singular_values.double() / singular_values.double().sum()
    p = p[p > 0]
    return math.exp(-(p * p.log()).sum().item())


ECE_BINS = 15
"""Equal-width confidence bins of ``ece`` and the reliability diagram (Guo et al., 2017)."""


def _batched_logits(model: MLP, x: torch.Tensor, batch_size: int):
    """``(start, logits)`` per batch of ``x``, in eval mode (the caller holds ``no_grad``)."""
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(x), batch_size):
            yield start, model(x[start : start + batch_size])  # (b, C)
    finally:
        model.train(was_training)


@torch.no_grad()
def evaluate(model: MLP, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``, in eval mode."""
    loss, accuracy, _ = _evaluate(model, x, y, batch_size, calibrate=False)
    return loss, accuracy


@torch.no_grad()
def evaluate_calibrated(
    model: MLP, x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> tuple[float, float, float]:
    """Mean cross-entropy, accuracy and expected calibration error, from one pass."""
    loss, accuracy, (confidence, hits) = _evaluate(model, x, y, batch_size, calibrate=True)
    return loss, accuracy, expected_calibration_error(confidence, hits)


def _evaluate(model: MLP, x: torch.Tensor, y: torch.Tensor, batch_size: int, *, calibrate: bool):
    """Loss and accuracy sums on the device; with ``calibrate`` also (confidence, hit) per
    sample. The sums are the same either way, so ``ece`` never moves the other metrics."""
    loss_sum = torch.zeros((), device=x.device, dtype=torch.float64)
    correct = torch.zeros((), device=x.device, dtype=torch.int64)
    confidence = torch.empty(len(x) if calibrate else 0, device=x.device, dtype=torch.float64)
    hits = torch.empty(len(x) if calibrate else 0, device=x.device, dtype=torch.bool)
    for start, logits in _batched_logits(model, x, batch_size):
        target = y[start : start + batch_size]
        loss_sum += F.cross_entropy(logits, target, reduction="sum").double()
        hit = logits.argmax(1) == target  # (b,)
        correct += hit.sum()
        if calibrate:
            confidence[start : start + len(logits)] = F.softmax(logits.double(), 1).amax(1)
            hits[start : start + len(logits)] = hit
    return loss_sum.item() / len(x), correct.item() / len(x), (confidence, hits)


@torch.no_grad()
def predictions(model: MLP, x: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample: the maximum softmax probability (float64) and the predicted class."""
    confidence = torch.empty(len(x), device=x.device, dtype=torch.float64)
    predicted = torch.empty(len(x), device=x.device, dtype=torch.int64)
    for start, logits in _batched_logits(model, x, batch_size):
        probs = F.softmax(logits.double(), 1).max(1)
        confidence[start : start + len(logits)] = probs.values
        predicted[start : start + len(logits)] = probs.indices
    return confidence, predicted


def reliability_bins(
    confidence: torch.Tensor, correct: torch.Tensor, bins: int = ECE_BINS
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per bin ``((b-1)/M, b/M]``: sample count, mean accuracy, mean confidence (0 if empty)."""
    index = (torch.ceil(confidence.double() * bins).long() - 1).clamp(0, bins - 1)  # (N,)
    counts = torch.bincount(index, minlength=bins).double()  # (M,)
    hits = torch.bincount(index, weights=correct.double(), minlength=bins)
    confidence_sum = torch.bincount(index, weights=confidence.double(), minlength=bins)
    filled = counts.clamp_min(1)
    return counts, hits / filled, confidence_sum / filled


@torch.no_grad()
def reliability_metrics(
    model: MLP, x: torch.Tensor, y: torch.Tensor, batch_size: int, bins: int = ECE_BINS
) -> dict[str, float]:
    """The reliability bins of ``model`` on ``(x, y)`` as metrics (``reliability_*/<b>``)."""
    confidence, predicted = predictions(model, x, batch_size)  # (N,), (N,)
    per_bin = reliability_bins(confidence, predicted == y, bins)  # 3 × (M,)
    return {
        mn.reliability_metric(base, b + 1): float(values[b])
        for base, values in zip(mn.RELIABILITY, per_bin, strict=True)
        for b in range(bins)
    }


def expected_calibration_error(
    confidence: torch.Tensor, correct: torch.Tensor, bins: int = ECE_BINS
) -> float:
    """``Σ_b (n_b / N) · |acc_b − conf_b|`` over equal-width confidence bins."""
    counts, accuracy, mean_confidence = reliability_bins(confidence, correct, bins)
    return ((counts / counts.sum()) * (accuracy - mean_confidence).abs()).sum().item()


def auroc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """P(score of a positive > score of a negative), ties counted half (Mann-Whitney U).

    By the rank formula ``(R₊ - n₊(n₊+1)/2) / (n₊ n₋)`` with tied scores sharing their
    average rank, so it equals ``sklearn.metrics.roc_auc_score`` without a threshold sweep.
    """
    scores = torch.cat([positive.double().flatten(), negative.double().flatten()])
    _, inverse, counts = torch.unique(scores, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()  # 1-based rank of each distinct score's last copy
    ranks = (ends - (counts.double() - 1) / 2)[inverse]  # (n₊ + n₋,) average ranks
    n_pos, n_neg = positive.numel(), negative.numel()
    rank_sum = ranks[:n_pos].sum().item()
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def signal_angles(model: MLP, x: torch.Tensor, target: torch.Tensor) -> list[float]:
    """Per hidden layer: angle between the rule's error signal and the true BP gradient.

    The error signal is the gradient of the loss w.r.t. each hidden linear output (before
    normalisation and activation) on the probe batch, in eval mode so batch norm statistics
    do not move.
    """
    if len(model.rule_layers) < 2:
        return []
    was_training = model.training
    model.eval()
    grads = []
    for exact in (False, True):
        hidden: list[torch.Tensor] = []
        with torch.enable_grad():
            if exact:
                with true_gradient(model):
                    loss = F.cross_entropy(model(x, hidden), target)
                    grads.append(torch.autograd.grad(loss, hidden))
            else:
                loss = F.cross_entropy(model(x, hidden), target)
                grads.append(torch.autograd.grad(loss, hidden))
    model.train(was_training)
    return [angle_degrees(g_rule, g_bp) for g_rule, g_bp in zip(*grads, strict=True)]


@torch.no_grad()
def readout_metrics(model: MLP, noise_x: torch.Tensor) -> tuple[float, float]:
    """On a fixed noise batch: mean max softmax probability and mean entropy / log(C)."""
    was_training = model.training
    model.eval()
    probs = F.softmax(model(noise_x).double(), dim=1)  # (B, C)
    model.train(was_training)
    entropy = -(probs * probs.clamp_min(1e-300).log()).sum(1)
    return probs.max(1).values.mean().item(), (entropy.mean() / math.log(probs.shape[1])).item()


def alignment_reference(model: MLP, i: int) -> torch.Tensor:
    """What BP would send the error to rule layer ``i``'s input through, to compare the
    rule's matrix with: the layer's weight, or for a direct rule (whose matrix maps the
    *output* error there) the transposed Jacobian of :meth:`~.model.MLP.linear_path`, the
    linear part of BP's path from layer ``i``'s input to the logits (activations left out,
    max-pools averaged): (C, *input_i). For linear layers it is ``W_L ··· W_i`` (C, in_i)."""
    layer = model.rule_layers[i]
    if not layer.rule.direct:
        return layer.weight
    classes = model.config.num_classes
    device = layer.weight.device
    h = torch.zeros(classes, *layer.input_shape, dtype=torch.float64, device=device)
    with torch.enable_grad():
        h.requires_grad_()
        logits = model.linear_path(i, h)  # (C, C): row c is the map of sample c
        one_hot = torch.eye(classes, dtype=torch.float64, device=device)
        (reference,) = torch.autograd.grad(logits, h, one_hot)  # row c = J^T e_c
    return reference  # (C, *input_i)


@torch.no_grad()
def weight_metrics(model: MLP) -> dict[str, float]:
    """Alignment angle, norm ratio, participation ratio and effective rank of every layer."""
    out: dict[str, float] = {}
    layers = model.rule_layers
    for index, layer in enumerate(layers, start=1):
        reference, matrix = alignment_reference(model, index - 1), layer.feedback
        out[mn.layer_metric(mn.ALIGNMENT_ANGLE, index)] = angle_degrees(reference, matrix)
        norm = reference.double().norm().item()
        ratio = matrix.double().norm().item() / norm if norm > 0 else 0.0  # JSON has no inf
        out[mn.layer_metric(mn.NORM_RATIO, index)] = ratio
    for index, layer in enumerate(model.rule_layers, start=1):
        sigma = torch.linalg.svdvals(layer.weight.flatten(1).double())  # kernel: (out, in·k·k)
        out[mn.layer_metric(mn.EFF_DIM, index)] = participation_ratio(sigma)
        out[mn.layer_metric(mn.EFF_RANK, index)] = effective_rank(sigma)
    return out


def model_metrics(
    model: MLP, probe_x: torch.Tensor, probe_target: torch.Tensor, readout_x: torch.Tensor
) -> dict[str, float]:
    """Everything measured on the weights and fixed probe batches (not on the data splits)."""
    out = weight_metrics(model)
    for index, angle in enumerate(signal_angles(model, probe_x, probe_target), start=1):
        out[mn.layer_metric(mn.SIGNAL_ANGLE, index)] = angle
    max_prob, entropy = readout_metrics(model, readout_x)
    out[mn.READOUT_MAX_PROB] = max_prob
    out[mn.READOUT_ENTROPY] = entropy
    return out
