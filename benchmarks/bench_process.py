"""The whole process: ``noisefa run`` vs a plain reference script, end to end, same machine.

Problem: noise pretraining then Fashion-MNIST, MLP 784-100-10 learning by feedback
alignment, Adam 1e-3, batch 64: ``--noise-epochs`` epochs of ``--noise-samples`` N(0, 1)
samples with uniformly drawn labels, then ``--epochs`` epochs of the 60,000 training images,
test accuracy after every data epoch. Each side is a fresh subprocess with the same thread
count (``OMP_NUM_THREADS``/``MKL_NUM_THREADS``), timed from its start to its exit, so
interpreter start, imports, data loading and writing results all count.

- engine: ``noisefa run SPEC --out DIR --data-dir DIR --no-progress``, the product's own
  path, with its defaults: a checkpoint and every per-epoch metric (angles, readouts, test
  loss and accuracy) after every epoch, ``result.json`` at the end.
- reference: FA as it is commonly written (this file run with ``--as-reference``):
  ``torchvision.datasets.FashionMNIST`` read into a ``TensorDataset`` behind a
  ``DataLoader(shuffle=True)``, an ``nn.Linear`` subclass whose forward calls the engine's
  FA autograd Function (the same maths), default ``torch.optim.Adam`` (a fresh one per
  phase, as the engine has), noise drawn with ``torch.randn`` per batch, ``loss.item()``
  every batch, test accuracy after every data epoch.

Fashion-MNIST comes from the project's shared data folder (``../shared/data/fashion-mnist``,
see its README), unpacked once into a temporary torchvision data folder before any timing.
The sides alternate for ``--repeats`` rounds; the fastest run of each counts (least disturbed
by other load). Usage: ``python benchmarks/bench_process.py [--quick] [--threads N]``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_FASHION_MNIST = PROJECT_ROOT.parent / "shared" / "data" / "fashion-mnist"
FEATURES, HIDDEN, CLASSES, BATCH, LR = 784, 100, 10, 64, 1e-3
# The normalisation the engine's catalogue uses for fashion_mnist (mean, std of the pixels).
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530
RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def unpack_fashion_mnist(source: Path, data_dir: Path) -> None:
    """Unpack the release's ``.gz`` files where torchvision looks (``FashionMNIST/raw``), so
    neither side pays for (or differs in) the unpacking."""
    raw = data_dir / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in RAW_FILES:
        with gzip.open(source / f"{name}.gz", "rb") as packed, (raw / name).open("wb") as out:
            shutil.copyfileobj(packed, out)


def job_spec(noise_epochs: int, noise_samples: int, epochs: int) -> dict:
    """The engine's job: the problem above, every other field at its default."""
    return {
        "kind": "train",
        "device": "cpu",
        "model": {"hidden": [HIDDEN], "rule": "fa"},
        "pretrain": {
            "epochs": noise_epochs,
            "samples_per_epoch": noise_samples,
            "batch_size": BATCH,
            "optimizer": {"name": "adam", "lr": LR},
        },
        "train": {
            "dataset": "fashion_mnist",
            "epochs": epochs,
            "batch_size": BATCH,
            "optimizer": {"name": "adam", "lr": LR},
        },
    }


@dataclass(frozen=True, order=True)
class ProcessTime:
    """One side's run: wall seconds start to exit (what counts), CPU seconds (user + system,
    a check on a shared machine: with one thread, wall well above CPU means it waited for a
    core) and its final test accuracy."""

    wall_s: float
    cpu_s: float
    test_accuracy: float


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall and CPU seconds of one subprocess, start to exit, and its stdout; fails loudly."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{command[:3]} exited {done.returncode}:\n{done.stderr[-4000:]}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu, done.stdout


def run_engine(spec_path: Path, out: Path, data_dir: Path, env: dict[str, str]) -> ProcessTime:
    """One run of ``noisefa run`` into a fresh folder (a used one would resume)."""
    noisefa = Path(sys.executable).parent / "noisefa"
    command = [str(noisefa), "run", str(spec_path), "--out", str(out), "--no-progress"]
    wall, cpu, _ = timed([*command, "--data-dir", str(data_dir), "--device", "cpu"], env)
    final = json.loads((out / "result.json").read_text())["final_metrics"]
    return ProcessTime(wall, cpu, final["test_accuracy"])


def run_reference(args: argparse.Namespace, data_dir: Path, env: dict[str, str]) -> ProcessTime:
    """One run of this script in ``--as-reference`` mode (it prints its accuracy last)."""
    command = [sys.executable, __file__, "--as-reference", "--data-dir", str(data_dir)]
    sizes = ["--noise-epochs", str(args.noise_epochs), "--noise-samples", str(args.noise_samples)]
    wall, cpu, stdout = timed([*command, *sizes, "--epochs", str(args.epochs)], env)
    return ProcessTime(wall, cpu, json.loads(stdout.splitlines()[-1])["test_accuracy"])


def reference_main(args: argparse.Namespace) -> None:
    """The plain reference loop (runs in its own process; prints its final accuracy as JSON)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    import torchvision.datasets as tv
    from torch.utils.data import DataLoader, TensorDataset

    from noisefa.testing.reference_fa import RefFALinear

    def images(split: tv.FashionMNIST) -> torch.Tensor:
        x = split.data.float().div(255.0).view(-1, FEATURES)  # (N, 784)
        return (x - FASHION_MEAN) / FASHION_STD

    torch.manual_seed(0)
    train = tv.FashionMNIST(str(args.data_dir), train=True)
    test = tv.FashionMNIST(str(args.data_dir), train=False)
    loader = DataLoader(TensorDataset(images(train), train.targets), batch_size=BATCH, shuffle=True)
    x_test, y_test = images(test), test.targets
    model = nn.Sequential(RefFALinear(FEATURES, HIDDEN), nn.ReLU(), RefFALinear(HIDDEN, CLASSES))
    losses = []

    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    for _ in range(args.noise_epochs):
        for start in range(0, args.noise_samples, BATCH):
            size = min(BATCH, args.noise_samples - start)
            xb, yb = torch.randn(size, FEATURES), torch.randint(CLASSES, (size,))
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())

    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    accuracy = 0.0
    for _ in range(args.epochs):
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        with torch.no_grad():
            accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    print(json.dumps({"test_accuracy": accuracy, "steps": len(losses)}))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="1 noise epoch of 10,000 samples and 1 data epoch."
    )
    parser.add_argument("--noise-epochs", type=int, default=10, help="Noise epochs (default 10).")
    parser.add_argument(
        "--noise-samples",
        type=int,
        default=60_000,
        help="Noise samples per epoch (default 60,000).",
    )
    parser.add_argument("--epochs", type=int, default=10, help="Fashion-MNIST epochs (default 10).")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="Threads for both sides (default 1: steady numbers on a shared machine).",
    )
    parser.add_argument("--repeats", type=int, default=2, help="Runs per side (fastest counts).")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="A torchvision data folder holding FashionMNIST/raw (default: unpack "
        f"{SHARED_FASHION_MNIST} into a temporary one).",
    )
    parser.add_argument("--as-reference", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.noise_epochs, args.noise_samples, args.epochs = 1, 10_000, 1
    return args


def main() -> None:
    args = parse_args()
    if args.as_reference:
        reference_main(args)
        return
    threads = str(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data_dir = args.data_dir
        if data_dir is None:
            data_dir = root / "data"
            unpack_fashion_mnist(SHARED_FASHION_MNIST, data_dir)
        spec_path = root / "spec.json"
        spec = job_spec(args.noise_epochs, args.noise_samples, args.epochs)
        spec_path.write_text(json.dumps(spec))
        engine, reference = [], []
        for i in range(args.repeats):
            engine.append(run_engine(spec_path, root / f"run{i}", data_dir, env))
            reference.append(run_reference(args, data_dir, env))
    best_engine, best_reference = min(engine), min(reference)
    steps = -(-args.noise_samples // BATCH) * args.noise_epochs + -(-60_000 // BATCH) * args.epochs
    print(
        f"threads={threads} noise={args.noise_epochs}x{args.noise_samples} "
        f"fashion_mnist epochs={args.epochs} model={FEATURES}-{HIDDEN}-{CLASSES} FA "
        f"batch={BATCH} steps={steps} best of {args.repeats}"
    )
    print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}")
    for name, best in (("reference process", best_reference), ("noisefa run", best_engine)):
        print(
            f"{name + ':':19} {best.wall_s:7.2f} s wall, {best.cpu_s:7.2f} s CPU, "
            f"test accuracy {best.test_accuracy:.4f}"
        )
    for name, runs in (("reference", reference), ("engine", engine)):
        print(
            f"  every {name} run, wall/CPU s: "
            + ", ".join(f"{r.wall_s:.2f}/{r.cpu_s:.2f}" for r in runs)
        )
    print(f"speed-up (wall): {best_reference.wall_s / best_engine.wall_s:.2f}x")
    cpu_ratio = min(r.cpu_s for r in reference) / min(r.cpu_s for r in engine)
    print(f"CPU-time ratio (best of each): {cpu_ratio:.2f}x")


if __name__ == "__main__":
    main()
