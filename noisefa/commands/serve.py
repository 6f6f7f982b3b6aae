"""``noisefa serve``: the API and, unless ``--no-worker``, one worker as a child process.

With no settings this is the embedded default: SQLite, a local objects folder and a
serverless broker under ``NOISEFA_HOME``. The schema is migrated on every start; in the
embedded mode the first start also creates a project ``local`` and its API key, prints the
key once and stores it in the key file (mode 600), where the CLI and ``noisefa demo`` find
it. SIGINT or SIGTERM stops the API, then the worker (SIGTERM, then SIGKILL after a
deadline: a job cut off that way is resumed from its last checkpoint by the reaper).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

from .processes import spawn_noisefa, stop_process

if TYPE_CHECKING:
    from noisefa.service.settings import Settings

log = logging.getLogger(__name__)

WORKER_STOP_TIMEOUT_S = 15.0
LOCAL_PROJECT = "local"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``serve`` verb."""
    parser = subparsers.add_parser("serve", help="Run the API and one worker.")
    parser.add_argument("--host", default="127.0.0.1", help="Bind address (default: %(default)s).")
    parser.add_argument("--port", type=int, default=8000, help="Port (default: %(default)s).")
    parser.add_argument(
        "--no-worker", action="store_true", help="Run the API only (workers run elsewhere)."
    )
    parser.set_defaults(func=run)


class _Stop(Exception):
    """Raised by our SIGINT/SIGTERM handler to unwind into the cleanup."""


def _raise_stop(signum: int, _frame: object) -> None:
    raise _Stop(signal.Signals(signum).name)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM, then stop the worker child too."""
    # uvicorn handles these signals while it runs, then restores these handlers and
    # re-raises the signal: it lands here, so the worker is always stopped.
    signal.signal(signal.SIGINT, _raise_stop)
    signal.signal(signal.SIGTERM, _raise_stop)
    worker: subprocess.Popen | None = None
    try:
        import uvicorn

        from noisefa.service import migrate
        from noisefa.service.app import create_app
        from noisefa.service.settings import get_settings

        settings = get_settings()
        migrate.upgrade(settings)
        if settings.database_url is None:
            ensure_local_key(settings)
        if not args.no_worker:
            worker = start_worker()
        app = create_app(settings)
        uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port)).run()
    except (_Stop, KeyboardInterrupt):
        pass
    finally:
        if worker is not None:
            log.info("stopping the worker (pid %d)", worker.pid)
            stop_process(worker, timeout_s=WORKER_STOP_TIMEOUT_S)
    return 0


def ensure_local_key(settings: Settings) -> str:
    """The local project's key from the key file; created (and printed once) when missing."""
    from noisefa.service.db import engine_from_settings, make_sessionmaker
    from noisefa.service.repositories.projects import create_project_key, project_for_key

    key_file = settings.key_file
    engine = engine_from_settings(settings)
    try:
        with make_sessionmaker(engine)() as session:
            if key_file.is_file():
                key = key_file.read_text().strip()
                if project_for_key(session, key) is not None:
                    return key
                log.warning("%s holds no valid key for this database; making a new one", key_file)
            key = create_project_key(session, LOCAL_PROJECT)
    finally:
        engine.dispose()
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.unlink(missing_ok=True)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    sys.stdout.write(
        f"Created project {LOCAL_PROJECT!r}. API key (shown once, saved to {key_file}):\n{key}\n"
    )
    sys.stdout.flush()
    return key


def start_worker() -> subprocess.Popen:
    """``noisefa worker`` as a child with the same environment, in its own process group."""
    worker = spawn_noisefa(["worker", "--concurrency", "1"])
    log.info("worker started (pid %d)", worker.pid)
    return worker
