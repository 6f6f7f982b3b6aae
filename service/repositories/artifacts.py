"""Artifacts of a job as the API lists and serves them."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import Artifact


def list_artifacts(session: Session, job_id: str) -> list[Artifact]:
    """Every artifact of the job, by name."""
    return list(
        session.scalars(select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.name))
    )


def get_artifact(session: Session, job_id: str, name: str) -> Artifact | None:
    """The job's artifact called ``name``."""
    return session.scalar(select(Artifact).where(Artifact.job_id == job_id, Artifact.name == name))
