"""Response models of the API (request bodies are the engine's ``JobSpec``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .models import Artifact, Job, JobMetric

JobState = Literal["queued", "running", "cancelling", "succeeded", "failed", "cancelled"]
JobKind = Literal["pretrain", "train"]
FailureReason = Literal[
    "invalid_spec", "dataset_unavailable", "out_of_memory", "worker_lost", "internal"
]


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


class Progress(BaseModel):
    """Where a running job is; fields the worker has not reported are null."""

    model_config = ConfigDict(extra="allow")

    phase: str | None = Field(None, description="`pretrain` or `train`.")
    epoch: int | None = Field(None, description="Current epoch (1-based) of the phase.")
    epochs: int | None = Field(None, description="Epochs in the phase.")
    step: int | None = Field(None, description="Step within the epoch.")
    steps: int | None = Field(None, description="Steps per epoch.")
    eta_s: float | None = Field(None, description="Estimated seconds until the job ends.")


class JobError(BaseModel):
    """Why a job failed."""

    reason: FailureReason | str = Field(description="Machine-readable reason.")
    message: str | None = Field(None, description="Human-readable explanation.")


class JobOut(BaseModel):
    """A job as the API shows it. State comes from the database, never from the broker."""

    id: str
    kind: JobKind | str
    state: JobState
    spec: dict[str, Any] = Field(description="The submitted spec, normalised (a `JobSpec`).")
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempt: int = Field(description="Attempts started so far (0 while first queued).")
    cancel_requested: bool = False
    progress: Progress | None = None
    result: dict[str, Any] | None = Field(None, description="Final metrics and artifacts.")
    error: JobError | None = None

    @classmethod
    def of(cls, job: Job) -> JobOut:
        """The API view of a job row."""
        error = None
        if job.error_reason is not None:
            error = JobError(reason=job.error_reason, message=job.error_message)
        return cls(
            id=job.id,
            kind=job.kind,
            state=job.state,
            spec=job.spec,
            created_at=as_utc(job.created_at),
            started_at=as_utc(job.started_at),
            finished_at=as_utc(job.finished_at),
            attempt=job.attempt,
            cancel_requested=job.cancel_requested,
            progress=Progress.model_validate(job.progress) if job.progress else None,
            result=job.result,
            error=error,
        )


class JobPage(BaseModel):
    """One page of jobs, newest first."""

    items: list[JobOut]
    next_page_token: str | None = Field(None, description="Pass as `page_token`; null at end.")


class MetricPoint(BaseModel):
    """One metric value at the end of an epoch of a phase."""

    name: str = Field(description="Metric name as the engine writes it, e.g. `alignment_angle[1]`.")
    phase: str = Field(description="`pretrain` or `train`.")
    epoch: int
    value: float

    @classmethod
    def of(cls, row: JobMetric) -> MetricPoint:
        """The API view of a metric row."""
        return cls(name=row.name, phase=row.phase, epoch=row.epoch, value=row.value)


class MetricPage(BaseModel):
    """One page of metric points, by phase (pretrain first), epoch, then name."""

    items: list[MetricPoint]
    next_page_token: str | None = Field(None, description="Pass as `page_token`; null at end.")


class ArtifactOut(BaseModel):
    """A file of a job (checkpoint, result, report) in object storage."""

    name: str = Field(description="Path within the job, e.g. `checkpoints/epoch-0003.safetensors`.")
    size: int = Field(description="Bytes.")
    content_type: str
    created_at: datetime

    @classmethod
    def of(cls, row: Artifact) -> ArtifactOut:
        """The API view of an artifact row."""
        return cls(
            name=row.name,
            size=row.size,
            content_type=row.content_type,
            created_at=as_utc(row.created_at),
        )


class ArtifactList(BaseModel):
    """Every artifact of a job, by name."""

    items: list[ArtifactOut]


class Health(BaseModel):
    """Answer of ``/healthz`` and a ready ``/readyz``."""

    status: Literal["ok"] = "ok"
    checks: dict[str, str] = Field(default_factory=dict, description="Check name → `ok`.")
