"""``noisefa serve``: the API and, unless ``--no-worker``, one worker as a child process.

With no settings this is the embedded default: SQLite, a local objects folder and a
serverless broker under ``NOISEFA_HOME``. The schema is migrated on every start; in the
embedded mode the first start also creates a project ``local`` and its API key, prints the
key once and stores it in the key file (mode 600), where the CLI and ``noisefa demo`` find
it. SIGINT or SIGTERM stops the API, then the worker (SIGTERM, then SIGKILL after a
deadline: a job cut off that way is resumed from its last checkpoint by the reaper).

The worker child is supervised: when it dies it is started again within seconds
(:mod:`.supervisor`), and it dies with ``serve``, even when ``serve`` is SIGKILLed
(``noisefa worker --parent-pid``). One ``serve`` at a time may use a ``NOISEFA_HOME``: it
holds an exclusive lock on ``serve.lock`` there, which the kernel drops when it exits.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .processes import spawn_noisefa
from .supervisor import WorkerSupervisor

if TYPE_CHECKING:
    from noisefa.service.settings import Settings

log = logging.getLogger(__name__)

WORKER_STOP_TIMEOUT_S = 15.0
LOCAL_PROJECT = "local"
LOCK_FILE = "serve.lock"
EXIT_HOME_IN_USE = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``serve`` verb."""
    parser = subparsers.add_parser("serve", help="Run the API and one worker.")
    parser.add_argument("--host", default="127.0.0.1", help="Bind address (default: %(default)s).")
    parser.add_argument("--port", type=int, default=8000, help="Port (default: %(default)s).")
    parser.add_argument(
        "--no-worker", action="store_true", help="Run the API only (workers run elsewhere)."
    )
    parser.set_defaults(func=run)


class HomeInUseError(Exception):
    """Another ``noisefa serve`` holds the lock of this ``NOISEFA_HOME``."""


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
    supervisor: WorkerSupervisor | None = None
    try:
        import uvicorn

        from noisefa.service import migrate
        from noisefa.service.app import create_app

        from .settings import load_settings

        settings = load_settings()
        try:
            hold_home_lock(settings.home)  # until this process exits
        except HomeInUseError as error:
            sys.stderr.write(f"noisefa serve: {error}\n")
            return EXIT_HOME_IN_USE
        migrate.upgrade(settings)
        if settings.database_url is None:
            announce_dashboard(args.host, args.port, ensure_local_key(settings), settings)
        if not args.no_worker:
            supervisor = WorkerSupervisor(start_worker, stop_timeout_s=WORKER_STOP_TIMEOUT_S)
            supervisor.start()
        app = create_app(settings)
        uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port)).run()
    except (_Stop, KeyboardInterrupt):
        pass
    finally:
        if supervisor is not None:
            supervisor.stop()
    return 0


def hold_home_lock(home: Path) -> int:
    """An exclusive lock on ``home/serve.lock``, held by the returned descriptor (never
    closed: the lock lasts as long as this process).

    ``flock`` locks belong to the open file, so the kernel releases this one when the
    process dies, however it dies: a file left behind by a SIGKILL does not block the next
    start. The descriptor is not inherited by children (PEP 446), so a worker left running
    does not hold it either.
    """
    home.mkdir(parents=True, exist_ok=True)
    path = home / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise HomeInUseError(
            f"{home.resolve()} is in use by another noisefa serve (pid {holder}); "
            "stop it first, or set NOISEFA_HOME to another folder"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


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


def dashboard_link(host: str, port: int, key: str | None = None) -> str:
    """The dashboard's address on ``host:port``; with ``key``, a sign-in link (``#key=``: a
    fragment, which the browser never sends to the server)."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"  # bound to every address: loopback is one of them
    elif ":" in host:
        host = f"[{host}]"
    url = f"http://{host}:{port}/ui"
    return f"{url}#key={key}" if key else url


def announce_dashboard(host: str, port: int, key: str, settings: Settings) -> None:
    """Print where the dashboard is (embedded mode only, as the local key is).

    The sign-in link holds the key, a secret, so it goes only to an interactive terminal, as
    Jupyter's token link does; a captured stdout (a service's log, a test) gets the address
    and where the key is kept instead.
    """
    if sys.stdout.isatty():
        line = f"Dashboard: {dashboard_link(host, port, key)}\n"
    else:
        line = f"Dashboard: {dashboard_link(host, port)} (API key in {settings.key_file})\n"
    sys.stdout.write(line)
    sys.stdout.flush()


def start_worker() -> subprocess.Popen:
    """``noisefa worker`` as a child with the same environment, in its own process group,
    bound to exit when this process dies."""
    return spawn_noisefa(["worker", "--concurrency", "1", "--parent-pid", str(os.getpid())])
