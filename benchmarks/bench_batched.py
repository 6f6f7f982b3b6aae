"""A stack of runs vs the same runs one by one, same process, same machine.

Problem: the ``comparison`` preset on ``digits`` (64-100-10, Adam 1e-3, batch 64): conditions
``bp``, ``fa`` and ``fa+noise`` (noise pretraining, ``--noise-samples`` samples) × 3 seeds = 9
runs of ``--epochs`` data epochs, with every per-epoch metric the single-run trainer records.

- sequential: ``run_job`` for each of the 9 specs in turn (the real single-run path).
- stacked: ``run_jobs`` on all 9 specs (stacked weights, one bmm step for all runs;
  the 3 pretrained runs pretrain as one stack of 3).

Both sides run once untimed first (imports, allocator, dataset cache), then ``--repeats``
times; the fastest repeat of each counts. The two sides' metrics are compared as well.
Usage: ``python benchmarks/bench_batched.py [--epochs 5] [--noise-samples 60000]
[--threads 1] [--device cpu|cuda]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from noisefa.engine.contract.bodies import parse_job
from noisefa.engine.contract.experiment_spec import expand_experiment
from noisefa.engine.contract.presets import comparison_body
from noisefa.engine.datasets import load_dataset
from noisefa.engine.process_choices import apply_settings
from noisefa.engine.run import run_job, run_jobs
from noisefa.service.settings import get_settings


def metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def time_sequential(specs, root: Path) -> float:
    start = time.perf_counter()
    for i, spec in enumerate(specs):
        run_job(spec, root / f"run{i}")
    return time.perf_counter() - start


def time_batched(specs, root: Path) -> float:
    start = time.perf_counter()
    outcomes = run_jobs(specs, [root / f"run{i}" for i in range(len(specs))])
    assert all(isinstance(o, dict) for o in outcomes), outcomes
    return time.perf_counter() - start


def worst_difference(specs, seq_root: Path, bat_root: Path) -> float:
    """Largest difference between the two sides' metrics, relative where |value| > 1e-2
    (BP's angles sit at ~1e-6 degrees, where only absolute differences mean anything)."""
    worst = 0.0
    for i in range(len(specs)):
        for a, b in zip(metrics(seq_root / f"run{i}"), metrics(bat_root / f"run{i}"), strict=True):
            worst = max(worst, abs(a["value"] - b["value"]) / max(abs(a["value"]), 1e-2))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--noise-samples", type=int, default=60_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    apply_settings(get_settings())  # NOISEFA_CUDA_GRAPHS, NOISEFA_PREFETCH_BATCHES
    body = comparison_body(
        seeds=3, epochs=args.epochs, pretrain_samples=args.noise_samples, device=args.device
    )
    grouped = expand_experiment(parse_job(body))
    specs = [spec for condition in grouped.values() for spec in condition]
    seq_times, bat_times = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats + 1):
            seq_root, bat_root = Path(tmp) / f"seq{repeat}", Path(tmp) / f"bat{repeat}"
            seq_times.append(time_sequential(specs, seq_root))
            bat_times.append(time_batched(specs, bat_root))
        worst = worst_difference(specs, seq_root, bat_root)
    seq, bat = min(seq_times[1:]), min(bat_times[1:])
    train_size = len(load_dataset("digits").x_train)
    samples = sum(
        (s.pretrain.samples_per_epoch * s.pretrain.epochs if s.pretrain else 0)
        + train_size * s.train.epochs
        for s in specs
    )
    print(
        f"{len(specs)} runs ({', '.join(grouped)} × 3 seeds), {args.epochs} epochs, "
        f"{args.noise_samples} noise samples, device {args.device}, {args.threads} thread(s)"
    )
    print(f"sequential run_job: {seq:.2f} s  ({samples / seq:,.0f} samples/s)")
    print(f"run_jobs (a stack): {bat:.2f} s  ({samples / bat:,.0f} samples/s)")
    print(f"throughput ratio:   {seq / bat:.2f}x")
    print(f"largest metric difference (relative, absolute below 1e-2): {worst:.1e}")


if __name__ == "__main__":
    main()
