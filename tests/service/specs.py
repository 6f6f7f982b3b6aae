"""Small valid job specs for the service tests (the worker never runs them here)."""

from __future__ import annotations

from typing import Any


def pretrain_spec(epochs: int = 1, **extra: Any) -> dict[str, Any]:
    """A noise-pretraining job shaped like ``digits``."""
    return {"kind": "pretrain", "pretrain": {"dataset": "digits", "epochs": epochs}, **extra}


def train_spec(epochs: int = 2, **extra: Any) -> dict[str, Any]:
    """A training job on ``digits``."""
    return {"kind": "train", "train": {"dataset": "digits", "epochs": epochs}, **extra}
