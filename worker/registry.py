"""This worker process's row in the worker registry (``service/repositories/workers.py``).

A job heartbeats only while it runs; an idle worker was invisible, so nobody could tell a
queue without consumers from a quiet one. The Celery app registers the worker once it is
ready (the queues it consumes, the built-in datasets in its data folder), heartbeats the
row from a daemon thread every ``heartbeat_interval_s``, and deletes it on a clean
shutdown; a killed worker's row goes stale and the reaper prunes it later.

Jobs run in forked pool children, which inherit this process's database engine: after a
fork the child drops the inherited connections without closing them (they belong to the
parent's heartbeat thread).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterable

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from noisefa.engine.contract.catalogue import builtins_on_disk
from noisefa.service.db import engine_from_settings, make_sessionmaker
from noisefa.service.models import new_id
from noisefa.service.repositories import workers as repo
from noisefa.service.settings import Settings

log = logging.getLogger(__name__)


class WorkerRegistration:
    """Registers this process as a worker on :meth:`start` and keeps its row alive."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.worker_id = new_id()
        self.queues: list[str] = []
        self._engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, queues: Iterable[str]) -> None:
        """Register now and heartbeat from then on (again: only the queues are updated)."""
        self.queues = sorted(queues)
        if self._thread is not None:  # Celery is ready again after a broker reconnect
            return
        self._engine = engine_from_settings(self.settings)
        self._sessions = make_sessionmaker(self._engine)
        os.register_at_fork(after_in_child=self._forget_connections)
        try:
            self._register()
        except Exception:
            # The heartbeat loop registers once the database answers.
            log.warning("worker %s: could not register; will retry", self.worker_id, exc_info=True)
        self._thread = threading.Thread(target=self._loop, name="noisefa-worker-beat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop heartbeating and delete this worker's row (a clean shutdown)."""
        if self._thread is None or self._sessions is None or self._engine is None:
            return
        self._stop.set()
        self._thread.join(timeout=10)
        try:
            with self._sessions() as session:
                repo.deregister_worker(session, self.worker_id)
        except Exception:
            log.warning("worker %s: could not deregister", self.worker_id, exc_info=True)
        self._engine.dispose()
        log.info("worker %s deregistered", self.worker_id)

    def _register(self) -> None:
        assert self._sessions is not None, "start() builds the sessions first"
        datasets = sorted(builtins_on_disk(self.settings.data_dir))
        with self._sessions() as session:
            repo.register_worker(
                session,
                self.worker_id,
                hostname=socket.gethostname(),
                pid=os.getpid(),
                queues=self.queues,
                datasets=datasets,
            )
        log.info(
            "worker %s registered: queues %s, datasets %s",
            self.worker_id,
            ",".join(self.queues),
            ",".join(datasets),
        )

    def _loop(self) -> None:
        assert self._sessions is not None, "start() builds the sessions first"
        while not self._stop.wait(self.settings.heartbeat_interval_s):
            try:
                with self._sessions() as session:
                    beat = repo.heartbeat_worker(session, self.worker_id)
                if not beat:  # pruned while we were cut off, or never registered
                    self._register()
            except Exception:
                log.warning("worker %s: heartbeat failed; retrying", self.worker_id, exc_info=True)

    def _forget_connections(self) -> None:
        if self._engine is not None:
            self._engine.dispose(close=False)
