"""``noisefa worker``: a Celery worker that runs jobs from the ``cpu`` and/or ``gpu`` queues.

One worker process per GPU (``-Q gpu -c 1``). With the prefork pool, a worker on a machine
with a GPU runs each job in a fresh child process (``--max-tasks-per-child 1``): the child's
GPU memory is returned when it exits, and a CUDA error that poisons a process ends with its
job. Elsewhere children are reused: a fresh child costs 0.5–5 s per job (measured in the
load test: it bounded CPU throughput), and a task that follows another waits ~1 s for its
new child (billiard's old child sleeps a second before it exits). Either way CUDA is first
touched in a child, never in the parent. The rule is :func:`fresh_child_per_job`. The
worker reads the same ``NOISEFA_*`` settings as the API, so one environment configures both.

``--parent-pid`` is what ``noisefa serve`` passes its worker child: the worker (and its pool)
then dies with that process. A worker run on its own has no such tie.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from .settings import load_settings

if TYPE_CHECKING:
    from noisefa.service.settings import Settings

QUEUES = ("cpu", "gpu")
DEVICES = Path("/dev")
# Device files that mean "this machine has a GPU CUDA can use": the NVIDIA driver's nvidia0,
# nvidia1, ...; WSL2's dxg; Jetson's nvhost-gpu or nvgpu. A false "yes" costs ~1 s per job,
# a false "no" a GPU job in a reused child, so the list leans to yes.
GPU_DEVICE_FILES = ("nvidia[0-9]*", "dxg", "nvhost-gpu", "nvgpu")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``worker`` verb."""
    parser = subparsers.add_parser("worker", help="Run a Celery worker for training jobs.")
    parser.add_argument(
        "--queues",
        default=",".join(QUEUES),
        help="Comma-separated queues to consume (default: %(default)s).",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="Jobs run at once; use 1 per GPU (default: %(default)s).",
    )
    parser.add_argument(
        "--pool",
        choices=("prefork", "solo"),
        default="prefork",
        help="prefork: jobs run in pool children (a fresh one per job on a GPU machine; the "
        "default); solo: jobs run in this process.",
    )
    parser.add_argument(
        "--parent-pid",
        type=int,
        default=None,
        metavar="PID",
        help="Exit, with the running job and the pool, when process PID exits "
        "(set by `noisefa serve` for its worker child).",
    )
    parser.set_defaults(func=run)


def share_cpu(settings: Settings, concurrency: int) -> None:
    """Give each of ``concurrency`` jobs its share of the CPU, in the environment the job
    processes read their settings from (worker/celery_app.py applies them there).

    Each gets ``Settings.threads_per_job`` threads of the cores this process may run on
    (torch's default, one thread per core in every job, oversubscribes and spins), and
    batches are not made ahead on a helper thread (``Settings.prefetch_batches``) unless the
    cores leave room for every job's helper
    (:func:`~noisefa.engine.prefetch.room_for_helper`): a job alone sees only its own
    threads, not its neighbours'.
    """
    from noisefa.engine.prefetch import room_for_helper, usable_cores
    from noisefa.service.settings import env_var

    threads = settings.threads_per_job(concurrency, usable_cores())
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    os.environ[env_var("torch_threads")] = str(threads)
    if not room_for_helper(threads, concurrency):
        os.environ.setdefault(env_var("prefetch_batches"), "false")


def run(args: argparse.Namespace) -> NoReturn:
    """Run the worker until SIGTERM/SIGINT (warm shutdown: the running job finishes first),
    then exit the process (:func:`exit_without_teardown`)."""
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    unknown = sorted(set(queues) - set(QUEUES))
    if not queues or unknown:
        raise SystemExit(f"--queues: expected some of {', '.join(QUEUES)}, got {args.queues!r}")
    if args.concurrency < 1:
        raise SystemExit(f"--concurrency: must be >= 1, got {args.concurrency}")

    if args.parent_pid is not None:
        from noisefa.worker.lifeline import exit_with_parent

        exit_with_parent(args.parent_pid)

    share_cpu(load_settings(), args.concurrency)  # refused settings exit here, before Celery
    from noisefa.worker.celery_app import app

    fresh_child = []
    if fresh_child_per_job():
        fresh_child = ["--max-tasks-per-child", "1"]
        preload_for_fresh_children()
    try:
        # app.start, not worker_main: it returns the worker's exit code (worker_main drops it).
        code = app.start(
            [
                "worker",
                *fresh_child,
                "--queues",
                ",".join(queues),
                "--concurrency",
                str(args.concurrency),
                "--pool",
                args.pool,
                "--loglevel",
                "INFO",
                # Peer sync and worker events add start-up time and broker traffic; job state
                # lives in the database, so nothing here needs them.
                "--without-mingle",
                "--without-gossip",
                "--without-heartbeat",
            ]
        )
    except SystemExit as stopped:  # a command-line error Celery ends with sys.exit
        code = stopped.code
    exit_without_teardown(code)


def fresh_child_per_job(devices: Path = DEVICES) -> bool:
    """Whether each job gets a fresh pool child: on a machine with a GPU, whatever the
    queues (a ``device: auto`` job, on the ``cpu`` queue, trains on CUDA where there is
    one). Told by the device files (:data:`GPU_DEVICE_FILES`): asking torch would load the
    CUDA driver into this process, which its forked children must not inherit."""
    return any(any(devices.glob(pattern)) for pattern in GPU_DEVICE_FILES)


def preload_for_fresh_children() -> None:
    """Import what jobs import lazily, once, in the parent: with a fresh child per job each
    child would import it again, job after job (~1.5 s each), and forked children inherit
    it. Imports only: no tensor is made and CUDA is not touched, so forking stays safe."""
    import scipy.special  # noqa: F401  (an experiment's report: paired statistics)
    import torch._dynamo  # noqa: F401  (imported by torch.optim's first optimizer: meta-loss)
    import torchvision.transforms.v2  # noqa: F401  (shifted evaluation cells)

    import noisefa.engine.plots  # noqa: F401  (matplotlib: reports and reliability diagrams)


def exit_without_teardown(code: object) -> NoReturn:
    """Exit now that Celery has shut down, skipping the interpreter's own teardown.

    By then the pool has joined, the worker's row is deleted and the broker connection is
    closed. What the interpreter would still do is free torch, SciPy and the rest module by
    module, and run multiprocessing's finalizers, which join pool threads that have already
    stopped: ~1.5 s of CPU at every stop (measured on 2 cores), which every ``noisefa
    serve`` and ``demo`` ends with.
    """
    if isinstance(code, str):  # a message, as SystemExit would have printed it
        sys.__stderr__.write(f"{code}\n")
    logging.shutdown()
    # Celery may have replaced sys.stdout/stderr with logging proxies: flush the real ones.
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        stream.flush()
    os._exit(code if isinstance(code, int) else int(code is not None))
