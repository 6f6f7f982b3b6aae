"""Fixtures of the CLI tests: one CPU thread for the commands run in-process (as in the engine
tests: shared cores), and spec files to hand the ``noisefa`` command (the running service
itself comes from ``tests/conftest.py``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture
def spec_file(tmp_path: Path) -> Callable[..., Path]:
    """Write a spec to a JSON file and return its path."""

    def write(spec: dict, name: str = "spec.json") -> Path:
        path = tmp_path / name
        path.write_text(json.dumps(spec))
        return path

    return write
