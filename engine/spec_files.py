"""Reading job specs from JSON or YAML files (the CLI's input format)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml


class _SpecLoader(yaml.SafeLoader):
    """YAML 1.1 (PyYAML) reads ``1e-3`` as text, and spec numbers are strict; this loader
    reads it as YAML 1.2 does, a float."""


_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def read_spec_file(path: Path) -> dict[str, Any]:
    """The raw spec in ``path`` (``.json``, ``.yaml`` or ``.yml``), not yet validated."""
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        data = yaml.load(text, Loader=_SpecLoader)  # a SafeLoader: no Python objects
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a job spec must be a mapping, got {type(data).__name__}")
    return data
