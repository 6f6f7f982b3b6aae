"""Golden metrics: per-epoch metrics of a fixed set of small runs, recorded once, compared always.

The engine's training path was rewritten (one stacked trainer for R ≥ 1 runs, explicit
backward, hand-written optimizer); these numbers were recorded from the single-run autograd
trainer it replaced, so the test ``tests/engine/test_golden.py`` shows the rewrite trains the
same runs to float tolerance. Regenerate only on purpose (a change that is meant to change
results), with one CPU thread as the tests use::

    .venv/bin/python -m noisefa.testing.golden tests/engine/data/golden_metrics.json
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

# fa/bp × with/without noise pretraining × batch norm on/off × Adam / SGD-momentum, 2 epochs.
# The optimizer is pinned to the noise defaults these metrics were recorded with (Adam 1e-3;
# the spec's pretraining default is now 1e-4, docs/noise_ablation.md).
_PRETRAIN = {
    "epochs": 2,
    "samples_per_epoch": 1024,
    "batch_size": 64,
    "optimizer": {"name": "adam", "lr": 1e-3},
}
_SGD = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4}
GOLDEN_SPECS: dict[str, dict[str, Any]] = {
    "fa_pretrain_adam": {"model": {"rule": "fa", "seed": 0}, "pretrain": _PRETRAIN},
    "bp_pretrain_adam": {"model": {"rule": "bp", "seed": 1}, "pretrain": _PRETRAIN},
    "fa_sgd_momentum": {"model": {"rule": "fa", "seed": 2}, "train_optimizer": _SGD},
    "bp_sgd_momentum": {"model": {"rule": "bp", "seed": 3}, "train_optimizer": _SGD},
    "fa_batch_norm_pretrain_sgd": {
        "model": {"rule": "fa", "seed": 4, "batch_norm": True},
        "pretrain": {**_PRETRAIN, "optimizer": _SGD, "noise": {"labels": "soft"}},
    },
    "bp_batch_norm_adam": {"model": {"rule": "bp", "seed": 5, "batch_norm": True}},
    "fa_two_hidden_tanh_pretrain": {
        "model": {"rule": "fa", "seed": 6, "hidden": [24, 16], "activation": "tanh"},
        "pretrain": {**_PRETRAIN, "noise": {"distribution": "uniform"}},
    },
}


def golden_spec_data(name: str) -> dict[str, Any]:
    """The job spec (raw dict) of golden run ``name``: a 2-epoch ``digits`` job on the CPU."""
    entry = GOLDEN_SPECS[name]
    train: dict[str, Any] = {"dataset": "digits", "epochs": 2, "batch_size": 64}
    if "train_optimizer" in entry:
        train["optimizer"] = entry["train_optimizer"]
    model = {"hidden": [32], **entry["model"]}
    data: dict[str, Any] = {
        "kind": "train",
        "model": model,
        "train": train,
        "device": "cpu",
        "metrics": {"probe_size": 64, "readout_size": 256},
    }
    if "pretrain" in entry:
        data["pretrain"] = entry["pretrain"]
    return data


def record(path: Path) -> None:
    """Run every golden spec with today's engine and write its metric points to ``path``."""
    import torch

    from noisefa.engine.contract.spec import parse_spec
    from noisefa.engine.run import run_job

    torch.set_num_threads(1)
    golden: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in GOLDEN_SPECS:
            folder = Path(tmp) / name
            run_job(parse_spec(golden_spec_data(name)), folder)
            lines = (folder / "metrics.jsonl").read_text().splitlines()
            golden[name] = [json.loads(line) for line in lines]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(golden, indent=1) + "\n")


if __name__ == "__main__":
    record(Path(sys.argv[1]))
