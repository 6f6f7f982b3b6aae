"""The worker's Celery app: the shared broker config plus worker-only policy.

The API builds its own client from :func:`noisefa.service.broker.make_celery` and sends
``noisefa.run_job`` by name; this module adds what only a worker needs: the task module and
routing by queue, and the embedded mode's transport. ``noisefa worker`` decides whether each
job gets a fresh child process (:func:`noisefa.commands.worker.fresh_child_per_job`); CUDA
is first touched inside a child, never in the parent.

Once Celery is ready the worker registers itself in the database and heartbeats there
(:mod:`.registry`), so ``/readyz`` can tell which queues have a live consumer.

Start it with ``noisefa worker`` or ``celery -A noisefa.worker.celery_app worker -Q cpu``.
"""

from __future__ import annotations

from typing import Any

from celery.signals import worker_init, worker_process_init, worker_ready, worker_shutdown

from noisefa.service.broker import RUN_JOB_TASK, RUN_PACK_TASK, make_celery
from noisefa.service.embedded_transport import worker_transport
from noisefa.service.settings import get_settings

from .registry import WorkerRegistration

settings = get_settings()

app = make_celery(settings, name="noisefa.worker")
app.conf.update(
    include=["noisefa.worker.tasks"],
    # The API picks the queue per job (gpu when the spec asks for CUDA); this is the
    # default for senders that name none.
    task_routes={RUN_JOB_TASK: {"queue": "cpu"}, RUN_PACK_TASK: {"queue": "cpu"}},
    # Progress, metrics and state go to the database; Celery events would only add traffic.
    worker_send_task_events=False,
    # kombu's filesystem transport delivers broadcasts as files nobody deletes when a
    # worker is gone; the embedded mode has a single worker and needs no remote control.
    worker_enable_remote_control=not settings.embedded,
    # Drains in short waits in the embedded mode, so a stop is seen at once.
    **worker_transport(settings),
)


@worker_init.connect  # the solo pool trains in the worker process itself
@worker_process_init.connect
def apply_engine_settings(**_: object) -> None:
    """Train with this job process's share of the CPU (``Settings.torch_threads``, which
    ``noisefa worker`` sets from the cores and the concurrency when it is unset) and run its
    steps as ``Settings.cuda_graphs`` and ``Settings.prefetch_batches`` say (the worker turns
    the latter off where the cores leave no room for a helper).

    Celery imports the task modules in the parent before the pool forks, so children
    inherit torch and the engine; what else a parent preloads is
    :func:`noisefa.commands.worker.preload_for_fresh_children`.
    """
    import torch

    from noisefa.engine.process_choices import apply_settings

    settings = get_settings()
    if settings.torch_threads is not None:
        torch.set_num_threads(settings.torch_threads)
    apply_settings(settings)


registration = WorkerRegistration(settings)


@worker_ready.connect
def register_worker(sender: Any, **_: object) -> None:
    """Register this worker (the queues its consumer reads) and start its heartbeat."""
    registration.start(sender.app.amqp.queues.consume_from)


@worker_shutdown.connect
def deregister_worker(**_: object) -> None:
    """Delete this worker's row on a clean (warm or cold) shutdown."""
    registration.stop()
