"""All settings in one class, read from ``NOISEFA_*`` environment variables.

With nothing set, everything lives under ``NOISEFA_HOME`` (default ``./.noisefa``): a SQLite
database, a local objects folder, and a broker that needs no server. Production sets the
URLs to Postgres, Redis and S3/MinIO. The API, the worker and every CLI verb read the same
class, so one environment configures all of them.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from noisefa.engine.contract.limits import Limits


class Settings(BaseSettings):
    """Settings of every noisefa process; unset URLs default to the embedded mode."""

    model_config = SettingsConfigDict(env_prefix="NOISEFA_", extra="ignore")

    home: Path = Field(Path(".noisefa"), description="Folder of the embedded mode's state.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite in home.")
    broker_url: str | None = Field(
        None, description="Celery broker URL; default a serverless broker in home."
    )
    storage_url: str | None = Field(
        None, description="`file:///abs/path` or `s3://bucket/prefix`; default home/objects."
    )
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO).")
    data_dir: Path | None = Field(None, description="Folder of torchvision datasets.")
    work_dir: Path | None = Field(None, description="Worker scratch folder; default home/work.")

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
    idempotency_ttl_s: float = Field(86_400.0, gt=0, description="Idempotency-Key lifetime.")

    max_body_bytes: int = Field(1_000_000, ge=1024, description="Largest JSON request body.")
    max_upload_bytes: int = Field(200_000_000, ge=1024, description="Largest dataset upload.")
    max_page_size: int = Field(500, ge=1, description="Largest page of a list endpoint.")
    max_width: int = Field(4096, ge=1, description="Widest hidden layer.")
    max_depth: int = Field(8, ge=1, description="Most hidden layers.")
    max_epochs: int = Field(1000, ge=1, description="Most epochs in one phase.")
    max_samples_per_epoch: int = Field(10_000_000, ge=1, description="Most noise samples/epoch.")
    max_concurrent_jobs: int = Field(100, ge=1, description="Unfinished jobs per project.")
    max_experiment_runs: int = Field(
        64, ge=1, description="Most child runs (conditions × seeds) of one experiment."
    )
    experiment_sweep_after_s: float = Field(
        30.0,
        gt=0,
        description="An experiment whose children all ended this long ago without being "
        "aggregated (its message was lost) is sent to aggregate again.",
    )

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
        return Limits(
            max_width=self.max_width,
            max_depth=self.max_depth,
            max_epochs=self.max_epochs,
            max_samples_per_epoch=self.max_samples_per_epoch,
            max_experiment_runs=self.max_experiment_runs,
        )

    @property
    def key_file(self) -> Path:
        """Where the embedded mode stores the local project's API key for the CLI."""
        return self.home / "api_key"


def get_settings() -> Settings:
    """Settings from the current environment (a fresh read, so tests can change env)."""
    return Settings()
