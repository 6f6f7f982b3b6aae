"""Datasets as the API sees them: the engine's built-ins and a project's ``.npz`` uploads.

An upload is validated by the engine's own ``.npz`` reader (no pickle, numeric arrays,
matching shapes, finite values, labels in ``[0, C)``) before anything is stored; then the
object is written, then its row, so a listed upload is always downloadable and a refused one
leaves nothing behind. Jobs name an upload ``upload:<id>``; the id is checked against the
caller's project at submit.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from noisefa.engine.contract.catalogue import UPLOAD_PREFIX

from ..models import Dataset, DatasetIdempotencyKey, utcnow
from ..storage import Storage

NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test", "num_classes")
_ARRAY_NAME = re.compile(r"\b(" + "|".join(NPZ_ARRAYS) + r")\b")


class InvalidUpload(ValueError):
    """An upload the engine refused; ``field`` names the array (or ``file``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class UploadInfo:
    """What validation learnt about an upload."""

    input_shape: list[int]
    num_classes: int
    train_size: int
    test_size: int


def upload_name(dataset_id: str) -> str:
    """The name jobs use for an upload."""
    return f"{UPLOAD_PREFIX}{dataset_id}"


def storage_key(project_id: str, dataset_id: str) -> str:
    """Where an upload lives in object storage: ``<project_id>/datasets/<id>.npz``."""
    return f"{project_id}/datasets/{dataset_id}.npz"


def validate_npz(path: Path) -> UploadInfo:
    """Validate ``path`` with the engine's ``.npz`` reader; :class:`InvalidUpload` if refused.

    The engine module loads torch, so it is imported here, on the first upload, rather than
    when the API starts.
    """
    from noisefa.engine.contract.errors import DatasetUnavailableError
    from noisefa.engine.datasets import dataset_info

    try:
        input_shape, num_classes = dataset_info("upload", dataset_files={"upload": path})
    except DatasetUnavailableError as error:
        message = str(error).replace(f"npz dataset {path}: ", "").replace(str(path), "file")
        found = _ARRAY_NAME.search(message)
        raise InvalidUpload(found[1] if found else _unreadable_array(path), message) from error
    with np.load(path, allow_pickle=False) as npz:
        train_size, test_size = len(npz["y_train"]), len(npz["y_test"])
    return UploadInfo(list(input_shape), num_classes, train_size, test_size)


def _unreadable_array(path: Path) -> str:
    """The first array numpy cannot read without pickle (an object array), else ``file``.

    The engine's message says only that some array is unreadable; this names it.
    """
    try:
        with np.load(path, allow_pickle=False) as npz:
            for name in NPZ_ARRAYS:
                if name in npz.files:
                    try:
                        npz[name]
                    except ValueError:
                        return name
    except Exception:  # not a zip at all: the whole file is the problem
        return "file"
    return "file"


def create_upload(
    session: Session,
    storage: Storage,
    project_id: str,
    name: str,
    path: Path,
    info: UploadInfo,
    idempotency: tuple[str, str] | None = None,
) -> Dataset:
    """Store a validated upload: object first, then its row (and idempotency key). Commits.

    The object is deleted again if the row cannot be committed.
    """
    dataset_id = uuid.uuid4().hex
    key = storage_key(project_id, dataset_id)
    storage.put_file(key, path)
    try:
        dataset = Dataset(
            id=dataset_id,
            project_id=project_id,
            name=name,
            storage_key=key,
            size=path.stat().st_size,
            input_shape=info.input_shape,
            num_classes=info.num_classes,
            train_size=info.train_size,
            test_size=info.test_size,
        )
        session.add(dataset)
        session.flush()
        if idempotency is not None:
            session.add(
                DatasetIdempotencyKey(
                    project_id=project_id,
                    key=idempotency[0],
                    request_hash=idempotency[1],
                    dataset_id=dataset_id,
                )
            )
        session.commit()
    except BaseException:
        session.rollback()
        storage.delete(key)
        raise
    return dataset


def find_idempotent(
    session: Session, project_id: str, key: str, ttl_s: float
) -> DatasetIdempotencyKey | None:
    """The live record of an upload's ``Idempotency-Key``; None when unused or expired."""
    record = session.get(DatasetIdempotencyKey, (project_id, key))
    if record is None:
        return None
    created = record.created_at
    if created.tzinfo is None:
        created = created.replace(tzinfo=utcnow().tzinfo)
    if created < utcnow() - timedelta(seconds=ttl_s):
        session.delete(record)
        session.flush()
        return None
    return record


def get_upload(session: Session, project_id: str, dataset_id: str) -> Dataset | None:
    """The project's upload; None for unknown ids and other projects' uploads alike."""
    return session.scalar(
        select(Dataset).where(Dataset.id == dataset_id, Dataset.project_id == project_id)
    )


def list_uploads(session: Session, project_id: str, limit: int) -> list[Dataset]:
    """The project's uploads, newest first (at most ``limit``)."""
    return list(
        session.scalars(
            select(Dataset)
            .where(Dataset.project_id == project_id)
            .order_by(Dataset.created_at.desc(), Dataset.id.desc())
            .limit(limit)
        )
    )


def builtin_datasets(data_dir: Path | None) -> list[dict]:
    """The engine's registry: name, input shape, classes, and whether its files are in the
    data folder (as this process sees it; workers read the same ``data_dir`` setting)."""
    from noisefa.engine.datasets import (
        DIGITS_CLASSES,
        DIGITS_SHAPE,
        TORCHVISION_SETS,
        resolve_data_dir,
    )

    folder = resolve_data_dir(data_dir)
    found = [
        {
            "name": "digits",
            "input_shape": list(DIGITS_SHAPE),
            "num_classes": DIGITS_CLASSES,
            "available": True,
        }
    ]
    for name, entry in TORCHVISION_SETS.items():
        files = [folder / entry.folder / f for f in entry.files]
        found.append(
            {
                "name": name,
                "input_shape": list(entry.input_shape),
                "num_classes": entry.num_classes,
                "available": all(f.is_file() for f in files),
            }
        )
    return found


def missing_uploads(
    session: Session, project_id: str, refs: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The ``(field, name)`` of ``refs`` naming an upload the project does not have."""
    missing = []
    for field, name in refs:
        if name.startswith(UPLOAD_PREFIX) and (
            get_upload(session, project_id, name[len(UPLOAD_PREFIX) :]) is None
        ):
            missing.append((field, name))
    return missing
