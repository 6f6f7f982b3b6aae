"""LeNet-5 under bp, fa, dfa, usf and kp on real Fashion-MNIST images: test accuracy after a
few epochs with SGD + momentum and with Adam (the table in docs/conv.md).

A random subset of the release (``--train`` / ``--test`` images, standardised with the
training subset's statistics) from ``../shared/data/fashion-mnist``; LeNet-5 (conv 6, conv 16,
5×5 same-padded kernels, 2×2 max-pools, FC 120-84-10), batch 64, no weight decay, no noise
pretraining; each rule × optimizer × seed is one ``run_job`` through the engine. Prints a
Markdown table: the final test accuracy (mean ± std over seeds) per optimizer, the last
epoch's training loss under Adam (a loss above log 10 ≈ 2.3 is divergence) and the
readout's alignment angle under SGD (means over seeds).

    python benchmarks/conv_rules_study.py                      # 6,000 / 2,000, 3 epochs, 2 seeds
    python benchmarks/conv_rules_study.py --seeds 1 --epochs 1 # a smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from noisefa.engine.contract.errors import TrainingDiverged
from noisefa.engine.contract.spec import parse_spec
from noisefa.engine.process_choices import apply_settings
from noisefa.engine.run import run_job
from noisefa.service.settings import get_settings
from noisefa.testing.fashion import fashion_split

RULES = ("bp", "fa", "dfa", "usf", "kp")
OPTIMIZERS = {
    "SGD 1e-3, momentum 0.9": {"name": "sgd", "lr": 1e-3, "momentum": 0.9},
    "Adam 1e-3": {"name": "adam", "lr": 1e-3},
}


def write_subset(path: Path, train: int, test: int) -> None:
    """A random, standardised subset of the release as a dataset ``.npz``."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, prefix, size in (("train", "train", train), ("test", "t10k", test)):
        images, labels = fashion_split(prefix)
        keep = rng.choice(len(labels), size, replace=False)
        arrays[f"x_{split}"] = images[keep, None].astype(np.float32) / 255  # (N, 1, 28, 28)
        arrays[f"y_{split}"] = labels[keep].astype(np.int64)
    mean, std = arrays["x_train"].mean(), arrays["x_train"].std()
    for split in ("train", "test"):
        arrays[f"x_{split}"] = (arrays[f"x_{split}"] - mean) / std
    np.savez(path, **arrays)


def summary(accuracy: list[float], seeds: int) -> str:
    """``mean ± std`` of the runs that finished, and how many diverged (NaN loss)."""
    diverged = f" ({seeds - len(accuracy)} of {seeds} diverged)" if len(accuracy) < seeds else ""
    if not accuracy:
        return f"diverged ({seeds} of {seeds})"
    std = statistics.stdev(accuracy) if len(accuracy) > 1 else 0.0
    return f"{statistics.mean(accuracy):.3f} ± {std:.3f}{diverged}"


def last_epoch(folder: Path, name: str) -> float:
    points = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [p["value"] for p in points if p["name"] == name][-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=6000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rules", nargs="+", default=list(RULES), choices=RULES)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    apply_settings(get_settings())  # NOISEFA_CUDA_GRAPHS, NOISEFA_PREFETCH_BATCHES
    print(f"| rule | {' | '.join(OPTIMIZERS)} | train loss (Adam) | angle/5 (SGD) |")
    print(f"| --- | {' | '.join('---' for _ in OPTIMIZERS)} | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_subset(folder / "fashion.npz", args.train, args.test)
        for rule in args.rules:
            cells, extra = [], {}
            for optimizer in OPTIMIZERS.values():
                accuracy = []
                for seed in range(args.seeds):
                    body = {
                        "kind": "train",
                        "model": {"conv": [6, 16], "hidden": [120, 84], "rule": rule, "seed": seed},
                        "train": {
                            "dataset": f"npz:{folder / 'fashion.npz'}",
                            "epochs": args.epochs,
                            "batch_size": 64,
                            "optimizer": optimizer,
                        },
                        "checkpoint_every": args.epochs,
                    }
                    out = folder / f"{rule}-{optimizer['name']}-{seed}"
                    try:
                        run_job(parse_spec(body), out)
                    except TrainingDiverged:  # a NaN loss: the engine stops the run
                        continue
                    accuracy.append(last_epoch(out, "test_accuracy"))
                    extra.setdefault(optimizer["name"], []).append(out)
                cells.append(summary(accuracy, args.seeds))
            loss = [last_epoch(f, "train_loss") for f in extra.get("adam", [])]
            angle = [last_epoch(f, "alignment_angle/5") for f in extra.get("sgd", [])]
            loss_cell = f"{statistics.mean(loss):.2f}" if loss else "—"
            angle_cell = f"{statistics.mean(angle):.1f}°" if angle else "—"
            print(f"| {rule} | {' | '.join(cells)} | {loss_cell} | {angle_cell} |", flush=True)


if __name__ == "__main__":
    main()
