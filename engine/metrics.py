"""Per-epoch measurements: losses, alignment and signal angles, effective dimension, readout.

Formulas (docs/design.md): the angle between two tensors is ``acos(<a, b> / (|a| |b|))`` in
degrees; the participation ratio of singular values σ is ``(Σσ²)² / Σσ⁴``; the effective
rank is ``exp(H(σ / Σσ))``. These run once per epoch and may sync to the host.
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


@torch.no_grad()
def evaluate(model: MLP, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``, in eval mode."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=x.device, dtype=torch.float64)
    correct = torch.zeros((), device=x.device, dtype=torch.int64)
    for start in range(0, len(x), batch_size):
        logits = model(x[start : start + batch_size])
        target = y[start : start + batch_size]
        loss_sum += F.cross_entropy(logits, target, reduction="sum").double()
        correct += (logits.argmax(1) == target).sum()
    model.train(was_training)
    return loss_sum.item() / len(x), correct.item() / len(x)


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


@torch.no_grad()
def weight_metrics(model: MLP) -> dict[str, float]:
    """Alignment angle, participation ratio and effective rank of every layer."""
    out: dict[str, float] = {}
    for index, layer in enumerate(model.rule_layers, start=1):
        out[mn.layer_metric(mn.ALIGNMENT_ANGLE, index)] = angle_degrees(
            layer.weight, layer.feedback
        )
    for index, layer in enumerate(model.rule_layers, start=1):
        sigma = torch.linalg.svdvals(layer.weight.double())
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
