"""Response models of the API (request bodies are the engine's ``JobSpec``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from noisefa.engine.contract.states import FailureReason, JobKind, JobState

from .guards import without_surrogates
from .models import Artifact, CheckpointUpload, Dataset, Job, JobMetric


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


class Progress(BaseModel):
    """Where a running job is; fields the worker has not reported are null."""

    model_config = ConfigDict(extra="allow")

    phase: str | None = Field(None, description="`pretrain`, `train` or `experiment`.")
    epoch: int | None = Field(None, description="Current epoch (1-based) of the phase.")
    epochs: int | None = Field(None, description="Epochs in the phase.")
    step: int | None = Field(None, description="Step within the epoch.")
    steps: int | None = Field(None, description="Steps per epoch.")
    eta_s: float | None = Field(None, description="Estimated seconds until the job ends.")
    children_done: int | None = Field(
        None, description="An experiment's runs that have ended (in any terminal state)."
    )
    children_total: int | None = Field(None, description="An experiment's runs in all.")


class JobError(BaseModel):
    """Why a job failed."""

    reason: FailureReason = Field(description="Machine-readable reason.")
    message: str | None = Field(None, description="Human-readable explanation.")


class JobOut(BaseModel):
    """A job as the API shows it. State comes from the database, never from the broker."""

    id: str
    kind: JobKind
    state: JobState
    spec: dict[str, Any] = Field(description="The submitted spec, normalised (a `JobSpec`).")
    parent_id: str | None = Field(None, description="The experiment this job is a run of.")
    condition: str | None = Field(None, description="Its experiment condition (children only).")
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
        """The API view of a job row. JSON columns may hold lone surrogates (SQLite stores
        them escaped; rows from before the edge refused them): shown as U+FFFD, since no
        response can encode them."""
        error = None
        if job.error_reason is not None:
            error = JobError(reason=job.error_reason, message=job.error_message)
        return cls(
            id=job.id,
            kind=job.kind,
            state=job.state,
            spec=without_surrogates(job.spec),
            parent_id=job.parent_id,
            condition=job.condition,
            created_at=as_utc(job.created_at),
            started_at=as_utc(job.started_at),
            finished_at=as_utc(job.finished_at),
            attempt=job.attempt,
            cancel_requested=job.cancel_requested,
            progress=Progress.model_validate(job.progress) if job.progress else None,
            result=without_surrogates(job.result),
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
    sha256: str | None = Field(
        None,
        description="Hex sha256 of the bytes as written; downloads are checked against it "
        "(null for files stored before checksums were kept).",
    )
    content_type: str
    created_at: datetime

    @classmethod
    def of(cls, row: Artifact) -> ArtifactOut:
        """The API view of an artifact row."""
        return cls(
            name=row.name,
            size=row.size,
            sha256=row.sha256,
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


class Readiness(Health):
    """Answer of a ready ``/readyz``: its checks, and who consumes each queue."""

    workers: dict[str, int] = Field(
        default_factory=dict,
        description="Queue → live workers consuming it (heartbeat within heartbeat_timeout_s).",
    )


class BuiltinDatasetOut(BaseModel):
    """A dataset of the engine's registry."""

    kind: Literal["builtin"] = "builtin"
    name: str = Field(description="Name to use as `train.dataset`.")
    input_shape: list[int]
    num_classes: int
    available: bool = Field(description="Whether its files are in the data folder.")


class UploadOut(BaseModel):
    """An uploaded `.npz` dataset of the project."""

    kind: Literal["upload"] = "upload"
    id: str
    name: str = Field(description="Name to use in a job: `upload:<id>`.")
    filename: str = Field(description="The uploaded file's name.")
    input_shape: list[int] = Field(description="Shape of one sample.")
    num_classes: int
    train_size: int
    test_size: int
    size: int = Field(description="Bytes of the stored `.npz`.")
    created_at: datetime

    @classmethod
    def of(cls, row: Dataset) -> UploadOut:
        """The API view of an upload row."""
        return cls(
            id=row.id,
            name=f"upload:{row.id}",
            filename=row.name,
            input_shape=list(row.input_shape),
            num_classes=row.num_classes,
            train_size=row.train_size,
            test_size=row.test_size,
            size=row.size,
            created_at=as_utc(row.created_at),
        )


class CheckpointOut(BaseModel):
    """An uploaded safetensors checkpoint of the project."""

    id: str
    name: str = Field(
        description="What a train or evaluate job sets `init_from` to: `checkpoint:<id>`."
    )
    filename: str = Field(description="The uploaded file's name.")
    size: int = Field(description="Bytes of the stored file.")
    sha256: str = Field(description="SHA-256 of the stored file (checked when a worker reads it).")
    model: dict[str, Any] = Field(
        description="The network the checkpoint holds (its metadata's `model_config`): "
        "`input_shape`, `num_classes`, `hidden`, `conv`, `kernel_size`, `rule`, `activation`, "
        "`batch_norm`, seeds. A job starting from it needs a model of this shape.",
    )
    trained_on: str | None = Field(
        description="The built-in dataset it trained on (an evaluate job's default dataset "
        "and in-distribution reference); null when it trained on another or none."
    )
    created_at: datetime

    @classmethod
    def of(cls, row: CheckpointUpload) -> CheckpointOut:
        """The API view of a checkpoint upload row."""
        return cls(
            id=row.id,
            name=row.name,
            filename=row.filename,
            size=row.size,
            sha256=row.sha256,
            model=dict(row.model_config),
            trained_on=row.trained_on,
            created_at=as_utc(row.created_at),
        )


class CheckpointList(BaseModel):
    """The project's uploaded checkpoints, newest first."""

    items: list[CheckpointOut]


class DatasetList(BaseModel):
    """The engine's built-in datasets, then the project's uploads (newest first)."""

    items: list[BuiltinDatasetOut | UploadOut] = Field(
        description="`kind` tells a built-in (`builtin`) from an upload (`upload`)."
    )


class PresetOut(BaseModel):
    """A ready experiment: `body` can be sent to `POST /v1/jobs` as it is."""

    name: str
    description: str
    study: str = Field(
        description="The paper's study the preset runs (`comparison`, `ood`, `adaptation`); "
        "several presets may run one study, e.g. a CI-sized one on `digits`."
    )
    body: dict[str, Any]
    evaluate: dict[str, Any] | None = Field(
        None, description="An `evaluate` body to run afterwards (set its `init_from`)."
    )
    available: bool = Field(
        description="Whether this deployment serves every dataset the preset reads: "
        "`POST /v1/jobs` accepts its body as it is."
    )
    missing_datasets: list[str] = Field(
        description="Built-in datasets the preset reads that this deployment's workers "
        "lack (empty when `available`); submitting it answers 422 naming them."
    )


class PresetList(BaseModel):
    """Every preset, by name."""

    items: list[PresetOut]
