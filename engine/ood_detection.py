"""OOD detection and calibration of an evaluated checkpoint, from its softmax confidence.

The maximum softmax probability (MSP) is the baseline OOD score (Hendrycks & Gimpel, 2017):
a model should be less sure off its training distribution. Each evaluated cell gets
``ood_auroc``, the AUROC of telling the in-distribution test split (the dataset the
checkpoint trained on, unshifted) from the cell's inputs by MSP: 0.5 is blind (the
in-distribution identity cell is exactly 0.5), 1.0 separates them. The same reference split
gives the checkpoint's ``ece`` and its reliability diagram.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .contract import metric_names as mn
from .metrics import auroc, expected_calibration_error, predictions, reliability_bins
from .model import MLP

RELIABILITY_PLOT_NAME = "reliability.png"


def score_detection(
    model: MLP,
    reference: tuple[str, torch.Tensor, torch.Tensor],
    evaluations: list[dict],
    confidences: list[torch.Tensor],
    batch_size: int,
    out_dir: Path,
) -> dict:
    """Set ``ood_auroc`` on every evaluation (``confidences[i]`` is cell i's MSP, (N_i,));
    write the reliability diagram; return the result's ``calibration`` entry.

    ``reference`` is ``(dataset, x, y)``: the in-distribution test split as the model sees it.
    """
    name, x, y = reference
    confidence, predicted = predictions(model, x, batch_size)  # (N,), (N,)
    hits = predicted == y
    for evaluation, cell in zip(evaluations, confidences, strict=True):
        evaluation[mn.OOD_AUROC] = auroc(confidence, cell)
    counts, accuracy, mean_confidence = reliability_bins(confidence, hits)
    from .plots import plot_reliability  # matplotlib (~0.5 s): only evaluations draw

    plot_reliability(
        counts.cpu(),
        accuracy.cpu(),
        mean_confidence.cpu(),
        out_dir / RELIABILITY_PLOT_NAME,
        title=f"{name} test split",
    )
    return {
        "dataset": name,
        mn.ECE: expected_calibration_error(confidence, hits),
        "plot": RELIABILITY_PLOT_NAME,
    }
