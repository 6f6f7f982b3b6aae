"""Job specs the test suites and benchmarks build on, one place for all of them.

``pretrain_spec`` / ``train_spec`` are minimal valid bodies (defaults elsewhere), and
``experiment_spec`` runs a base body under BP and FA;
``cpu_pretrain_spec`` runs in milliseconds on a worker; ``tiny_spec`` / ``long_spec`` finish
at once or run until cancelled; ``train_body`` is a small digits run that learns.
"""

from __future__ import annotations

from typing import Any


def pretrain_spec(epochs: int = 1, **extra: Any) -> dict[str, Any]:
    """A noise-pretraining job shaped like ``digits``."""
    return {"kind": "pretrain", "pretrain": {"dataset": "digits", "epochs": epochs}, **extra}


def train_spec(epochs: int = 2, **extra: Any) -> dict[str, Any]:
    """A training job on ``digits``."""
    return {"kind": "train", "train": {"dataset": "digits", "epochs": epochs}, **extra}


def experiment_spec(base: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """An experiment of ``base`` under BP and FA, seeds 0 and 1 (``extra`` replaces fields)."""
    return {
        "kind": "experiment",
        "base": base,
        "conditions": {"bp": {"model": {"rule": "bp"}}, "fa": {}},
        "seeds": [0, 1],
        **extra,
    }


TINY_METRICS = {"probe_size": 8, "readout_size": 8}
# Probes big enough for the alignment and readout metrics to mean something, still quick.
SMALL_METRICS = {"probe_size": 64, "readout_size": 256}


def cpu_pretrain_spec(
    *,
    epochs: int = 1,
    samples: int = 64,
    hidden: int = 4,
    seed: int = 0,
    metrics: dict[str, int] = TINY_METRICS,
) -> dict[str, Any]:
    """A noise-pretraining job shaped like ``digits`` on the CPU, checkpointed every epoch
    (by default one of a few milliseconds, mostly overhead)."""
    return {
        "kind": "pretrain",
        "model": {"hidden": [hidden], "seed": seed},
        "pretrain": {
            "dataset": "digits",
            "epochs": epochs,
            "samples_per_epoch": samples,
            "batch_size": 64,
        },
        "device": "cpu",
        "metrics": dict(metrics),
    }


def tiny_spec(samples: int = 256) -> dict[str, Any]:
    """A pretrain job that finishes in well under a second of compute."""
    return {
        "kind": "pretrain",
        "model": {"hidden": [8]},
        "pretrain": {"dataset": "digits", "epochs": 1, "samples_per_epoch": samples},
    }


def long_spec() -> dict[str, Any]:
    """A job that runs for minutes unless cancelled."""
    return tiny_spec(samples=5_000_000)


def train_body(**overrides: Any) -> dict[str, Any]:
    """A small digits run on the CPU (one hidden layer of 100: FA+noise needs the width to
    pull clearly ahead of FA after one epoch, as docs/design.md's prototype measured)."""
    body: dict[str, Any] = {
        "kind": "train",
        "model": {"hidden": [100], "seed": 0, "rule": "fa"},
        "train": {"dataset": "digits", "epochs": 2, "batch_size": 64},
        "device": "cpu",
        "checkpoint_every": 2,
        "metrics": dict(SMALL_METRICS),
    }
    body.update(overrides)
    return body
