"""Datasets read from files on the worker: ``upload:<id>`` and ``npz:<path>`` names resolved
to local ``.npz`` files.

A server file (``npz:<path>``) is checked again here against today's ``server_data_roots``
(the API checked it at submit, perhaps under other settings) and read by its resolved path.
Each upload is downloaded once into ``<work_dir>/datasets/<id>.npz`` (written to a temporary
name, then renamed, so a concurrent job on the same host never reads half a file) and reused
by every later job on this host; uploads never change once stored.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from noisefa.engine.contract.catalogue import NPZ_PREFIX, UPLOAD_PREFIX
from noisefa.engine.contract.errors import DatasetUnavailableError
from noisefa.service.dataset_access import DatasetRefused, server_file
from noisefa.service.repositories import datasets as dataset_repo
from noisefa.service.settings import Settings
from noisefa.service.storage import Storage


def local_dataset_files(
    names: Iterable[str],
    project_id: str,
    settings: Settings,
    sessions: sessionmaker[Session],
    storage: Storage,
) -> dict[str, Path]:
    """``{name: local .npz}`` for every ``upload:<id>`` and ``npz:<path>`` in ``names``.

    Raises ``DatasetUnavailableError`` for an upload the project does not have (deleted
    since the job was submitted) and for a server file outside the allowed folders.
    """
    found: dict[str, Path] = {}
    for name in dict.fromkeys(names):
        if name.startswith(NPZ_PREFIX):
            try:
                found[name] = server_file(name, settings.server_data_roots)
            except DatasetRefused as refusal:
                raise DatasetUnavailableError(f"dataset {name!r}: {refusal}") from refusal
            continue
        if not name.startswith(UPLOAD_PREFIX):
            continue
        dataset_id = name[len(UPLOAD_PREFIX) :]
        with sessions() as session:
            row = dataset_repo.get_upload(session, project_id, dataset_id)
            key = row.storage_key if row is not None else None
        if key is None:
            raise DatasetUnavailableError(f"dataset {name!r}: no such upload in this project")
        found[name] = _cached(storage, key, settings.resolved_work_dir / "datasets", dataset_id)
    return found


def _cached(storage: Storage, key: str, folder: Path, dataset_id: str) -> Path:
    path = folder / f"{dataset_id}.npz"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{dataset_id}.{uuid.uuid4().hex}.part"
    try:
        storage.get_file(key, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path
