"""A real noisefa deployment on this machine, to test or measure: the API and Celery workers
as subprocesses (``noisefa serve --no-worker`` / ``noisefa worker``, each in its own process
group so one can be SIGKILLed with its pool children), on a given Postgres database, Redis
broker and local object storage. Used by the fault-injection tests and ``benchmarks/``.

Every wait has a deadline and raises ``TimeoutError`` (or ``RuntimeError`` when a process
dies) instead of hanging.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from noisefa.commands.processes import free_port, spawn_noisefa, stop_process, wait_until_answers
from noisefa.engine.contract.states import TERMINAL_STATES
from noisefa.service.db import engine_from_settings, make_sessionmaker
from noisefa.service.migrate import upgrade
from noisefa.service.models import Job, JobMetric
from noisefa.service.repositories.projects import create_project_key
from noisefa.service.settings import Settings
from noisefa.testing import broker
from noisefa.testing.db import postgres_database
from noisefa.testing.redis_dbs import redis_url
from noisefa.testing.waiting import wait_for

START_DEADLINE_S = 120.0


@dataclass
class Stack:
    """The processes and stores of one deployment, with the verbs that break them."""

    root: Path
    settings: Settings
    env: dict[str, str]
    api_key: str
    sessions: sessionmaker[Session]
    api_url: str = ""
    api: subprocess.Popen | None = None
    workers: list[subprocess.Popen] = field(default_factory=list)
    _logs: int = 0

    # -- processes ------------------------------------------------------------------------

    def _log(self, name: str) -> Path:
        self._logs += 1
        return self.root / "logs" / f"{self._logs:02d}-{name}.log"

    def start_api(self) -> str:
        """``noisefa serve --no-worker`` on a free port; its URL once ``/healthz`` answers."""
        port = free_port()
        log = self._log("api")
        with log.open("ab") as out:
            self.api = spawn_noisefa(
                ["serve", "--no-worker", "--port", str(port)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.api_url = f"http://127.0.0.1:{port}"
        try:
            wait_until_answers(self.api_url, self.api, START_DEADLINE_S)
        except (RuntimeError, TimeoutError) as error:
            raise RuntimeError(f"API did not start: {error}\n{log.read_text()[-3000:]}") from error
        return self.api_url

    def stop_api(self) -> None:
        """Stop the API (SIGTERM, then SIGKILL of its group after a deadline)."""
        if self.api is not None:
            stop_process(self.api, timeout_s=15)
            self.api = None

    def start_worker(self) -> subprocess.Popen:
        """A ``noisefa worker`` on the cpu queue; returned once Celery says it is ready."""
        log = self._log("worker")
        with log.open("ab") as out:
            worker = spawn_noisefa(
                ["worker", "--queues", "cpu", "--concurrency", "1"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.workers.append(worker)

        def ready() -> bool:
            if worker.poll() is not None:
                raise RuntimeError(f"worker exited {worker.returncode}:\n{log.read_text()[-3000:]}")
            return " ready." in log.read_text(errors="replace")

        wait_for(ready, START_DEADLINE_S, "the worker to be ready", poll_s=0.3)
        return worker

    def live_workers(self) -> list[subprocess.Popen]:
        """Workers started here that are still running."""
        return [worker for worker in self.workers if worker.poll() is None]

    def use_workers(self, count: int) -> list[subprocess.Popen]:
        """Exactly ``count`` live workers: surplus ones stopped (warm), missing ones started."""
        live = self.live_workers()
        for worker in live[count:]:
            stop_process(worker, timeout_s=15)
        while len(self.live_workers()) < count:
            self.start_worker()
        return self.live_workers()

    def kill_worker(self, worker: subprocess.Popen) -> None:
        """SIGKILL the worker's whole process group (parent and the pool child running a job)."""
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)

    def stop_all(self) -> None:
        """Stop every process this stack started."""
        self.stop_api()
        for worker in self.workers:
            stop_process(worker, timeout_s=10)

    # -- HTTP and database ----------------------------------------------------------------

    def http(self) -> httpx.Client:
        """An HTTP client of the current API with the project's key."""
        headers = {"Authorization": f"Bearer {self.api_key}"}
        return httpx.Client(base_url=self.api_url, headers=headers, timeout=30)

    def submit(self, spec: dict[str, Any]) -> str:
        """Submit a job over HTTP; its id."""
        with self.http() as http:
            response = http.post("/v1/jobs", json=spec)
        assert response.status_code == 202, response.text
        return response.json()["id"]

    def job(self, job_id: str) -> Job:
        """The job's row as the database has it now."""
        with self.sessions() as session:
            return session.scalars(select(Job).where(Job.id == job_id)).one()

    def wait_for(
        self,
        condition: Callable[[], Any],
        deadline_s: float,
        what: str | Callable[[], str],
        poll_s: float = 0.2,
    ) -> Any:
        """:func:`wait_for`, with the end of every process log in the timeout's message."""
        try:
            return wait_for(condition, deadline_s, what, poll_s)
        except TimeoutError as error:
            raise TimeoutError(f"{error}\n{self.log_tail()}") from None

    def wait_state(self, job_id: str, states: set[str] | frozenset[str], deadline_s: float) -> Job:
        """Wait until the job is in one of ``states``; its row."""
        return self.wait_for(
            lambda: (job := self.job(job_id)).state in states and job,
            deadline_s,
            f"job {job_id} to reach {sorted(states)}",
        )

    def wait_terminal(self, job_ids: list[str], deadline_s: float) -> dict[str, Job]:
        """Wait until every job is terminal; their rows by id."""

        def all_done() -> dict[str, Job] | None:
            with self.sessions() as session:
                rows = session.scalars(select(Job).where(Job.id.in_(job_ids))).all()
            done = {row.id: row for row in rows if row.state in TERMINAL_STATES}
            return done if len(done) == len(job_ids) else None

        return self.wait_for(all_done, deadline_s, f"{len(job_ids)} jobs to end", poll_s=0.5)

    def run_experiment(
        self, body: dict[str, Any], deadline_s: float
    ) -> tuple[Job, list[tuple[datetime, datetime]]]:
        """Submit the experiment ``body`` and wait for it to succeed (else RuntimeError); its
        row and each run's ``(started_at, finished_at)``."""
        job_id = self.submit(body)
        job = self.wait_state(job_id, TERMINAL_STATES, deadline_s)
        if job.state != "succeeded":
            raise RuntimeError(f"experiment ended {job.state}: {job.error_message}")
        with self.sessions() as session:
            runs = session.execute(
                select(Job.started_at, Job.finished_at).where(Job.parent_id == job_id)
            ).all()
        return job, [(begin, end) for begin, end in runs]

    def use_setting(self, name: str, value: str | None, *, api: bool = False) -> None:
        """One fresh worker (and API, with ``api``) whose environment sets ``NOISEFA_<name>``
        to ``value`` (or leaves it unset: None)."""
        self.use_workers(0)
        self.env.pop(f"NOISEFA_{name}", None)
        if value is not None:
            self.env[f"NOISEFA_{name}"] = value
        if api:
            self.stop_api()
            self.start_api()
        self.use_workers(1)

    def duplicated_metric_points(self, job_ids: list[str]) -> int:
        """How many (job, phase, name, epoch) keys have more than one row (must be 0)."""
        with self.sessions() as session:
            counts = session.execute(
                select(func.count())
                .select_from(JobMetric)
                .where(JobMetric.job_id.in_(job_ids))
                .group_by(JobMetric.job_id, JobMetric.phase, JobMetric.name, JobMetric.epoch)
            ).scalars()
            return sum(1 for count in counts if count > 1)

    def log_tail(self, chars: int = 4000) -> str:
        """The end of every process log (for failure messages)."""
        parts = []
        for log in sorted((self.root / "logs").glob("*.log")):
            parts.append(f"--- {log.name}\n{log.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts)


def stack_env(values: dict[str, str]) -> dict[str, str]:
    """This environment without any NOISEFA_* variable, plus ``values`` as NOISEFA_<KEY>.

    One torch thread per job (``NOISEFA_TORCH_THREADS``, which the worker applies) and one
    OpenMP thread per process: several torch processes on a small machine otherwise spin
    against each other, and a fixed thread count keeps float results comparable with a
    reference computed in the test process (BLAS sums in thread-dependent order).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOISEFA_")}
    env["OMP_NUM_THREADS"] = "1"
    env["NOISEFA_TORCH_THREADS"] = "1"
    env.update({f"NOISEFA_{key.upper()}": value for key, value in values.items()})
    return env


def make_stack(root: Path, values: dict[str, str]) -> tuple[Stack, Callable[[], None]]:
    """Migrate the database of ``values``, make a project key, start the API; the stack and
    its cleanup (stop every process, close the database pool). Workers are started by the
    caller with :meth:`Stack.start_worker`."""
    (root / "logs").mkdir(parents=True, exist_ok=True)
    settings = Settings(**values)
    upgrade(settings)
    engine = engine_from_settings(settings)
    sessions = make_sessionmaker(engine)
    with sessions() as session:
        api_key = create_project_key(session, "stack")
    stack = Stack(root, settings, stack_env(values), api_key, sessions)

    def cleanup() -> None:
        stack.stop_all()
        engine.dispose()

    try:
        stack.start_api()
    except BaseException:
        cleanup()
        raise
    return stack, cleanup


@contextmanager
def local_stack(root: Path, *, name: str, broker_url: str, **overrides: str) -> Iterator[Stack]:
    """A stack on this machine's servers, torn down after: a fresh Postgres database (prefix
    ``name``), the Redis database ``broker_url`` (flushed before and after: each suite uses its
    own), storage, work and an empty data folder under ``root``; the API runs, workers are
    started by the caller. ``overrides`` are further settings (NOISEFA_<KEY> values)."""
    (root / "data").mkdir(parents=True, exist_ok=True)  # empty: torchvision sets unavailable
    broker.flush(broker_url)
    try:
        with postgres_database(name) as database_url:
            values = {
                "home": str(root / "home"),
                "database_url": database_url,
                "broker_url": broker_url,
                "storage_url": (root / "objects").as_uri(),
                "work_dir": str(root / "work"),
                "data_dir": str(root / "data"),
                **overrides,
            }
            stack, cleanup = make_stack(root, values)
            try:
                yield stack
            finally:
                cleanup()
    finally:
        broker.flush(broker_url)


@contextmanager
def benchmark_stack(name: str, **overrides: str) -> Iterator[Stack]:
    """:func:`local_stack` for a benchmark script: in a temporary folder, removed after, on
    the benchmarks' Redis database."""
    broker_url = redis_url("benchmarks")
    with (
        tempfile.TemporaryDirectory(prefix=f"{name}-") as root,
        local_stack(Path(root), name=name, broker_url=broker_url, **overrides) as stack,
    ):
        yield stack
