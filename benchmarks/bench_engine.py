"""Engine epoch time vs a plain reference loop, same problem, same machine, same run.

Problem: MNIST-sized synthetic data (60,000 × 784 random inputs, 10 classes), MLP 784-100-10
learning by feedback alignment, Adam 1e-3, batch 64.

- engine: ``run_job`` on the data saved as an ``.npz`` (the real code path: data on the
  device, one gathered permutation per epoch, fused Adam, no per-step host sync). Timed
  from the start of an epoch to its last step, so the end-of-epoch metrics are excluded
  (they are printed separately).
- reference: FA as it is commonly written: ``DataLoader(TensorDataset, shuffle=True)``, an
  ``nn.Linear`` subclass whose forward calls the engine's own FA autograd Function (the same
  maths), default ``torch.optim.Adam``, ``loss.item()`` logged every batch.

Each side runs ``--epochs`` epochs; the fastest epoch counts (least disturbed by other load).
GFLOP/s counts the flops of the matmuls an FA step does, as both sides do them: forward and
weight gradient of both layers, and the error the second layer sends back through its
feedback matrix (nobody needs the first layer's input gradient: the data is not trained).
Beside them, the machine's matmul peak for the same work: each of those five shapes (batch
64) timed alone in a tight loop with the same threads; their flops over their summed times
is the rate a step made only of those matmuls would reach, so the distance of both sides to
that limit is visible.
Below the limit sits the **per-op floor**: the engine's epoch of the same number of steps on
a 4-4-10 problem (same batch, classes, rule and optimizer), whose ops do almost no
arithmetic, so it is what the step's ~35 ops cost to dispatch. An epoch cannot be much
faster than the floor plus the limit; what is left above both is memory-bound work (Adam's
pass over the parameters and moments, the batch gather, the softmax).
The engine follows the settings in the environment: it makes a CPU step's batch one step
ahead on a helper thread only where that is worth its cost and there is room
(``engine/prefetch.py``: one run's data batches, gathered 16 steps at a time, are not;
``NOISEFA_PREFETCH_BATCHES=true|false`` forces it either way, the header says which, and
then it uses a second core), and captures a CUDA step in a graph unless
``NOISEFA_CUDA_GRAPHS=0``.
Usage: ``python benchmarks/bench_engine.py [--quick] [--device cpu|cuda] [--threads N]``.
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
from torch.utils.data import DataLoader, TensorDataset

from noisefa.engine.callbacks import RunCallbacks
from noisefa.engine.contract.spec import parse_spec
from noisefa.engine.prefetch import prefetch_enabled
from noisefa.engine.process_choices import CHOICES, apply_settings
from noisefa.engine.run import run_job
from noisefa.service.settings import get_settings
from noisefa.testing.reference_fa import RefFALinear

FEATURES, CLASSES, HIDDEN, BATCH = 784, 10, 100, 64
FLOOR_SIZE = 4  # features and hidden units of the per-op floor's problem


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reference_epochs(x: torch.Tensor, y: torch.Tensor, device: str, epochs: int) -> list[float]:
    """Seconds per epoch of the plain reference loop."""
    model = nn.Sequential(RefFALinear(FEATURES, HIDDEN), nn.ReLU(), RefFALinear(HIDDEN, CLASSES))
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
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


class EpochTimer(RunCallbacks):
    """Per epoch: seconds of its steps, and seconds including its end-of-epoch metrics."""

    def __init__(self, device: str):
        self.device, self.steps, self.whole = device, [], []

    def on_phase_start(self, phase: str, epochs: int, steps_per_epoch: int) -> None:
        self.start = time.perf_counter()

    def on_progress(self, phase: str, epoch: int, step: int, steps_per_epoch: int) -> None:
        if step == steps_per_epoch:
            sync(self.device)
            self.steps.append(time.perf_counter() - self.start)

    def on_epoch_end(self, phase: str, epoch: int, metrics: dict[str, float]) -> None:
        if epoch > 0:
            now = time.perf_counter()
            self.whole.append(now - self.start)
            self.start = now


def engine_epochs(
    x: torch.Tensor, y: torch.Tensor, device: str, epochs: int, folder: Path, hidden: int = HIDDEN
) -> EpochTimer:
    """Per-epoch times of ``run_job`` on the same data (an MLP of one ``hidden`` layer)."""
    path = folder / "bench.npz"
    np.savez(
        path,
        x_train=x.numpy(),
        y_train=y.numpy(),
        x_test=x[:10_000].numpy(),
        y_test=y[:10_000].numpy(),
    )
    spec = parse_spec(
        {
            "kind": "train",
            "model": {"hidden": [hidden], "rule": "fa"},
            "train": {"dataset": f"npz:{path}", "epochs": epochs, "batch_size": BATCH},
            "checkpoint_every": epochs,
            "metrics": {"eval_batch_size": 10_000},
        }
    )
    timer = EpochTimer(device)
    run_job(spec, folder / "run", device=device, callbacks=timer)
    return timer


def step_matmuls() -> list[tuple[str, tuple[int, int], tuple[int, int]]]:
    """The matmul shapes of one FA step of 784-100-10 at batch 64, as (name, a, b) of a @ b:
    forward and weight gradient of both layers, and the second layer's error sent back
    (the first layer's input gradient is not needed, and neither side computes it)."""
    shapes = []
    for n_in, n_out in ((FEATURES, HIDDEN), (HIDDEN, CLASSES)):
        shapes.append((f"forward {n_in}->{n_out}", (BATCH, n_in), (n_in, n_out)))  # x @ W.T
        if n_in != FEATURES:
            shapes.append((f"error {n_out}->{n_in}", (BATCH, n_out), (n_out, n_in)))  # delta @ B
        shapes.append((f"weight grad {n_out}x{n_in}", (n_out, BATCH), (BATCH, n_in)))
    return shapes


def step_flop() -> int:
    """Flops of one step's matmuls (:func:`step_matmuls`)."""
    return sum(2 * a[0] * a[1] * b[1] for _, a, b in step_matmuls())


def matmul_seconds(
    a_shape: tuple[int, int], b_shape: tuple[int, int], device: str, rounds: int = 5
) -> float:
    """Seconds of one ``torch.mm(a, b, out=c)``: the fastest of ``rounds`` tight loops of
    about 0.1 s each, after a warm-up that also sizes the loop."""
    a = torch.randn(a_shape, device=device)
    b = torch.randn(b_shape, device=device)
    c = torch.empty(a_shape[0], b_shape[1], device=device)
    calls, best = 16, float("inf")
    while True:  # warm-up: double the loop until it lasts 0.1 s
        sync(device)
        start = time.perf_counter()
        for _ in range(calls):
            torch.mm(a, b, out=c)
        sync(device)
        if time.perf_counter() - start > 0.1:
            break
        calls *= 2
    for _ in range(rounds):
        sync(device)
        start = time.perf_counter()
        for _ in range(calls):
            torch.mm(a, b, out=c)
        sync(device)
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def matmul_peak(device: str) -> tuple[float, list[tuple[str, float]]]:
    """The step's matmul flops over their summed best times (GFLOP/s), and each shape's rate."""
    total_flop, total_seconds, rates = 0, 0.0, []
    for name, a_shape, b_shape in step_matmuls():
        flop = 2 * a_shape[0] * a_shape[1] * b_shape[1]
        seconds = matmul_seconds(a_shape, b_shape, device)
        total_flop, total_seconds = total_flop + flop, total_seconds + seconds
        rates.append((name, flop / seconds / 1e9))
    return total_flop / total_seconds / 1e9, rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 samples instead of 60,000.")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=3, help="Epochs per side (best counts).")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch.set_num_threads (default 1: steady numbers on a shared machine).",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    apply_settings(get_settings())
    samples = 10_000 if args.quick else 60_000
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(samples, FEATURES, generator=generator)
    y = torch.randint(CLASSES, (samples,), generator=generator)
    flop = step_flop() * samples / BATCH  # an epoch's matmul flops (linear in the batch)
    with tempfile.TemporaryDirectory() as tmp:
        timer = engine_epochs(x, y, args.device, args.epochs, Path(tmp))
        tiny = x[:, :FLOOR_SIZE].contiguous()
        (floor_folder := Path(tmp) / "floor").mkdir()
        floor_timer = engine_epochs(tiny, y, args.device, args.epochs, floor_folder, FLOOR_SIZE)
    reference = min(reference_epochs(x, y, args.device, args.epochs))
    engine, engine_whole, floor = min(timer.steps), min(timer.whole), min(floor_timer.steps)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    ahead = prefetch_enabled(torch.device(args.device), noise=False, elements=BATCH * FEATURES)
    print(
        f"device={name} threads={torch.get_num_threads()} batches made ahead={ahead} "
        f"CUDA graphs={CHOICES.cuda_graphs} "
        f"samples={samples} model={FEATURES}-{HIDDEN}-{CLASSES} batch={BATCH} "
        f"best of {args.epochs} epochs"
    )
    peak, rates = matmul_peak(args.device)
    limit = flop / peak / 1e9  # seconds of an epoch made only of its matmuls at peak
    print(f"reference epoch: {reference:8.3f} s  {flop / reference / 1e9:7.2f} GFLOP/s")
    print(f"engine epoch:    {engine:8.3f} s  {flop / engine / 1e9:7.2f} GFLOP/s")
    print(f"matmul peak:     {limit:8.3f} s  {peak:7.2f} GFLOP/s (the same shapes, alone)")
    print("  " + ", ".join(f"{name} {rate:.1f}" for name, rate in rates))
    print(f"share of peak: reference {limit / reference:.0%}, engine {limit / engine:.0%}")
    steps = -(-samples // BATCH)
    print(
        f"per-op floor:    {floor:8.3f} s  ({floor / steps * 1e6:.0f} us a step at "
        f"{FLOOR_SIZE}-{FLOOR_SIZE}-{CLASSES}); engine epoch - floor - limit: "
        f"{engine - floor - limit:.3f} s"
    )
    print(f"engine epoch with end-of-epoch metrics: {engine_whole:8.3f} s")
    print(f"speed-up: {reference / engine:.2f}x")


if __name__ == "__main__":
    main()
