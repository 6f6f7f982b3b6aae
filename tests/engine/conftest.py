"""Fixtures for the engine tests: one CPU thread (determinism, shared cores), small specs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from noisefa.engine.contract.spec import JobSpec, parse_spec


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    torch.set_num_threads(1)


def make_small_spec(**overrides) -> JobSpec:
    """A digits job with short noise pretraining, small enough for a test in ~1 s."""
    data = {
        "kind": "train",
        "model": {"hidden": [32], "rule": "fa", "seed": 0},
        "pretrain": {"epochs": 2, "samples_per_epoch": 2048, "batch_size": 64},
        "train": {"dataset": "digits", "epochs": 2, "batch_size": 64},
        "device": "cpu",
        "metrics": {"probe_size": 64, "readout_size": 256},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        elif value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return parse_spec(data)


@pytest.fixture(scope="session")
def small_spec():
    """The factory :func:`make_small_spec` (keyword overrides merge into its blocks)."""
    return make_small_spec


SHARED_FASHION = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "fashion-mnist"


@pytest.fixture
def fashion_data_dir(tmp_path: Path) -> Path:
    """A data folder holding the shared Fashion-MNIST release files (``.gz``) where a
    ``FashionMNIST`` set is looked for; skips when ``shared/`` lacks them."""
    if not SHARED_FASHION.is_dir():
        pytest.skip(f"{SHARED_FASHION} is absent")
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for path in SHARED_FASHION.glob("*-ubyte.gz"):
        shutil.copy(path, raw / path.name)
    return tmp_path
