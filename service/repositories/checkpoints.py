"""Uploaded checkpoints of a project: validated, stored, found by id, deleted.

An upload is validated without trusting it (:mod:`noisefa.service.checkpoint_check`: header
size first, then the tensor table against the metadata's model config, then the values in
bounded chunks) before anything is stored; then the object is written, then its row (with
the object's sha256, checked when a worker reads it), so a listed checkpoint is always
downloadable and a refused one leaves nothing behind. Jobs name one ``checkpoint:<id>`` in
``init_from``; the id is checked against the caller's project at submit.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..checkpoint_check import CheckpointInfo, CheckpointLimits, check_checkpoint
from ..checksums import file_digest
from ..models import CheckpointIdempotencyKey, CheckpointUpload
from ..settings import Settings
from ..storage import Storage
from .key_records import find_live_record
from .stored_uploads import delete_upload_row, store_upload


def storage_key(project_id: str, checkpoint_id: str) -> str:
    """Where an upload lives: ``<project_id>/checkpoints/<id>.safetensors``."""
    return f"{project_id}/checkpoints/{checkpoint_id}.safetensors"


def validate_checkpoint(path: Path, settings: Settings) -> CheckpointInfo:
    """Validate ``path`` within the deployment's limits;
    :class:`~..npz_check.InvalidUpload` (413 or 422, naming the field or tensor) if refused."""
    limits = CheckpointLimits(
        max_header_bytes=settings.max_checkpoint_header_bytes, limits=settings.limits
    )
    return check_checkpoint(path, limits)


def create_upload(
    session: Session,
    storage: Storage,
    project_id: str,
    filename: str,
    path: Path,
    info: CheckpointInfo,
    idempotency: tuple[str, str] | None = None,
) -> CheckpointUpload:
    """Store a validated checkpoint (:func:`~.stored_uploads.store_upload`). Commits."""
    checkpoint_id = uuid.uuid4().hex
    key = storage_key(project_id, checkpoint_id)
    digest = file_digest(path)
    row = CheckpointUpload(
        id=checkpoint_id,
        project_id=project_id,
        filename=filename,
        storage_key=key,
        size=digest.size,
        sha256=digest.sha256,
        model_config=info.model_config,
        trained_on=info.trained_on,
    )
    record = None
    if idempotency is not None:
        record = CheckpointIdempotencyKey(
            project_id=project_id,
            key=idempotency[0],
            request_hash=idempotency[1],
            checkpoint_id=checkpoint_id,
        )
    store_upload(session, storage, key, path, row, record)
    return row


def find_idempotent(
    session: Session, project_id: str, key: str, ttl_s: float | None
) -> CheckpointIdempotencyKey | None:
    """The live record of a checkpoint upload's ``Idempotency-Key``; None when unused or
    expired (``ttl_s=None``: ignore expiry)."""
    return find_live_record(session, CheckpointIdempotencyKey, project_id, key, ttl_s)


def get_upload(session: Session, project_id: str, checkpoint_id: str) -> CheckpointUpload | None:
    """The project's checkpoint; None for unknown ids and other projects' alike."""
    return session.scalar(
        select(CheckpointUpload).where(
            CheckpointUpload.id == checkpoint_id, CheckpointUpload.project_id == project_id
        )
    )


def list_uploads(session: Session, project_id: str, limit: int) -> list[CheckpointUpload]:
    """The project's checkpoints, newest first (at most ``limit``)."""
    return list(
        session.scalars(
            select(CheckpointUpload)
            .where(CheckpointUpload.project_id == project_id)
            .order_by(CheckpointUpload.created_at.desc(), CheckpointUpload.id.desc())
            .limit(limit)
        )
    )


def delete_upload(session: Session, storage: Storage, row: CheckpointUpload) -> None:
    """Delete the checkpoint's row, then its object (:func:`~.stored_uploads.delete_upload_row`)."""
    delete_upload_row(session, storage, CheckpointUpload, row)
