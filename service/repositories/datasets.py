"""Datasets as the API sees them: the engine's built-ins and a project's ``.npz`` uploads.

An upload is validated without trusting it (:mod:`noisefa.service.npz_check`: declared sizes
and headers before any unpacking, values in bounded chunks) before anything is stored; then
the object is written, then its row, so a listed upload is always downloadable and a refused
one leaves nothing behind. Jobs name an upload ``upload:<id>``; the id is checked against the
caller's project at submit, and an upload that an unfinished job reads cannot be deleted.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from noisefa.engine.contract.catalogue import (
    UPLOAD_PREFIX,
    builtin_shape,
    builtins_on_disk,
    known_datasets,
)

from ..models import Dataset, DatasetIdempotencyKey
from ..npz_check import NpzLimits, UploadInfo, check_npz
from ..settings import Settings
from ..storage import Storage
from .key_records import find_live_record
from .stored_uploads import delete_upload_row, store_upload


def upload_name(dataset_id: str) -> str:
    """The name jobs use for an upload."""
    return f"{UPLOAD_PREFIX}{dataset_id}"


def storage_key(project_id: str, dataset_id: str) -> str:
    """Where an upload lives in object storage: ``<project_id>/datasets/<id>.npz``."""
    return f"{project_id}/datasets/{dataset_id}.npz"


def validate_npz(path: Path, settings: Settings) -> UploadInfo:
    """Validate ``path`` within the deployment's upload limits;
    :class:`~..npz_check.InvalidUpload` (413 or 422, naming the array or limit) if refused."""
    limits = NpzLimits(
        max_uncompressed_bytes=settings.max_upload_uncompressed_bytes,
        max_compression_ratio=settings.max_upload_compression_ratio,
        max_classes=settings.max_classes,
    )
    return check_npz(path, limits)


def create_upload(
    session: Session,
    storage: Storage,
    project_id: str,
    name: str,
    path: Path,
    info: UploadInfo,
    idempotency: tuple[str, str] | None = None,
) -> Dataset:
    """Store a validated upload (:func:`~.stored_uploads.store_upload`). Commits."""
    dataset_id = uuid.uuid4().hex
    key = storage_key(project_id, dataset_id)
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
    record = None
    if idempotency is not None:
        record = DatasetIdempotencyKey(
            project_id=project_id,
            key=idempotency[0],
            request_hash=idempotency[1],
            dataset_id=dataset_id,
        )
    store_upload(session, storage, key, path, dataset, record)
    return dataset


def find_idempotent(
    session: Session, project_id: str, key: str, ttl_s: float | None
) -> DatasetIdempotencyKey | None:
    """The live record of an upload's ``Idempotency-Key``; None when unused or expired."""
    return find_live_record(session, DatasetIdempotencyKey, project_id, key, ttl_s)


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


def builtin_datasets(data_dir: Path) -> list[dict]:
    """The engine's catalogue: name, input shape, classes, and whether its files are in the
    data folder (as this process sees it; workers read the same ``data_dir`` setting)."""
    on_disk = builtins_on_disk(data_dir)
    found = []
    for name in known_datasets():
        input_shape, num_classes = builtin_shape(name)
        found.append(
            {
                "name": name,
                "input_shape": list(input_shape),
                "num_classes": num_classes,
                "available": name in on_disk,
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


def delete_upload(session: Session, storage: Storage, dataset: Dataset) -> None:
    """Delete the upload's row, then its object (:func:`~.stored_uploads.delete_upload_row`)."""
    delete_upload_row(session, storage, Dataset, dataset)
