"""A running job past its wall-clock limit stops at its next step, keeps its checkpoint and
fails ``time_limit``; the limit counts the time earlier attempts spent."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from noisefa.client import Client
from noisefa.engine.checkpoint import load_checkpoint
from noisefa.service.models import utcnow
from noisefa.testing.specs import SMALL_METRICS, cpu_pretrain_spec
from noisefa.worker.time_limit import TimeLimit

JOB_TIMEOUT_S = 180.0
TIME_LIMIT_S = 2


def test_a_job_past_its_time_limit_fails_time_limit_and_keeps_its_checkpoint(
    client: Client, tmp_path: Path
):
    body = cpu_pretrain_spec(epochs=3, samples=5_000_000, hidden=16, metrics=SMALL_METRICS)
    body["time_limit_s"] = TIME_LIMIT_S  # the run itself would take many minutes
    job = client.wait(client.submit(body)["id"], timeout=JOB_TIMEOUT_S)
    assert job["state"] == "failed", job
    assert job["error"]["reason"] == "time_limit"
    assert "time_limit_s" in job["error"]["message"]
    assert "Traceback" not in job["error"]["message"]
    ran = datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])
    assert ran >= timedelta(seconds=TIME_LIMIT_S)  # never stopped before the limit
    checkpoints = [a["name"] for a in client.artifacts(job["id"])]
    checkpoints = [name for name in checkpoints if name.startswith("checkpoints/")]
    assert checkpoints, "the stopped job kept no checkpoint"
    stopped = load_checkpoint(client.download(job["id"], checkpoints[-1], tmp_path))
    # Stopped between two steps of the first epoch: a checkpoint a resume could go on from.
    assert (stopped.progress.phase, stopped.progress.epoch) == ("pretrain", 0)
    assert stopped.progress.step >= 1


def test_time_spent_by_earlier_attempts_counts():
    started = utcnow() - timedelta(seconds=50)
    assert TimeLimit.of(30, 86_400.0, started).expired  # spent before this attempt began
    running = TimeLimit.of(100, 86_400.0, started)
    assert not running.expired
    assert running.source == "time_limit_s"
    # SQLite hands timestamps back without a zone; they are UTC.
    assert TimeLimit.of(30, 86_400.0, started.replace(tzinfo=None)).expired


def test_the_smaller_of_the_spec_and_the_deployment_limits_applies():
    assert TimeLimit.of(None, 60.0, None).source == "max_job_seconds"
    wider = TimeLimit.of(3600, 60.0, None)
    assert (wider.source, wider.seconds) == ("max_job_seconds", 60.0)
    assert "max_job_seconds" in wider.message() and "60 s" in wider.message()
    narrower = TimeLimit.of(10, 60.0, None)
    assert (narrower.source, narrower.seconds) == ("time_limit_s", 10.0)
