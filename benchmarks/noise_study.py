"""The noise-pretraining study behind the spec's defaults (docs/noise_ablation.md).

Runs the ``noise_ablation`` preset through the engine's own experiment path: the body is
expanded by :func:`expand_experiment` (every child validated as the API would), the children
train through :func:`run_jobs` (children of one shape and optimizer train as one stack, which
makes the sweep cheap on a CPU), and each dataset's children are aggregated by
:func:`aggregate_experiment` into ``report.json`` / ``report.md`` / plots, as an
``experiment`` job would be. Then it tabulates what the report does not: every layer's
alignment angle after noise, the last layer's angle after each noise epoch, and writes the
results section of ``docs/noise_ablation.md`` with its plots under ``docs/img/``.

Datasets: Fashion-MNIST and a held-out part of the MNIST training split (images
50,000–59,999 as its test split), both 784 inputs, from the project's shared data folder;
``digits`` (64 inputs) as a small third check. By default each runs the check set
(:data:`CHECK_CONDITIONS`); ``--full`` runs every condition of the preset on Fashion-MNIST
(about 80 minutes on one CPU thread; minutes on a GPU).

    python benchmarks/noise_study.py                 # the page's tables (~15 CPU minutes)
    python benchmarks/noise_study.py --full          # and the whole one-factor sweep
    python benchmarks/noise_study.py --seeds 1 --quick   # a smoke run: 1/10 the noise
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import logging
import os
import shutil
import statistics
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared" / "data"
DOCS = ROOT / "docs"
PAGE = DOCS / "noise_ablation.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
MNIST_TRAIN, MNIST_HELD_OUT = 50_000, 10_000
# Conditions run on the second and third datasets: the defaults against FA and the old ones.
CHECK_CONDITIONS = ["fa", "fa+noise", "old-default", "deep-fa", "deep-fa+noise"]
BARS = {1: 75.0, 3: 80.0}  # last-layer angle after noise, by hidden layers (issue 12)

log = logging.getLogger("noise_study")


def prepare_data(work: Path) -> tuple[Path, Path]:
    """A data folder holding Fashion-MNIST's release files, and an ``.npz`` of MNIST's
    training split with its last 10,000 images held out as the test split."""
    raw = work / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for path in (SHARED / "fashion-mnist").glob("*-ubyte.gz"):
        if not (raw / path.name).exists():
            shutil.copy(path, raw / path.name)
    npz = work / "mnist_held_out.npz"
    if not npz.exists():
        folder = SHARED / "mnist-train"
        with gzip.open(folder / "train-images-idx3-ubyte.gz") as handle:
            images = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
        with gzip.open(folder / "train-labels-idx1-ubyte.gz") as handle:
            labels = np.frombuffer(handle.read(), np.uint8, offset=8).astype(np.int64)
        cut = len(images) - MNIST_HELD_OUT
        assert cut == MNIST_TRAIN, f"expected 60,000 MNIST training images, got {len(images)}"
        np.savez(
            npz,
            x_train=images[:cut],
            y_train=labels[:cut],
            x_test=images[cut:],
            y_test=labels[cut:],
        )
    return work / "data", npz


def study_body(dataset: str, seeds: int, conditions: list[str] | None, quick: bool) -> dict:
    """The preset's body on ``dataset`` (the digits variant for ``digits``), optionally with
    fewer seeds, a subset of its conditions, or (``quick``) a tenth of every noise epoch."""
    from noisefa.engine.contract.presets import PRESETS

    preset = "noise_ablation_digits" if dataset == "digits" else "noise_ablation"
    body = copy.deepcopy(PRESETS[preset]["body"])
    body["base"]["train"]["dataset"] = dataset
    body["base"]["device"] = "cpu"
    body["seeds"] = list(range(seeds))
    if conditions is not None:
        body["conditions"] = {k: v for k, v in body["conditions"].items() if k in conditions}
    if quick:
        for condition in body["conditions"].values():
            if condition.get("pretrain"):
                condition["pretrain"]["samples_per_epoch"] //= 10
    return body


def run_study(body: dict, root: Path, data_dir: Path) -> tuple[dict, dict[str, list[dict]]]:
    """Every child of the experiment ``body`` as one call of :func:`run_jobs`, then the
    report; returns ``(report, condition → per seed {state, history, error})``."""
    from noisefa.engine.contract.bodies import parse_job
    from noisefa.engine.contract.experiment_spec import expand_experiment
    from noisefa.engine.contract.states import JobState
    from noisefa.engine.experiment import child_dir
    from noisefa.engine.report import aggregate_experiment
    from noisefa.engine.run import run_jobs

    spec = parse_job(body)
    expanded = expand_experiment(spec)
    cells = [(name, child) for name, specs in expanded.items() for child in specs]
    dirs = [child_dir(root, name, child.model.seed) for name, child in cells]
    outcomes = run_jobs([child for _, child in cells], dirs, data_dir=data_dir)
    children: dict[str, list[dict]] = {name: [] for name in expanded}
    for (name, _), folder, outcome in zip(cells, dirs, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            error = {"reason": "internal", "message": str(outcome)}
            children[name].append({"state": JobState.FAILED, "history": [], "error": error})
            continue
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        history = [json.loads(line) for line in lines]
        children[name].append({"state": JobState.SUCCEEDED, "history": history, "error": None})
    return aggregate_experiment(spec, children, root), children


def noise_angles(history: list[dict]) -> dict[int, list[float]]:
    """Layer → its alignment angle after each noise epoch (index 0: before noise)."""
    prefix = "alignment_angle/"
    by_layer: dict[int, dict[int, float]] = {}
    for p in history:
        if p["phase"] == "pretrain" and p["name"].startswith(prefix):
            by_layer.setdefault(int(p["name"][len(prefix) :]), {})[p["epoch"]] = p["value"]
    return {layer: [v[e] for e in sorted(v)] for layer, v in sorted(by_layer.items())}


def _mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.1f} ± {std:.1f}"


def summarise(report: dict, children: dict[str, list[dict]], body: dict) -> list[dict]:
    """One row per condition: what it changes, samples, every layer's angle after noise,
    the last layer's angle at a fifth of the noise (for the ×5 conditions: the default's
    samples), epoch-1 and final test accuracy (mean ± std over seeds)."""
    rows = []
    for name, runs in children.items():
        histories = [r["history"] for r in runs if r["history"]]
        pre = body["conditions"][name].get("pretrain")
        hidden = body["conditions"][name].get("model", {}).get("hidden", [100])
        angles = [noise_angles(h) for h in histories]
        row: dict[str, Any] = {"condition": name, "hidden": len(hidden), "seeds": len(histories)}
        row["samples"] = pre["epochs"] * pre["samples_per_epoch"] if pre else 0
        if pre and angles and angles[0]:
            layers = sorted(angles[0])
            row["layers"] = {k: _mean_std([a[k][-1] for a in angles]) for k in layers}
            last = layers[-1]
            row["last_values"] = [a[last][-1] for a in angles]
            fifth = pre["epochs"] // 5
            if fifth >= 1:
                row["at_fifth"] = _mean_std([a[last][fifth] for a in angles])
            row["trajectory"] = [
                statistics.fmean(a[last][e] for a in angles) for e in range(len(angles[0][last]))
            ]
            row["epoch_samples"] = pre["samples_per_epoch"]
        summary = report["conditions"][name]
        row["epoch1"] = summary.get("epoch1_test_accuracy", {})
        row["final"] = summary.get("final_test_accuracy", {})
        rows.append(row)
    return rows


def _accuracy(cell: dict) -> str:
    if cell.get("mean") is None:
        return "–"
    return f"{cell['mean']:.3f} ± {cell['std']:.3f}"


def format_table(rows: list[dict]) -> str:
    """The page's table for one dataset: every layer's angle after noise, ± over seeds."""
    width = max((len(r.get("layers", {})) for r in rows), default=2)
    layer_heads = " | ".join(f"angle/{k} (°)" for k in range(1, width + 1))
    lines = [
        f"| condition | hidden | noise samples | {layer_heads} | last @ ⅕ samples "
        "| epoch-1 test acc | final test acc |",
        "|" + " --- |" * (width + 6),
    ]
    for r in rows:
        cells = [r["layers"].get(k, "") if "layers" in r else "–" for k in range(1, width + 1)]
        lines.append(
            f"| {r['condition']} | {r['hidden']} | {r['samples']:,} | {' | '.join(cells)} "
            f"| {r.get('at_fifth', '–')} | {_accuracy(r['epoch1'])} | {_accuracy(r['final'])} |"
        )
    return "\n".join(lines)


def plot_trajectories(rows: list[dict], path: Path, title: str) -> None:
    """The last layer's angle against noise samples, one line per noise condition; one
    panel per depth."""
    from noisefa.engine.plots import new_figure, save_figure

    depths = sorted({r["hidden"] for r in rows if "trajectory" in r})
    figure, axes = new_figure(len(depths), width=6, height=4)
    for axis, depth in zip(axes, depths, strict=True):
        for r in rows:
            if r["hidden"] == depth and "trajectory" in r:
                samples = [e * r["epoch_samples"] for e in range(len(r["trajectory"]))]
                axis.plot(samples, r["trajectory"], marker="o", markersize=2, label=r["condition"])
        axis.axhline(BARS.get(depth, 80.0), color="gray", linestyle="--", linewidth=1)
        axis.set(
            title=f"{title}: {depth} hidden layer(s)",
            xlabel="noise samples",
            ylabel="last-layer alignment angle (°)",
            xscale="symlog",
        )
        axis.legend(fontsize=7)
    save_figure(figure, path)


def write_page(sections: list[str]) -> None:
    """Replace the results section of docs/noise_ablation.md (the prose around it stays)."""
    text = PAGE.read_text() if PAGE.exists() else f"# Noise ablation\n\n{START}\n{END}\n"
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    PAGE.write_text(head + START + "\n" + "\n\n".join(sections) + "\n" + END + tail)


LABELS = {"fashion_mnist": "Fashion-MNIST", "mnist": "MNIST (held-out 10k)", "digits": "digits"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--datasets", default="fashion_mnist,mnist,digits")
    parser.add_argument("--work", type=Path, default=Path("/tmp/noisefa-noise-study"))
    parser.add_argument("--quick", action="store_true", help="a tenth of the noise")
    parser.add_argument("--no-page", action="store_true", help="leave docs/ untouched")
    parser.add_argument(
        "--full", action="store_true", help="every condition on Fashion-MNIST, not the check set"
    )
    args = parser.parse_args()
    os.environ.setdefault("NOISEFA_TORCH_THREADS", "1")
    import torch

    from noisefa.engine.process_choices import apply_settings
    from noisefa.service.settings import get_settings

    torch.set_num_threads(int(os.environ["NOISEFA_TORCH_THREADS"]))
    apply_settings(get_settings())  # NOISEFA_CUDA_GRAPHS, NOISEFA_PREFETCH_BATCHES
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data_dir, npz = prepare_data(args.work)
    sections = []
    for dataset in args.datasets.split(","):
        name = f"npz:{npz}" if dataset == "mnist" else dataset
        subset = None if dataset == "fashion_mnist" and args.full else CHECK_CONDITIONS
        body = study_body(name, args.seeds, subset, args.quick)
        log.info("%s: %d conditions × %d seeds", dataset, len(body["conditions"]), args.seeds)
        root = args.work / dataset
        report, children = run_study(body, root, data_dir)
        rows = summarise(report, children, body)
        (root / "study_rows.json").write_text(json.dumps(rows, indent=1))
        img = f"img/noise_{dataset}_angle.png"
        if not args.no_page:
            (DOCS / "img").mkdir(exist_ok=True)
            plot_trajectories(rows, DOCS / img, LABELS[dataset])
            shutil.copy(root / "test_accuracy.png", DOCS / f"img/noise_{dataset}_accuracy.png")
        sections.append(
            f"### {LABELS[dataset]}\n\n{format_table(rows)}\n\n"
            f"![last-layer angle during noise]({img})\n"
            f"![test accuracy](img/noise_{dataset}_accuracy.png)"
        )
        print(f"\n{LABELS[dataset]}\n{format_table(rows)}", flush=True)
    if not args.no_page:
        write_page(sections)


if __name__ == "__main__":
    main()
