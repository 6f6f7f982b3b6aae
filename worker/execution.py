"""Run one attempt of a job, or of each job of a pack: the plain functions behind the
``noisefa.run_job`` and ``noisefa.run_pack`` tasks.

The database says whether a job may start (``start_attempt`` moves it from ``queued`` to
``running`` once, under a fresh lease token): a pack runs those of its jobs that are still
queued (a member cancelled before it started, or already taken by another attempt, is left
out). An experiment creates its runs and returns (:mod:`.experiments`); every other job runs
through the engine as a pack (:mod:`.pack_execution`; a single job is a pack of one), each
checkpoint uploaded as soon as it is written, so a later attempt resumes from the newest
one that is intact.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from noisefa.engine.contract.states import JobKind, JobState
from noisefa.service.db import engine_from_settings, make_sessionmaker
from noisefa.service.repositories import execution as repo
from noisefa.service.settings import Settings

from .experiments import fan_out_experiment
from .pack_execution import run_attempts

log = logging.getLogger(__name__)


def execute_job(job_id: str, settings: Settings) -> JobState | None:
    """Run job ``job_id`` if it is queued; return the terminal state written, else None.

    None means nothing ran (the job was not queued: cancelled before start, finished, or
    taken by another attempt) or this attempt lost its lease and left the job alone.
    """
    return execute_pack([job_id], settings).get(job_id)


def execute_pack(job_ids: Sequence[str], settings: Settings) -> dict[str, JobState | None]:
    """Start every job of ``job_ids`` that is queued and run them as one pack; per job id
    that started, the terminal state written, or None (lost lease; an experiment waiting on
    its runs)."""
    engine = engine_from_settings(settings)
    sessions = make_sessionmaker(engine)
    try:
        started: list[repo.Attempt] = []
        ended: dict[str, JobState | None] = {}
        for job_id in job_ids:
            with sessions() as session:
                attempt = repo.start_attempt(session, job_id)
            if attempt is None:
                log.info("job %s is not queued; nothing to run", job_id)
                continue
            log.info("job %s: attempt %d started", job_id, attempt.attempt)
            if attempt.kind == JobKind.EXPERIMENT:  # creates its runs and returns
                ended[job_id] = fan_out_experiment(attempt, settings, sessions)
            else:
                started.append(attempt)
        if started:
            ended |= run_attempts(started, settings, sessions)
        return ended
    finally:
        engine.dispose()
