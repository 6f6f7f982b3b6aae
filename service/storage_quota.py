"""The per-project storage quota: uploads (datasets, checkpoints) and job artifacts
together, ``max_project_bytes``.

An upload that would take the project past the quota is refused (413, with the figures); a
job submitted while the project is already past it is refused (429): its artifacts would
only add to it. A running job's artifacts are not stopped mid-job, so a project can end a
little over; deleting datasets or jobs (``DELETE /v1/...``) frees room. Two uploads racing
may both pass a check made before either is stored; the overshoot is at most one upload.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .models import Artifact, CheckpointUpload, Dataset, Job
from .problems import FieldError, ProblemError
from .settings import Settings

FIELD = "max_project_bytes"


def stored_bytes(session: Session, project_id: str) -> int:
    """Bytes the project holds in object storage: its uploads (datasets and checkpoints)
    and its jobs' artifacts."""
    uploads = sum(
        session.scalar(
            select(func.coalesce(func.sum(table.size), 0)).where(table.project_id == project_id)
        )
        for table in (Dataset, CheckpointUpload)
    )
    artifacts = session.scalar(
        select(func.coalesce(func.sum(Artifact.size), 0))
        .join(Job, Job.id == Artifact.job_id)
        .where(Job.project_id == project_id)
    )
    return int(uploads) + int(artifacts)


def check_room_for_upload(
    session: Session, project_id: str, settings: Settings, upload_bytes: int
) -> None:
    """413 naming the quota when storing ``upload_bytes`` more would pass it."""
    used = stored_bytes(session, project_id)
    if used + upload_bytes > settings.max_project_bytes:
        message = (
            f"this project stores {used} bytes; {upload_bytes} more would pass the limit of "
            f"{settings.max_project_bytes}; delete datasets, checkpoints or jobs to free room"
        )
        raise _over_quota(413, message)


def check_under_quota(session: Session, project_id: str, settings: Settings) -> None:
    """429 naming the quota when the project already stores ``max_project_bytes`` or more."""
    used = stored_bytes(session, project_id)
    if used >= settings.max_project_bytes:
        message = (
            f"this project stores {used} bytes, at or over the limit of "
            f"{settings.max_project_bytes}; delete datasets or jobs to free room"
        )
        raise _over_quota(429, message)


def _over_quota(status: int, message: str) -> ProblemError:
    return ProblemError(
        status,
        f"{FIELD}: {message}",
        slug="storage-quota",
        errors=[FieldError(field=FIELD, message=message)],
    )
