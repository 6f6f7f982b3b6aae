"""The Celery client the API enqueues with, and the config the worker shares.

The service never imports the worker: it sends ``noisefa.run_job`` by name. The embedded
mode uses kombu's filesystem transport under ``NOISEFA_HOME`` (a broker with no server);
production uses Redis. Either way the broker only carries "run job X" (or "run pack
[X, Y, ...]", several experiment runs trained as one stack: :mod:`.packs`) and no result
backend is used: job state lives in the database.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from noisefa.engine.contract.bodies import JobBody
from noisefa.engine.contract.experiment_spec import ExperimentSpec

from .settings import Settings

RUN_JOB_TASK = "noisefa.run_job"
# "Run these jobs together": one worker task trains them as one stack (see .packs).
RUN_PACK_TASK = "noisefa.run_pack"
# "Aggregate experiment X": sent when an experiment's last child ends (and by the reaper if
# that message was lost); the worker checks in the database that it is due.
FINISH_EXPERIMENT_TASK = "noisefa.finish_experiment"
QUEUES = ("cpu", "gpu")


def queue_for(spec: JobBody) -> str:
    """The broker queue of a job: ``gpu`` only when the spec asks for CUDA (an experiment
    fans out and aggregates where its children run)."""
    device = spec.base.get("device") if isinstance(spec, ExperimentSpec) else spec.device
    return "gpu" if device == "cuda" else "cpu"


def broker_url(settings: Settings) -> str:
    """The broker URL in use: the configured one, or the embedded filesystem broker."""
    return settings.broker_url or "filesystem://"


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings shared by the API's client and the worker (late ack, prefetch 1)."""
    config: dict[str, Any] = {
        "broker_url": broker_url(settings),
        "task_ignore_result": True,
        "result_backend": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": "cpu",
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
    }
    if settings.embedded:
        folder = (settings.home / "broker").resolve()
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        config["broker_transport_options"] = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            # kombu's default is ./control, relative to whatever the cwd is.
            "control_folder": str(folder / "control"),
            "store_processed": False,
            # The folder is polled (default every 1 s); a job should start promptly.
            "polling_interval": 0.2,
        }
    else:
        # Redis: a task unacked for this long is redelivered; longer than any job, since
        # the reaper (not the broker) is what re-queues the jobs of dead workers.
        config["broker_transport_options"] = {"visibility_timeout": 12 * 3600}
    return config


def make_celery(settings: Settings, name: str = "noisefa") -> Celery:
    """A Celery app configured from settings (used to send tasks and by the worker)."""
    app = Celery(name)
    app.conf.update(celery_config(settings))
    return app


def enqueue_job(app: Celery, job_id: str, queue: str) -> None:
    """Put "run job X" on ``queue``; the worker reads everything else from the database."""
    assert queue in QUEUES, f"queue must be one of {QUEUES}, got {queue!r}"
    app.send_task(RUN_JOB_TASK, args=[job_id], queue=queue)


def enqueue_pack(app: Celery, job_ids: list[str], queue: str) -> None:
    """Put "run pack [X, Y, ...]" on ``queue``: one worker runs every job of it that is
    still queued, as one stack."""
    assert queue in QUEUES, f"queue must be one of {QUEUES}, got {queue!r}"
    app.send_task(RUN_PACK_TASK, args=[job_ids], queue=queue)


def enqueue_finish_experiment(app: Celery, job_id: str, queue: str) -> None:
    """Put "aggregate experiment X" on ``queue`` (duplicates are harmless)."""
    assert queue in QUEUES, f"queue must be one of {QUEUES}, got {queue!r}"
    app.send_task(FINISH_EXPERIMENT_TASK, args=[job_id], queue=queue)
