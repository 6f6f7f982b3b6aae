"""Mirror jobs into MLflow (``NOISEFA_MLFLOW_TRACKING_URI``), never at a job's expense.

One MLflow run per job, in the MLflow experiment ``noisefa/<project id>``: params from the
flattened spec, per-epoch metrics with ``step`` (the global step of
:mod:`.tensorboard_log`, pretrain before train), tags ``noisefa.project``,
``noisefa.job_id``, ``noisefa.condition`` and ``noisefa.seed``, and the job's outputs
(result, metrics, TensorBoard file; an experiment's report and plots) as artifacts. An
experiment is a parent run; its children are nested runs (tag ``mlflow.parentRunId``), the
parent found by its job id tag or created by whichever process needs it first.

The job's threads (training, epoch writer) only put calls on a bounded queue; one daemon
thread per process makes them, each with MLflow's own short HTTP timeout and few retries,
plus a few tries of ours.
A call that still fails, or that finds the queue full, is logged and dropped: MLflow down
never fails or slows a job. ``mlflow`` is an optional extra (``pip install noisefa[mlflow]``)
imported only here, and this module only when the setting is set.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

QUEUE_SIZE = 10_000
TRIES = 3  # our tries of one call, each with MLflow's own HTTP retries below
RETRY_PAUSE_S = 0.5
HTTP_ENV = {  # read by MLflow's REST client at each request
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
}
MAX_PARAM_CHARS = 500  # MLflow's limit on a param value
BATCH = 100  # MLflow's limit on params per log_batch
FINAL_STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}
JOB_ID_TAG = "noisefa.job_id"

Call = Callable[[MlflowClient], None]


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"model": {"hidden": [100]}}`` → ``{"model.hidden": "[100]"}``, values cut to fit."""
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:MAX_PARAM_CHARS]
    return flat


class MlflowMirror:
    """The process's queue of MLflow calls and the thread that makes them."""

    def __init__(self, tracking_uri: str) -> None:
        for name, value in HTTP_ENV.items():
            os.environ.setdefault(name, value)
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self._calls: queue.Queue[tuple[str, Call]] = queue.Queue(QUEUE_SIZE)
        self._run_ids: dict[str, str] = {}  # job id → run id; touched by the thread only
        self._thread = threading.Thread(target=self._loop, name="mlflow-mirror", daemon=True)
        self._thread.start()

    # -- what jobs call (any thread; never blocks) --------------------------------------

    def start_run(
        self,
        *,
        job_id: str,
        project_id: str,
        spec: Mapping[str, Any],
        parent_id: str | None = None,
        condition: str | None = None,
    ) -> None:
        """Create (or find) the job's run with its params and tags."""

        def call(client: MlflowClient) -> None:
            parent_run = self._run_id(client, parent_id, project_id, {}) if parent_id else None
            tags = {"noisefa.kind": str(spec.get("kind", ""))}
            if condition is not None:
                tags["noisefa.condition"] = condition
            model = spec.get("model")
            seed = model.get("seed") if isinstance(model, Mapping) else None
            if seed is not None:
                tags["noisefa.seed"] = str(seed)
            if parent_run is not None:
                tags["mlflow.parentRunId"] = parent_run
            run_id = self._run_id(client, job_id, project_id, tags)
            params = [Param(key, value) for key, value in flatten(spec).items()]
            for i in range(0, len(params), BATCH):
                client.log_batch(run_id, params=params[i : i + BATCH])

        self._put(f"start run of job {job_id}", call)

    def log_epoch(self, job_id: str, step: int, metrics: Mapping[str, float]) -> None:
        """One epoch's metrics at global step ``step``."""
        stamp = int(time.time() * 1000)
        points = [Metric(name, float(value), stamp, step) for name, value in metrics.items()]

        def call(client: MlflowClient) -> None:
            run_id = self._run_ids.get(job_id)
            if run_id is None:  # its start was dropped: nothing to attach the points to
                return
            for i in range(0, len(points), BATCH):
                client.log_batch(run_id, metrics=points[i : i + BATCH])

        self._put(f"metrics of job {job_id}", call)

    def end_run(
        self, job_id: str, project_id: str, state: str, files: Iterable[tuple[Path, str]]
    ) -> None:
        """Upload ``files`` (path, artifact name) and mark the run ended as ``state``.

        The files are copied first: the worker deletes its scratch folder right away. The
        run is found by its tag when another process started it (an experiment's fan-out).
        """
        spool = Path(tempfile.mkdtemp(prefix="noisefa-mlflow-"))
        copies = []
        for path, name in files:
            if path.is_file():
                copy = spool / name
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, copy)
                copies.append((copy, name))

        def call(client: MlflowClient) -> None:
            try:
                run_id = self._run_id(client, job_id, project_id, {})
                for copy, name in copies:
                    folder = name.rpartition("/")[0] or None
                    client.log_artifact(run_id, str(copy), artifact_path=folder)
                client.set_terminated(run_id, status=FINAL_STATUS.get(state, "FAILED"))
            finally:
                shutil.rmtree(spool, ignore_errors=True)

        self._put(f"end of job {job_id}", call, cleanup=lambda: shutil.rmtree(spool, True))

    def drain(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the queued calls; True when all were made."""
        deadline = time.monotonic() + timeout_s
        while self._calls.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self._calls.unfinished_tasks

    # -- the thread ---------------------------------------------------------------------

    def _put(self, what: str, call: Call, cleanup: Callable[[], None] | None = None) -> None:
        try:
            self._calls.put_nowait((what, call))
        except queue.Full:
            log.warning("mlflow mirror: queue full; dropped %s", what)
            if cleanup is not None:
                cleanup()

    def _loop(self) -> None:
        while True:
            what, call = self._calls.get()
            try:
                self._make(what, call)
            finally:
                self._calls.task_done()

    def _make(self, what: str, call: Call) -> None:
        for attempt in range(1, TRIES + 1):
            try:
                call(self.client)
                return
            except Exception as exc:
                if attempt == TRIES:
                    log.warning("mlflow mirror: dropped %s after %d tries: %s", what, TRIES, exc)
                    return
                time.sleep(RETRY_PAUSE_S * attempt)

    def _run_id(
        self, client: MlflowClient, job_id: str, project_id: str, tags: Mapping[str, str]
    ) -> str:
        """The run of ``job_id``: cached, found by its tag, or created with ``tags``."""
        run_id = self._run_ids.get(job_id)
        if run_id is None:
            experiment_id = _experiment_id(client, f"noisefa/{project_id}")
            found = client.search_runs(
                [experiment_id], filter_string=f"tags.`{JOB_ID_TAG}` = '{job_id}'", max_results=1
            )
            if found:
                run_id = found[0].info.run_id
            else:
                all_tags = {JOB_ID_TAG: job_id, "noisefa.project": project_id}
                run = client.create_run(experiment_id, tags=all_tags, run_name=job_id)
                run_id = run.info.run_id
            self._run_ids[job_id] = run_id
        if tags:
            client.log_batch(run_id, tags=[RunTag(key, value) for key, value in tags.items()])
        return run_id


def _experiment_id(client: MlflowClient, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # another process created it first
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


_mirrors: dict[tuple[int, str], MlflowMirror] = {}
_mirrors_lock = threading.Lock()


def mirror_for(tracking_uri: str) -> MlflowMirror:
    """The process's mirror to ``tracking_uri`` (one thread per process, made on first use;
    keyed by pid too, since a forked job process inherits the dict but not the thread)."""
    key = (os.getpid(), tracking_uri)
    with _mirrors_lock:
        if key not in _mirrors:
            _mirrors[key] = MlflowMirror(tracking_uri)
        return _mirrors[key]
