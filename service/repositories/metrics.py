"""Per-epoch metric points of a job, filtered and paginated by a stable keyset."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import case, select, tuple_
from sqlalchemy.orm import Session

from ..models import JobMetric
from ..pagination import BadPageToken, decode_token, encode_token

# Phases in the order a job runs them; unknown phases sort after, by name.
PHASE_RANK = case((JobMetric.phase == "pretrain", 0), (JobMetric.phase == "train", 1), else_=2)


@dataclass(frozen=True)
class MetricFilter:
    """Filters of ``GET /v1/jobs/{id}/metrics``; None means any."""

    name: str | None = None
    phase: str | None = None
    epoch_min: int | None = None
    epoch_max: int | None = None


def _rank(phase: str) -> int:
    return {"pretrain": 0, "train": 1}.get(phase, 2)


def list_metrics(
    session: Session,
    job_id: str,
    filters: MetricFilter,
    page_size: int,
    page_token: str | None = None,
) -> tuple[list[JobMetric], str | None]:
    """A page of the job's points ordered by (phase, epoch, name) and the next page's token."""
    query = select(JobMetric).where(JobMetric.job_id == job_id)
    if filters.name is not None:
        query = query.where(JobMetric.name == filters.name)
    if filters.phase is not None:
        query = query.where(JobMetric.phase == filters.phase)
    if filters.epoch_min is not None:
        query = query.where(JobMetric.epoch >= filters.epoch_min)
    if filters.epoch_max is not None:
        query = query.where(JobMetric.epoch <= filters.epoch_max)
    order = (PHASE_RANK, JobMetric.phase, JobMetric.epoch, JobMetric.name)
    if page_token is not None:
        phase, epoch, name = decode_token(page_token, 3)
        if not isinstance(epoch, int):
            raise BadPageToken("page_token: not a token this API issued")
        query = query.where(
            tuple_(*order) > tuple_(_rank(str(phase)), str(phase), epoch, str(name))
        )
    rows = list(session.scalars(query.order_by(*order).limit(page_size + 1)))
    if len(rows) <= page_size:
        return rows, None
    last = rows[page_size - 1]
    return rows[:page_size], encode_token(last.phase, last.epoch, last.name)
