"""Checks that a part of noisefa runs without loading torch, each in a fresh interpreter.

docs/design.md promises that the API validates and lists jobs without the training stack, and
that the contract (``noisefa.engine.contract``) imports no torch. A check runs here as a
script, so nothing the test process imported already can hide an import::

    python -m noisefa.testing.torch_free contract        # import every contract module
    python -m noisefa.testing.torch_free api HOME         # the API's read and submit routes

It exits 0 when torch stayed out; otherwise 1, printing the chain of noisefa modules that
imported it first (what to fix).
"""

from __future__ import annotations

import importlib
import importlib.abc
import io
import pkgutil
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import numpy as np

TORCH = "torch"


class TorchImportWatch(importlib.abc.MetaPathFinder):
    """A finder that finds nothing: it notes the stack of the first ``import torch``."""

    def __init__(self) -> None:
        self.first_import: list[str] | None = None

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> None:
        if fullname == TORCH and self.first_import is None:
            frames = traceback.extract_stack()[:-1]
            self.first_import = [
                f"{frame.filename}:{frame.lineno} {frame.line}"
                for frame in frames
                if "importlib" not in frame.filename
            ]
        return None  # the normal finders import it

    def report(self) -> str:
        """Where torch was first imported from, innermost frame last."""
        if self.first_import is None:
            return f"{TORCH} is loaded, but it was imported before the watch started"
        return "torch was imported by:\n  " + "\n  ".join(self.first_import)


def import_contract() -> list[str]:
    """Import every module of ``noisefa.engine.contract``; their names."""
    import noisefa.engine.contract as contract

    names = [f"{contract.__name__}.{info.name}" for info in pkgutil.iter_modules(contract.__path__)]
    for name in names:
        importlib.import_module(name)
    return names


def api_round_trip(home: Path) -> None:
    """Build the API on an embedded SQLite home and call the routes that must not need torch:
    submit a train job, list jobs, upload a ``.npz``, list datasets, list presets."""
    from fastapi.testclient import TestClient

    from noisefa.service.app import create_app
    from noisefa.testing.db import migrated, new_project_key, settings_for
    from noisefa.testing.specs import train_spec

    settings = migrated(settings_for(home, broker_url=None, reaper_enabled=False))
    headers = {"Authorization": f"Bearer {new_project_key(settings)}"}
    with TestClient(create_app(settings)) as client:
        answers = {
            "submit": client.post("/v1/jobs", json=train_spec(), headers=headers),
            "list jobs": client.get("/v1/jobs", headers=headers),
            "upload": client.post(
                "/v1/datasets", files={"file": ("tiny.npz", _tiny_npz())}, headers=headers
            ),
            "list datasets": client.get("/v1/datasets", headers=headers),
            "list presets": client.get("/v1/presets", headers=headers),
        }
    for call, response in answers.items():
        assert response.is_success, f"{call}: {response.status_code} {response.text}"


def _tiny_npz() -> bytes:
    """A valid four-sample, two-class upload."""
    buffer = io.BytesIO()
    x, y = np.zeros((4, 3), np.float32), np.array([0, 1, 0, 1])
    np.savez(buffer, x_train=x, y_train=y, x_test=x, y_test=y)
    return buffer.getvalue()


def main(argv: list[str]) -> int:
    """Run the check named by ``argv[0]`` under a :class:`TorchImportWatch`."""
    watch = TorchImportWatch()
    sys.meta_path.insert(0, watch)
    if argv[:1] == ["contract"]:
        import_contract()
    elif argv[:1] == ["api"] and len(argv) == 2:
        api_round_trip(Path(argv[1]))
    else:
        sys.stderr.write("usage: python -m noisefa.testing.torch_free contract | api HOME\n")
        return 2
    if TORCH in sys.modules:
        sys.stderr.write(watch.report() + "\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
