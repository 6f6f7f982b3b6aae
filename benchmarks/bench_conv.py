"""LeNet-5 learning by FA: the engine's epoch vs a plain reference loop, and a stacked pack of
R conv runs vs the same runs one after another; same data, same machine, same run.

Problem: a subset of the real Fashion-MNIST training split (``--samples``, default 6,000;
read from ``../shared/data/fashion-mnist``), LeNet-5 (conv 6, conv 16, 5×5 same-padded
kernels, 2×2 max-pools, FC 120-84-10) learning by feedback alignment, SGD 1e-3 momentum 0.9,
batch 64.

- engine: ``run_job`` on the subset saved as an ``.npz`` (data on the device, one gathered
  permutation per epoch, the stacked conv model, no per-step host sync), timed from the start
  of an epoch to its last step (end-of-epoch metrics excluded).
- reference: FA as it is commonly written: ``DataLoader(TensorDataset, shuffle=True)``, an
  ``nn.Conv2d`` subclass whose forward calls an autograd Function with a fixed feedback kernel
  (the engine's own conv FA Function: the same maths), the FC layers as
  :class:`~noisefa.testing.reference_fa.RefFALinear`, ``torch.optim.SGD``, ``loss.item()``
  every batch.
- pack: ``run_jobs`` of ``--runs`` FA LeNets (seeds 0..R-1) as one stack, vs ``run_job`` of
  each alone; whole wall time of both, metrics included.

Each side of the first comparison runs ``--epochs`` epochs; the fastest counts.
Usage: ``python benchmarks/bench_conv.py [--samples N] [--runs R] [--device cpu|cuda]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from bench_engine import EpochTimer, sync
from torch.utils.data import DataLoader, TensorDataset

from noisefa.engine.contract.spec import parse_spec
from noisefa.engine.conv_layers import FeedbackConv2dFunction
from noisefa.engine.process_choices import apply_settings
from noisefa.engine.run import run_job, run_jobs
from noisefa.service.settings import get_settings
from noisefa.testing.fashion import fashion_split
from noisefa.testing.reference_fa import RefFALinear

BATCH = 64
OPTIMIZER = {"name": "sgd", "lr": 1e-3, "momentum": 0.9}


class RefFAConv2d(nn.Conv2d):
    """nn.Conv2d (same padding) with a fixed random (He-normal) feedback kernel."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 5):
        super().__init__(c_in, c_out, kernel, padding=kernel // 2)
        fan_in = c_in * kernel * kernel
        self.register_buffer("feedback", torch.randn_like(self.weight) * (2.0 / fan_in) ** 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return FeedbackConv2dFunction.apply(x, self.weight, self.bias, self.feedback, 2)


def reference_lenet() -> nn.Module:
    return nn.Sequential(
        RefFAConv2d(1, 6),
        nn.ReLU(),
        nn.MaxPool2d(2),
        RefFAConv2d(6, 16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        RefFALinear(16 * 7 * 7, 120),
        nn.ReLU(),
        RefFALinear(120, 84),
        nn.ReLU(),
        RefFALinear(84, 10),
    )


def reference_epochs(x: torch.Tensor, y: torch.Tensor, device: str, epochs: int) -> list[float]:
    """Seconds per epoch of the plain reference loop."""
    model = reference_lenet().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True)
    times, losses = [], []
    for _ in range(epochs):
        sync(device)
        start = time.perf_counter()
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        times.append(time.perf_counter() - start)
    return times


def fashion_subset(samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``samples`` training images (N, 1, 28, 28) in [0, 1] and their labels."""

    images, labels = fashion_split("train")
    x = images[:samples, None].astype(np.float32) / 255
    y = labels[:samples].astype(np.int64)
    return torch.from_numpy(x), torch.from_numpy(y)


def lenet_spec(dataset: str, epochs: int, seed: int = 0):
    return parse_spec(
        {
            "kind": "train",
            "model": {"conv": [6, 16], "hidden": [120, 84], "rule": "fa", "seed": seed},
            "train": {
                "dataset": dataset,
                "epochs": epochs,
                "batch_size": BATCH,
                "optimizer": OPTIMIZER,
            },
            "checkpoint_every": epochs,
            "metrics": {"probe_size": 64, "readout_size": 256},
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=6000, help="Training images used.")
    parser.add_argument("--epochs", type=int, default=2, help="Epochs per side (best counts).")
    parser.add_argument("--runs", type=int, default=3, help="Runs in the stacked pack.")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    apply_settings(get_settings())  # NOISEFA_CUDA_GRAPHS, NOISEFA_PREFETCH_BATCHES
    x, y = fashion_subset(args.samples)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / "fashion.npz"
        test = min(1000, args.samples)
        np.savez(path, x_train=x, y_train=y, x_test=x[:test], y_test=y[:test])
        dataset = f"npz:{path}"
        timer = EpochTimer(args.device)
        run_job(
            lenet_spec(dataset, args.epochs), folder / "one", device=args.device, callbacks=timer
        )
        reference = reference_epochs(x, y, args.device, args.epochs)
        engine = min(timer.steps)
        print(
            f"LeNet-5 FA epoch of {args.samples} Fashion-MNIST images, batch {BATCH}, "
            f"{args.device}, {args.threads} thread(s)"
        )
        print(
            f"  reference {min(reference):.2f} s   engine {engine:.2f} s   "
            f"speed-up {min(reference) / engine:.2f}x"
        )
        specs = [lenet_spec(dataset, 1, seed) for seed in range(args.runs)]
        start = time.perf_counter()
        for r, spec in enumerate(specs):
            run_job(spec, folder / f"seq{r}", device=args.device)
        sequential = time.perf_counter() - start
        start = time.perf_counter()
        run_jobs(specs, [folder / f"pack{r}" for r in range(args.runs)], device=args.device)
        packed = time.perf_counter() - start
        print(
            f"  {args.runs} runs × 1 epoch: sequential {sequential:.2f} s   "
            f"one stack {packed:.2f} s   speed-up {sequential / packed:.2f}x"
        )


if __name__ == "__main__":
    main()
