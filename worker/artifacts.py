"""Uploading a job's files: object storage first, then the artifact row that points at it."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from noisefa.service.repositories import execution as repo
from noisefa.service.storage import Storage

CONTENT_TYPES = {
    ".json": "application/json",
    ".jsonl": "application/x-ndjson",
    ".safetensors": "application/octet-stream",
    ".png": "image/png",
    ".md": "text/markdown; charset=utf-8",
}


def upload_artifact(
    attempt: repo.Attempt,
    sessions: sessionmaker[Session],
    storage: Storage,
    path: Path,
    name: str,
) -> bool:
    """Store ``path`` as the job's artifact ``name``; False when the attempt's lease is lost.

    The object is written before the row, so a listed artifact is always downloadable.
    """
    key = repo.artifact_key(attempt.project_id, attempt.job_id, name)
    storage.put_file(key, path)
    content_type = CONTENT_TYPES.get(path.suffix, "application/octet-stream")
    with sessions() as session:
        return repo.record_artifact(session, attempt, name, key, path.stat().st_size, content_type)
