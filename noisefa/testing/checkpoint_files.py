"""Real checkpoints for upload tests, and hostile variants of them.

:func:`trained_checkpoint` trains a tiny ``digits`` run through the engine (a second or two on
one CPU thread) and returns its final checkpoint; :func:`rewritten` writes a copy with its
tensors or metadata changed, by the safetensors format itself (no torch), so each hostile
upload differs from a real one in exactly one way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from noisefa.engine.contract.checkpoint_format import METADATA_KEY

Tensors = dict[str, np.ndarray]


def trained_checkpoint(folder: Path, *, hidden: list[int] | None = None, **model: Any) -> Path:
    """The final checkpoint of a one-epoch FA run on ``digits`` in ``folder``."""
    import torch

    from noisefa.engine.contract.spec import parse_spec
    from noisefa.engine.run import run_job
    from noisefa.testing.specs import train_body

    torch.set_num_threads(1)
    body = train_body(model={"hidden": hidden or [8], "seed": 0, "rule": "fa", **model})
    body["train"] |= {"epochs": 1}
    result = run_job(parse_spec(body), folder)
    return folder / result["final_checkpoint"]


def read_checkpoint(path: Path) -> tuple[Tensors, dict[str, Any]]:
    """A checkpoint's tensors (numpy) and its ``noisefa`` metadata document."""
    with safe_open(str(path), framework="numpy") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        meta = json.loads(handle.metadata()[METADATA_KEY])
    return tensors, meta


def rewritten(
    source: Path,
    target: Path,
    *,
    tensors: Callable[[Tensors], Tensors] | None = None,
    meta: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> bytes:
    """The bytes of ``source`` with its tensors and/or metadata changed (written to
    ``target``); the stored checksum is left as it was."""
    found, document = read_checkpoint(source)
    found = tensors(found) if tensors else found
    document = meta(document) if meta else document
    save_file(found, str(target), metadata={METADATA_KEY: json.dumps(document)})
    return target.read_bytes()
