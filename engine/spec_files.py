"""Reading job specs from JSON or YAML files (the CLI's input format)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml


def read_spec_file(path: Path) -> dict[str, Any]:
    """The raw spec in ``path`` (``.json``, ``.yaml`` or ``.yml``), not yet validated."""
    text = path.read_text()
    data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a job spec must be a mapping, got {type(data).__name__}")
    return data
