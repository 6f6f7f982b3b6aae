"""Workers mirror jobs into a real ``mlflow server`` on loopback: a run per job with its
params, per-epoch metrics with steps, tags and artifacts; an experiment as a parent run with
nested children; and with the server gone, jobs still succeed."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from mlflow.tracking import MlflowClient

from noisefa.client import Client
from noisefa.testing.redis_dbs import redis_url
from noisefa.testing.specs import SMALL_METRICS, cpu_pretrain_spec, experiment_spec
from noisefa.testing.stack import Stack, local_stack
from noisefa.testing.waiting import wait_for

JOB_TIMEOUT_S = 180.0
SERVER_START_S = 120.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[subprocess.Popen]:
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    command = [
        *(sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1"),
        *("--port", str(port), "--workers", "1"),
        *("--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}"),
        *("--artifacts-destination", (root / "artifacts").as_uri()),
    ]
    log = (root / "server.log").open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    server.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    try:
        wait_for(
            lambda: server.poll() is not None or _answers(server.url),  # type: ignore[attr-defined]
            SERVER_START_S,
            "mlflow server to answer",
        )
        assert server.poll() is None, (root / "server.log").read_text()[-2000:]
        yield server
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, mlflow_server) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("stack")
    settings = {"heartbeat_interval_s": "1", "mlflow_tracking_uri": mlflow_server.url}
    with local_stack(root, name="noisefa_mlflow", broker_url=redis_url("worker"), **settings) as s:
        s.start_worker()
        yield s


@pytest.fixture(scope="module")
def tracking(mlflow_server) -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow_server.url)


def _runs(tracking: MlflowClient, project_id: str, where: str) -> list[Any]:
    experiment = tracking.get_experiment_by_name(f"noisefa/{project_id}")
    if experiment is None:
        return []
    return tracking.search_runs([experiment.experiment_id], filter_string=where)


def _ended_run(tracking: MlflowClient, project_id: str, job_id: str) -> Any:
    """The job's run once the worker marked it ended (its calls are queued, then made)."""

    def ended() -> Any:
        runs = _runs(tracking, project_id, f"tags.`noisefa.job_id` = '{job_id}'")
        return runs[0] if runs and runs[0].info.status != "RUNNING" else None

    return wait_for(ended, JOB_TIMEOUT_S, f"the MLflow run of job {job_id} to end")


@pytest.fixture(scope="module")
def project_id(client: Client, tracking: MlflowClient) -> str:
    job = client.wait(client.submit(cpu_pretrain_spec())["id"], timeout=JOB_TIMEOUT_S)
    experiments = wait_for(
        lambda: [e for e in tracking.search_experiments() if e.name.startswith("noisefa/")],
        JOB_TIMEOUT_S,
        "an MLflow experiment for the project",
    )
    assert job["state"] == "succeeded"
    return experiments[0].name.removeprefix("noisefa/")


def test_job_run_has_params_metrics_by_step_tags_and_artifacts(
    client: Client, tracking: MlflowClient, project_id: str
):
    spec = cpu_pretrain_spec(epochs=2, samples=256, hidden=8, seed=3, metrics=SMALL_METRICS)
    job = client.wait(client.submit(spec)["id"], timeout=JOB_TIMEOUT_S)
    assert job["state"] == "succeeded", job.get("error")
    run = _ended_run(tracking, project_id, job["id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["model.hidden"] == "[8]"
    assert run.data.params["pretrain.samples_per_epoch"] == "256"
    assert run.data.tags["noisefa.project"] == project_id
    assert run.data.tags["noisefa.seed"] == "3"
    history = tracking.get_metric_history(run.info.run_id, "train_loss")
    api_points = client.metrics(job["id"], name="train_loss")
    assert {(m.step, round(m.value, 5)) for m in history} == {
        (p["epoch"], round(p["value"], 5)) for p in api_points
    }
    artifacts = {a.path for a in tracking.list_artifacts(run.info.run_id)}
    assert {"result.json", "metrics.jsonl", "tensorboard"} <= artifacts


def test_experiment_children_are_nested_runs_with_condition_tags(
    client: Client, tracking: MlflowClient, project_id: str
):
    base = cpu_pretrain_spec(samples=128, hidden=4)
    experiment = client.submit(experiment_spec(base, seeds=[0]))
    done = client.wait(experiment["id"], timeout=JOB_TIMEOUT_S)
    assert done["state"] == "succeeded", done.get("error")
    parent = _ended_run(tracking, project_id, experiment["id"])
    children = wait_for(
        lambda: (
            found
            if len(
                found := _runs(
                    tracking, project_id, f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
                )
            )
            == 2
            else None
        ),
        JOB_TIMEOUT_S,
        "two nested runs under the experiment's",
    )
    assert {child.data.tags["noisefa.condition"] for child in children} == {"bp", "fa"}
    artifacts = {a.path for a in tracking.list_artifacts(parent.info.run_id)}
    assert "report.json" in artifacts, artifacts


def test_jobs_succeed_while_mlflow_is_down(client: Client, mlflow_server):
    mlflow_server.terminate()
    mlflow_server.wait(timeout=30)
    jobs = [client.submit(cpu_pretrain_spec(seed=seed)) for seed in range(2)]
    for job in jobs:
        done = client.wait(job["id"], timeout=JOB_TIMEOUT_S)
        assert done["state"] == "succeeded", done.get("error")
