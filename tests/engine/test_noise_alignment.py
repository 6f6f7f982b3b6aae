"""The spec's default noise pretraining aligns FA's last layer, and keeps it over its epochs.

Noise needs no data beyond the input shape: a ``pretrain`` job on Fashion-MNIST's shape
(784 inputs, 10 classes) reads no file. The bar (issue 12, docs/noise_ablation.md): the
784-100-10 net's last-layer angle after the default noise is at most 75°. The old defaults
(Adam 1e-3) dipped and returned within a few noise epochs; the defaults must not.
"""

from __future__ import annotations

import json
from pathlib import Path

from noisefa.engine.contract.spec import parse_spec
from noisefa.engine.run import run_jobs

LAST_LAYER_BAR = 75.0  # degrees, one hidden layer of 100 on 784 inputs
NO_RISE = 0.5  # degrees an epoch-to-epoch change may go up (float and seed wobble)


def noise_angles(out_dir: Path, layer: int) -> list[float]:
    """``alignment_angle/<layer>`` after each noise epoch (first: before any noise)."""
    points = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    name = f"alignment_angle/{layer}"
    series = {p["epoch"]: p["value"] for p in points if p["name"] == name}
    return [series[epoch] for epoch in sorted(series)]


def default_pretrain(dataset: str) -> dict:
    """A noise-only job with every pretraining setting left at the spec's default."""
    return {
        "kind": "pretrain",
        "model": {"hidden": [100], "rule": "fa", "seed": 0},
        "pretrain": {"dataset": dataset},
        "device": "cpu",
        "checkpoint_every": 1000,
        "metrics": {"probe_size": 64, "readout_size": 256},
    }


def test_default_noise_pretraining_lowers_the_last_layer_angle_and_keeps_it(tmp_path):
    fashion, digits = tmp_path / "fashion", tmp_path / "digits"
    specs = [parse_spec(default_pretrain("fashion_mnist")), parse_spec(default_pretrain("digits"))]
    assert all(isinstance(result, dict) for result in run_jobs(specs, [fashion, digits]))

    angles = noise_angles(fashion, layer=2)
    assert len(angles) == specs[0].pretrain.epochs + 1
    assert angles[0] > 85, angles  # random initialisation: about 90°
    assert angles[-1] <= LAST_LAYER_BAR, angles
    rises = [later - earlier for earlier, later in zip(angles, angles[1:], strict=False)]
    assert max(rises) <= NO_RISE, angles  # falls and stays: no dip and return

    small = noise_angles(digits, layer=2)  # 64 inputs: a small check, not the bar
    assert small[-1] < small[0] - 5, small
