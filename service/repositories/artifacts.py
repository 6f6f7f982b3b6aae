"""Artifacts of a job as the API lists and serves them.

A download is served only once its bytes match the size and sha256 recorded when they were
written (:func:`verified_bytes`): a damaged object answers a problem, never a truncated 200.
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..checksums import Digest, verified_chunks
from ..models import Artifact, CheckpointUpload
from ..storage import Storage


def list_artifacts(session: Session, job_id: str) -> list[Artifact]:
    """Every artifact of the job, by name."""
    return list(
        session.scalars(select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.name))
    )


def get_artifact(session: Session, job_id: str, name: str) -> Artifact | None:
    """The job's artifact called ``name``."""
    return session.scalar(select(Artifact).where(Artifact.job_id == job_id, Artifact.name == name))


def recorded_digest(artifact: Artifact | CheckpointUpload) -> Digest:
    """What the artifact's (or uploaded checkpoint's) object must hash to (size only for
    artifact rows older than checksums)."""
    return Digest(size=artifact.size, sha256=artifact.sha256)


def verified_bytes(storage: Storage, artifact: Artifact) -> Iterator[bytes]:
    """The artifact's bytes, checked whole before the first is handed out.

    Raises ``FileNotFoundError`` (object gone) or :class:`~..checksums.CorruptObjectError`
    before any byte; costs one full read of the object and a temporary copy (see
    :func:`~..checksums.verified_chunks`).
    """
    return verified_chunks(storage, artifact.storage_key, recorded_digest(artifact))
