"""The training thread hands each step's position to the monitor as a tuple; the monitor makes
the stored progress of it, with an ETA from the rate since the phase's first position it saw
(``worker/monitor.py``, ``worker/callbacks.py``), on SQLite in this process."""

from __future__ import annotations

import time

from sqlalchemy import select

from noisefa.engine.contract.spec import parse_spec
from noisefa.service.models import Job
from noisefa.service.repositories import execution
from noisefa.service.repositories.jobs import create_job
from noisefa.service.repositories.projects import get_or_create_project
from noisefa.testing.specs import pretrain_spec
from noisefa.worker.monitor import JobMonitor


def test_positions_become_progress_with_an_eta_per_phase(settings, sessions):
    with sessions() as session:
        project = get_or_create_project(session, "monitor-progress")
        job = create_job(session, project.id, parse_spec(pretrain_spec()), max_attempts=1)
        attempt = execution.start_attempt(session, job.id)
    monitor = JobMonitor(attempt, sessions, settings)
    now = time.monotonic()

    def progress_after(position):
        monitor.set_position(position)
        beat = monitor.due_beat(now)
        if beat is not None:
            monitor.beat_written(beat, True, now)
        return None if beat is None else beat.progress

    first = progress_after((1, "pretrain", 1, 2, 10, 100, 1000.0))
    assert first == {
        "phase": "pretrain",
        "epoch": 1,
        "epochs": 2,
        "step": 10,
        "steps": 100,
        "eta_s": None,
    }  # no rate yet
    # 50 steps in 5 s: 10 a second, 140 of the phase's 200 left.
    assert progress_after((1, "pretrain", 1, 2, 60, 100, 1005.0))["eta_s"] == 14.0
    assert progress_after((1, "pretrain", 2, 2, 20, 100, 1011.0))["eta_s"] == 8.0  # 110 in 11 s
    assert monitor.due_beat(now) is None  # the same position: nothing new to write
    # A new phase start (the next phase, or the same one again) starts a new clock.
    assert progress_after((2, "train", 1, 3, 5, 50, 1012.0))["eta_s"] is None
    assert progress_after((2, "train", 1, 3, 25, 50, 1014.0))["eta_s"] == 12.5  # 125 left at 10/s

    # The same phase started again in this attempt (a pack split after running out of
    # memory): a new clock, though the phase's name is the same and its step lower.
    assert progress_after((3, "train", 1, 3, 10, 50, 1100.0))["eta_s"] is None
    monitor.set_position((3, "train", 2, 3, 50, 50, 1108.0))
    monitor.close()  # the job ends: its last position is written
    with sessions() as session:
        stored = session.scalar(select(Job.progress).where(Job.id == job.id))
    # 90 steps in 8 s since the restart's first position, 50 left
    assert stored == {
        "phase": "train",
        "epoch": 2,
        "epochs": 3,
        "step": 50,
        "steps": 50,
        "eta_s": 4.4,
    }
