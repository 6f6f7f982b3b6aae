"""All settings in one class, read from ``NOISEFA_*`` environment variables.

With nothing set, everything lives under ``NOISEFA_HOME`` (default ``./.noisefa``): a SQLite
database, a local objects folder, and a broker that needs no server. Production sets the
URLs to Postgres, Redis and S3/MinIO. The API, the worker and every CLI verb (``noisefa run``
included) read the same class, so one environment configures all of them; the engine reads
no environment and is handed what it needs (limits, data folder, download).

Settings that make no sense together (a heartbeat timeout shorter than two heartbeats) are
refused when the class is built, so a process fails at start rather than reaping live jobs.
"""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from noisefa.engine.contract.limits import Limits

from .upload_limits import UploadLimits
from .worker_settings import WorkerSettings

ENV_PREFIX = "NOISEFA_"
DEFAULT_DATA_DIR = Path.home() / ".cache" / "noisefa" / "data"
# A live job's heartbeat may come late (a slow database, a long step holding the GIL): the
# timeout must outlast this many intervals, so one late beat never reaps a running job.
HEARTBEATS_PER_TIMEOUT = 2


def env_var(field: str) -> str:
    """The environment variable that sets ``field`` (``heartbeat_timeout_s`` → ``NOISEFA_…``)."""
    return f"{ENV_PREFIX}{field.upper()}"


def _list_from_text(value: object, separator: str) -> object:
    """A list setting given as text (an environment variable): a JSON list, or items joined
    by ``separator``; anything else is left for pydantic to check."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        return json.loads(text)
    return [item.strip() for item in text.split(separator) if item.strip()]


class Settings(BaseSettings, Limits, UploadLimits, WorkerSettings):
    """Settings of every noisefa process; unset URLs default to the embedded mode.

    The job limits (``max_width``, ``max_depth``, ...) are inherited from :class:`Limits`,
    so each is written once and still read from ``NOISEFA_MAX_WIDTH`` and so on; the request
    body, upload and storage limits likewise from :class:`~.upload_limits.UploadLimits`, and
    how a worker trains (threads, CUDA graphs, batches made ahead, packs) from
    :class:`~.worker_settings.WorkerSettings`.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    home: Path = Field(Path(".noisefa"), description="Folder of the embedded mode's state.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite in home.")
    db_pool_size: int = Field(
        10, ge=1, le=1000, description="Postgres connections each process keeps open."
    )
    db_max_overflow: int = Field(
        20, ge=0, le=1000, description="Extra Postgres connections a burst may open per process."
    )
    db_pool_timeout_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="How long a request waits for a free database connection before it is "
        "answered 503 (never a hang).",
    )
    broker_url: str | None = Field(
        None, description="Celery broker URL; default a serverless broker in home."
    )
    storage_url: str | None = Field(
        None, description="`file:///abs/path` or `s3://bucket/prefix`; default home/objects."
    )
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO).")
    data_dir: Path = Field(
        DEFAULT_DATA_DIR,
        description="Folder of torchvision datasets; default ~/.cache/noisefa/data.",
    )
    download: bool = Field(
        False,
        description="Download a missing torchvision set (where the network allows); "
        "otherwise a missing set fails the job, naming the files it needs.",
    )
    work_dir: Path | None = Field(None, description="Worker scratch folder; default home/work.")
    server_data_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Server folders whose .npz files jobs may name as `npz:<path>` (a JSON "
        "list or absolute paths joined by the OS path separator); empty by default: over "
        "the API a job reads only built-ins and its project's uploads.",
    )

    heartbeat_interval_s: float = Field(5.0, gt=0, description="How often a job heartbeats.")
    heartbeat_timeout_s: float = Field(60.0, gt=0, description="Heartbeat age that is stale.")
    reaper_interval_s: float = Field(10.0, gt=0, description="How often stale jobs are swept.")
    reaper_enabled: bool = Field(
        True, description="Run the reaper loop in the API process (one sweep at a time)."
    )
    requeue_after_s: float = Field(
        300.0,
        gt=0,
        description="A job queued this long without starting is sent to the broker again "
        "(its message may have been lost, e.g. by a Redis restart); duplicates are harmless.",
    )
    max_attempts: int = Field(3, ge=1, description="Attempts before a job fails worker_lost.")
    cancel_poll_s: float = Field(1.0, gt=0, description="How often a job checks for cancel.")
    checkpoint_keep: int = Field(
        2,
        ge=1,
        description="Stored checkpoints a job keeps: the newest this many plus each phase's "
        "final one; older ones are deleted as new ones land.",
    )
    idempotency_ttl_s: float = Field(86_400.0, gt=0, description="Idempotency-Key lifetime.")
    dead_worker_retention_s: float = Field(
        86_400.0,
        gt=0,
        description="A worker silent this long is deleted from the registry by the reaper "
        "(it stops counting as live after heartbeat_timeout_s).",
    )
    progress_event_retention_s: float = Field(
        300.0,
        gt=0,
        description="A job's progress events older than this, but its latest, are deleted by "
        "the reaper (a running job writes one every half second; state and metrics events "
        "are kept).",
    )
    metrics_token: SecretStr | None = Field(
        None,
        min_length=16,
        description="Bearer token a Prometheus scraper sends to GET /metrics; unset, "
        "/metrics answers 404 (it shows every project's job counts).",
    )

    max_page_size: int = Field(500, ge=1, description="Largest page of a list endpoint.")
    max_concurrent_jobs: int = Field(100, ge=1, description="Unfinished jobs per project.")
    # Resource estimates (noisefa.engine.contract.estimates, formulas in docs/design.md). The
    # defaults accept every preset and MNIST MLPs of a few 1000-wide layers for 100s of epochs
    # (~0.3 GiB, ~3e13), and refuse what fits no common GPU or would hold a worker for days.
    max_job_memory_bytes: int = Field(
        8 * 2**30,
        ge=1,
        description="Largest estimated device memory of one job (bytes; default 8 GiB, which "
        "leaves room on a 16 GB GPU or a small worker host): parameters, feedback matrices, "
        "gradients, optimizer state, one batch's activations and the datasets on the device. "
        "A job over it is refused at submit (422).",
    )
    max_job_compute: int = Field(
        10**15,
        ge=1,
        description="Largest estimated compute of one job, in multiply-adds (default 1e15: "
        "minutes on a GPU, about a day on a few CPU cores): 3 × Σ in·out over layers × "
        "samples × epochs of every phase, plus per-epoch metrics and meta-loss. A job over it "
        "is refused at submit (422).",
    )
    max_job_seconds: float = Field(
        86_400.0,
        gt=0,
        description="Wall-clock seconds a pretrain or train job may run, counted from its "
        "first attempt's start (time between attempts included); past it the job stops at "
        "its next step, keeps its checkpoint and fails `time_limit`. A spec's `time_limit_s` "
        "can only lower it.",
    )
    max_streams_per_project: int = Field(
        100, ge=1, description="Open event streams (SSE) of one project on one API process."
    )
    max_streams_per_process: int = Field(
        1000,
        ge=1,
        le=10_000,
        description="Open event streams (SSE) on one API process, all projects together; "
        "its event hub reads the new events of all their jobs in one query.",
    )
    experiment_sweep_after_s: float = Field(
        30.0,
        gt=0,
        description="An experiment whose children all ended this long ago without being "
        "aggregated (its message was lost) is sent to aggregate again.",
    )
    mlflow_tracking_uri: str | None = Field(
        None,
        description="MLflow tracking server workers mirror every job into (a run per job, "
        "experiments as parent runs; needs `pip install noisefa[mlflow]`); unset: no MLflow. "
        "MLflow being down never fails or slows a job (calls are retried a few times, then "
        "dropped and logged).",
    )
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Webhook destinations allowed even when they resolve to loopback, "
        "link-local or private addresses (host names or IP addresses, a JSON list or "
        "comma-separated); every other destination must resolve to public addresses only.",
    )
    webhook_max_attempts: int = Field(
        5, ge=1, le=50, description="Tries of one webhook delivery before it is given up."
    )
    webhook_retry_base_s: float = Field(
        2.0,
        gt=0,
        le=3600,
        description="Pause before a webhook delivery's second try; doubled after each try.",
    )
    webhook_timeout_s: float = Field(
        5.0, gt=0, le=60, description="How long one webhook request may take."
    )

    @field_validator("webhook_allowed_hosts", mode="before")
    @classmethod
    def _hosts_from_text(cls, hosts: object) -> object:
        """An environment variable holds the hosts as a JSON list or ``a,b``."""
        return _list_from_text(hosts, ",")

    @field_validator("server_data_roots", mode="before")
    @classmethod
    def _roots_from_text(cls, roots: object) -> object:
        """An environment variable holds the folders as a JSON list or ``/a:/b``."""
        return _list_from_text(roots, os.pathsep)

    @field_validator("server_data_roots")
    @classmethod
    def _roots_are_absolute(cls, roots: list[Path]) -> list[Path]:
        # A relative folder would mean one thing to the API and another to each worker.
        relative = [str(root) for root in roots if not root.is_absolute()]
        if relative:
            raise PydanticCustomError(
                "server_data_root_relative", f"folders must be absolute paths, got {relative}"
            )
        return roots

    # Checks of one setting against another read the other from ``info.data``: it is there
    # when it is declared above this one and was valid itself (else its own error shows).

    @field_validator("heartbeat_timeout_s")
    @classmethod
    def _timeout_outlasts_heartbeats(cls, timeout_s: float, info: ValidationInfo) -> float:
        interval_s = info.data.get("heartbeat_interval_s")
        if interval_s is not None and timeout_s < HEARTBEATS_PER_TIMEOUT * interval_s:
            raise PydanticCustomError(
                "heartbeat_timeout_too_short",
                f"must be at least {HEARTBEATS_PER_TIMEOUT} × "
                f"{env_var('heartbeat_interval_s')} ({interval_s:g} s), so one late heartbeat "
                "does not mark a live job stale",
            )
        return timeout_s

    @field_validator("reaper_interval_s")
    @classmethod
    def _reaper_sweeps_within_timeout(cls, interval_s: float, info: ValidationInfo) -> float:
        timeout_s = info.data.get("heartbeat_timeout_s")
        if timeout_s is not None and interval_s >= timeout_s:
            raise PydanticCustomError(
                "reaper_interval_too_long",
                f"must be shorter than {env_var('heartbeat_timeout_s')} ({timeout_s:g} s), "
                "so a dead worker's job is resumed within two timeouts",
            )
        return interval_s

    @cached_property
    def resolved_database_url(self) -> str:
        """The database URL in use (SQLite under home when unset)."""
        return self.database_url or f"sqlite:///{(self.home / 'noisefa.db').resolve()}"

    @cached_property
    def resolved_storage_url(self) -> str:
        """The object storage URL in use (a folder under home when unset)."""
        return self.storage_url or (self.home / "objects").resolve().as_uri()

    @cached_property
    def resolved_work_dir(self) -> Path:
        """Scratch folder where workers run the engine before uploading artifacts."""
        return (self.work_dir or self.home / "work").resolve()

    @property
    def embedded(self) -> bool:
        """True when no broker URL is set: the serverless embedded broker is used."""
        return self.broker_url is None

    @property
    def limits(self) -> Limits:
        """The engine's job limits, from these settings."""
        return Limits(**{name: getattr(self, name) for name in Limits.model_fields})

    @property
    def key_file(self) -> Path:
        """Where the embedded mode stores the local project's API key for the CLI."""
        return self.home / "api_key"


def get_settings() -> Settings:
    """Settings from the current environment (a fresh read, so tests can change env)."""
    return Settings()


def settings_error_lines(error: ValidationError) -> list[str]:
    """One line per refused setting, named by its environment variable and with its value
    (every check is a field's own, so each error has that field as its location)."""
    return [
        f"{env_var(str(item['loc'][0]))}: {item['msg']} (got {item['input']!r})"
        for item in error.errors(include_url=False)
    ]
