"""The HTTP verbs of the ``noisefa`` CLI, run as real subprocesses against a real service."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import pytest

from noisefa.client import Client
from noisefa.commands.processes import free_port
from noisefa.testing.specs import experiment_spec, long_spec, tiny_spec
from noisefa.testing.waiting import wait_for

WAIT_S = 180


@pytest.fixture(scope="module")
def cli(service):
    """Run ``noisefa ARGS`` against the service; returns the CompletedProcess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOISEFA_")}
    env.update(NOISEFA_URL=service.url, NOISEFA_API_KEY=service.api_key, OMP_NUM_THREADS="1")

    def run(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "noisefa.cli", *args],
            env={**env, **(env_extra or {})},
            capture_output=True,
            text=True,
            timeout=WAIT_S,
        )

    return run


@pytest.fixture(scope="module")
def client(service) -> Client:
    with Client(service.url, service.api_key) as client:
        yield client


@pytest.fixture(scope="module")
def finished_job(cli, client, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("spec") / "spec.json"
    path.write_text(json.dumps(tiny_spec()))
    job_id = cli("submit", str(path)).stdout.strip()
    assert client.wait(job_id, timeout=WAIT_S)["state"] == "succeeded"
    return job_id


def test_submit_wait_exits_0_when_the_job_succeeds(cli, spec_file) -> None:
    done = cli("submit", str(spec_file(tiny_spec())), "--wait", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"] == "succeeded"


def test_submit_accepts_yaml(cli, spec_file, tmp_path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(
        "kind: pretrain\nmodel: {hidden: [8]}\n"
        "pretrain: {dataset: digits, epochs: 1, samples_per_epoch: 256}\n"
    )
    done = cli("submit", str(path), "--wait")
    assert done.returncode == 0, done.stderr
    assert "succeeded" in done.stdout


def test_submit_wait_exits_1_when_the_job_fails(cli, spec_file) -> None:
    spec = {**long_spec(), "time_limit_s": 1}  # accepted, then stopped by the worker
    done = cli("submit", str(spec_file(spec)), "--wait")
    assert done.returncode == 1, done.stderr
    assert "time_limit" in done.stdout


def test_submit_wait_exits_3_when_the_job_is_cancelled(service, client, spec_file) -> None:
    before = {job["id"] for job in client.list()}
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOISEFA_")}
    env.update(NOISEFA_URL=service.url, NOISEFA_API_KEY=service.api_key)
    args = [sys.executable, "-m", "noisefa.cli", "submit", str(spec_file(long_spec()))]
    with subprocess.Popen(
        [*args, "--wait", "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        job_id = wait_for(
            lambda: next((j["id"] for j in client.list() if j["id"] not in before), None),
            WAIT_S,
            "the CLI's job to appear",
        )
        wait_for(lambda: client.get(job_id)["state"] == "running", WAIT_S, "the job to run")
        client.cancel(job_id)
        out, err = proc.communicate(timeout=WAIT_S)
    assert proc.returncode == 3, err
    assert json.loads(out)["state"] == "cancelled"


def test_a_bad_spec_exits_4_naming_the_field(cli, spec_file) -> None:
    spec = tiny_spec()
    spec["model"]["hidden"] = [0]
    done = cli("submit", str(spec_file(spec)))
    assert done.returncode == 4
    assert "model.hidden[0]" in done.stderr


def test_a_wrong_key_exits_4_with_a_clear_message(cli) -> None:
    done = cli("ls", env_extra={"NOISEFA_API_KEY": "nfa_wrong"})
    assert done.returncode == 4
    assert "401" in done.stderr and "Traceback" not in done.stderr


def test_no_server_exits_4_naming_the_url(cli) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = cli("status", "x", env_extra={"NOISEFA_URL": url})
    assert done.returncode == 4
    assert url in done.stderr and "Traceback" not in done.stderr


def test_status_shows_state_and_artifacts(cli, finished_job) -> None:
    done = cli("status", finished_job, "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["state"] == "succeeded"
    assert "result.json" in {a["name"] for a in data["artifacts"]}
    text = cli("status", finished_job).stdout
    assert "succeeded" in text and "result.json" in text


def test_ls_lists_jobs(cli, finished_job) -> None:
    done = cli("ls", "--json", "--state", "succeeded")
    assert finished_job in {job["id"] for job in json.loads(done.stdout)}
    assert finished_job in cli("ls").stdout


def test_ls_shows_an_experiment_s_runs_ended_of_all(cli, client) -> None:
    job = client.submit(experiment_spec(tiny_spec()))  # BP and FA × seeds 0, 1: four runs
    assert client.wait(job["id"], timeout=WAIT_S)["state"] == "succeeded"
    progress = client.get(job["id"])["progress"]
    assert (progress["phase"], progress["children_done"], progress["children_total"]) == (
        "experiment",
        4,
        4,
    )
    line = next(
        row
        for row in cli("ls", "--kind", "experiment").stdout.splitlines()
        if row.startswith(job["id"])
    )
    assert line.split()[-3:] == ["experiment", "4/4", "runs"]


def test_metrics_prints_csv_and_json(cli, finished_job) -> None:
    rows = list(csv.DictReader(io.StringIO(cli("metrics", finished_job, "--csv").stdout)))
    assert {"train_loss", "alignment_angle/2"} <= {row["name"] for row in rows}
    points = json.loads(cli("metrics", finished_job, "--name", "train_loss", "--json").stdout)
    assert [p["epoch"] for p in points] == [0, 1]


def test_logs_follow_streams_events_to_the_terminal_state(cli, finished_job) -> None:
    done = cli("logs", finished_job, "--follow", "--json")
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert events[-1]["event"] == "state" and events[-1]["data"]["state"] == "succeeded"
    assert any(e["event"] == "metrics" for e in events)


def test_download_writes_the_artifact(cli, finished_job, tmp_path) -> None:
    done = cli("download", finished_job, "result.json", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    assert "final_metrics" in result


def test_cancel_of_a_finished_job_leaves_it_unchanged(cli, finished_job) -> None:
    done = cli("cancel", finished_job, "--json")
    assert done.returncode == 0
    assert json.loads(done.stdout)["state"] == "succeeded"


def test_datasets_lists_the_builtins(cli) -> None:
    done = cli("datasets", "--json")
    assert done.returncode == 0, done.stderr
    assert "digits" in {item["name"] for item in json.loads(done.stdout)}
