"""Training to convergence: the one rule for when the test accuracy has stopped improving.

The trainer asks it after every epoch whether a run may stop (``train.early_stop``), and
``result.json`` asks it again of the recorded history, so both agree on the epoch.
"""

from __future__ import annotations

from collections.abc import Sequence

from .contract.spec import EarlyStopSpec


def converged_epoch(accuracies: Sequence[float], early_stop: EarlyStopSpec) -> int | None:
    """The epoch training converged at, or ``None`` while the accuracy still improves.

    ``accuracies[e]`` is the test accuracy after epoch ``e`` (epoch 0 before the first
    step). An epoch improves when it beats the best before it by more than ``min_delta``;
    the run has converged at its last improving epoch once ``patience`` epochs followed it
    without one.
    """
    if not accuracies:
        return None
    best_epoch = 0
    for epoch, accuracy in enumerate(accuracies):
        if accuracy > accuracies[best_epoch] + early_stop.min_delta:
            best_epoch = epoch
    if len(accuracies) - 1 - best_epoch >= early_stop.patience:
        return best_epoch
    return None
