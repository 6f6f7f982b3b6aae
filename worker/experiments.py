"""Experiment jobs on the worker: fan out the runs, then aggregate them once all have ended.

1. ``noisefa.run_job`` on the experiment (:func:`fan_out_experiment`): expand conditions ×
   seeds into child jobs in one transaction, group them into packs (runs that train as one
   stack on one worker, :mod:`noisefa.service.packs`), send "run pack [X, Y, ...]" for each
   (or "run job X" for a pack of one), and return. The experiment stays ``running`` without
   holding a worker slot.
2. Every ``noisefa.run_job`` (or ``run_pack``) task then asks, once its jobs have ended,
   whether they were the last live runs of an experiment (:func:`aggregate_if_due`, once
   per experiment) and if so sends ``noisefa.finish_experiment``; the reaper sends it too
   when such a message was lost.
3. :func:`finish_experiment` claims the experiment in the database (only when every child
   is terminal), aggregates the runs' metric histories into ``report.json``, ``report.md``
   and plots, uploads them, and ends the experiment ``succeeded`` (``failed`` only when no
   run succeeded; ``cancelled`` when its cancel was asked).

Messages are suggestions; the database decides. Duplicates are harmless: a second fan-out
finds the children, a second finish finds the experiment ended or fences the first.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from noisefa.engine.contract.experiment_spec import ExperimentSpec, expand_experiment
from noisefa.engine.contract.states import FailureReason, JobState
from noisefa.engine.report import REPORT_JSON, REPORT_MD, aggregate_experiment
from noisefa.service.broker import enqueue_finish_experiment, make_celery, queue_for
from noisefa.service.db import engine_from_settings, make_sessionmaker
from noisefa.service.models import Job
from noisefa.service.packs import Pack, plan_packs, send_packs
from noisefa.service.repositories import execution as repo
from noisefa.service.repositories import experiments as experiment_repo
from noisefa.service.settings import Settings
from noisefa.service.storage import storage_from_settings

from .artifacts import upload_artifact
from .trackers.job_trackers import drain_mlflow, mlflow_mirror, start_mlflow_run

log = logging.getLogger(__name__)


def report_files(out_dir: Path) -> list[str]:
    """The aggregation's files to upload: the report and the plots it lists."""
    report = json.loads((out_dir / REPORT_JSON).read_text())
    return [REPORT_JSON, REPORT_MD, *report["plots"]]


def fan_out_experiment(
    attempt: repo.Attempt, settings: Settings, sessions: sessionmaker[Session]
) -> JobState | None:
    """Create and send the experiment's runs; the terminal state if it ended here, else None."""
    try:
        spec = ExperimentSpec.model_validate(attempt.spec, context={"limits": settings.limits})
        runs = expand_experiment(spec, settings.limits)
    except ValidationError as exc:
        with sessions() as session:
            repo.finish(
                session,
                attempt,
                JobState.FAILED,
                error_reason=FailureReason.INVALID_SPEC,
                error_message=f"the stored spec is no longer valid: {exc}",
            )
        return JobState.FAILED
    with sessions() as session:
        queued = experiment_repo.create_children(session, attempt, runs, settings.max_attempts)
    if queued is None:
        with sessions() as session:
            if experiment_repo.cancel_requested(session, attempt.job_id) and repo.finish(
                session, attempt, JobState.CANCELLED
            ):
                log.info("experiment %s: cancelled before its runs were created", attempt.job_id)
                return JobState.CANCELLED
        log.warning("experiment %s: lost its lease during fan-out", attempt.job_id)
        return None
    # The parent run, made while the children are sent (each finds it by its tag, or
    # creates it when it starts first).
    mirror = start_mlflow_run(settings, sessions, attempt.job_id, attempt.project_id, attempt.spec)
    try:
        with sessions() as session:
            packs = plan_packs(session, settings, [job_id for job_id, _ in queued])
    except Exception:  # a database blip: send the runs one by one rather than not at all
        log.warning("experiment %s: could not plan packs", attempt.job_id, exc_info=True)
        packs = [Pack((job_id,), queue) for job_id, queue in queued]
    log.info("experiment %s: %d runs in %d packs", attempt.job_id, len(queued), len(packs))
    _send(settings, lambda celery: send_packs(celery, packs))
    if not queued:  # a retried fan-out whose runs have all ended already
        _send(settings, lambda c: enqueue_finish_experiment(c, attempt.job_id, queue_for(spec)))
    if mirror is not None:
        drain_mlflow(mirror, attempt.job_id)
    return None


def aggregate_if_due(job_ids: Sequence[str], settings: Settings) -> None:
    """After the jobs ``job_ids`` ended (one job, or a pack's members): for each experiment
    they are runs of, once, record how many of its runs have ended, and send "aggregate" if
    none is live any more. A pack's members end together; asked once per member, every one
    of them would find the experiment due and send its own "aggregate"."""
    try:
        due = _due_experiments(job_ids, settings)
    except Exception:  # a database blip: the reaper sends what is due later
        log.exception("jobs %s: asking for their experiments' aggregation failed", job_ids)
        return
    for parent in due:
        log.info("experiment %s: last run ended; aggregating", parent[0])
        _send(settings, lambda celery, parent=parent: enqueue_finish_experiment(celery, *parent))


def _due_experiments(job_ids: Sequence[str], settings: Settings) -> list[tuple[str, str]]:
    """``(parent_id, queue)`` of each experiment of ``job_ids`` that has no live run left,
    each experiment's count of ended runs recorded on the way."""
    engine = engine_from_settings(settings)
    due: list[tuple[str, str]] = []
    try:
        sessions = make_sessionmaker(engine)
        with sessions() as session:
            parents = experiment_repo.parents_of(session, job_ids)
        for parent_id, run_id in parents.items():
            try:
                with sessions() as session:
                    experiment_repo.record_children_done(session, parent_id)
                    found = experiment_repo.due_parent(session, run_id)
            except Exception:  # one failing check must not skip the other experiments
                log.exception("experiment %s: checking whether it is due failed", parent_id)
                continue
            if found is not None:
                due.append(found)
    finally:
        engine.dispose()
    return due


class LostLease(Exception):
    """Another aggregation of the same experiment claimed it after this one (runs ending
    together, or the reaper, each send "aggregate"): this one stops and writes nothing."""


def finish_experiment(parent_id: str, settings: Settings) -> JobState | None:
    """Aggregate and end experiment ``parent_id`` if it is due; the state written, else None."""
    engine = engine_from_settings(settings)
    sessions = make_sessionmaker(engine)
    try:
        with sessions() as session:
            attempt = experiment_repo.claim_finish(session, parent_id)
        if attempt is None:
            log.info("experiment %s: not due for aggregation", parent_id)
            return None
        with sessions() as session:  # runs ended without a task of theirs count too
            experiment_repo.record_children_done(session, parent_id)
        with sessions() as session:
            if experiment_repo.cancel_requested(session, parent_id):
                cancelled = repo.finish(session, attempt, JobState.CANCELLED)
                return JobState.CANCELLED if cancelled else None
        try:
            outcome = _aggregate(attempt, settings, sessions)
        except LostLease as lost:
            log.info("%s", lost)  # the usual end of a duplicate aggregation, not an error
            return None
        except Exception as exc:
            log.exception("experiment %s: aggregation failed", parent_id)
            outcome = {
                "state": JobState.FAILED,
                "error_reason": FailureReason.INTERNAL,
                "error_message": f"aggregating the runs failed ({type(exc).__name__})",
            }
        with sessions() as session:
            if not repo.finish(session, attempt, **outcome):
                log.warning("experiment %s: another aggregation took over", parent_id)
                return None
        log.info("experiment %s ended %s", parent_id, outcome["state"])
        return outcome["state"]
    finally:
        engine.dispose()


def _aggregate(
    attempt: repo.Attempt, settings: Settings, sessions: sessionmaker[Session]
) -> dict[str, Any]:
    """Report, plots and result of a claimed experiment; ``finish``'s keyword arguments."""
    spec = ExperimentSpec.model_validate(attempt.spec, context={"limits": settings.limits})
    with sessions() as session:
        runs = experiment_repo.children(session, attempt.job_id)
        points = experiment_repo.histories(session, [run.id for run in runs])
        session.expunge_all()
    cells = {(run.condition, run.spec["model"]["seed"]): run for run in runs}
    children = {
        condition: [_child(cells.get((condition, seed)), points) for seed in spec.seeds]
        for condition in spec.conditions
    }
    out_dir = settings.resolved_work_dir / attempt.job_id / f"aggregate-{attempt.lease_token}"
    shutil.rmtree(out_dir, ignore_errors=True)
    try:
        aggregate_experiment(spec, children, out_dir)
        files = report_files(out_dir)
        storage = storage_from_settings(settings)
        for name in files:
            if not upload_artifact(attempt, sessions, storage, out_dir / name, name):
                raise LostLease(f"experiment {attempt.job_id}: another aggregation took over")
        mirror = mlflow_mirror(settings)
        if mirror is not None:
            succeeded = any(run.state == JobState.SUCCEEDED for run in runs)
            ended = JobState.SUCCEEDED if succeeded else JobState.FAILED
            mirror.end_run(
                attempt.job_id, attempt.project_id, ended, [(out_dir / n, n) for n in files]
            )
            drain_mlflow(mirror, attempt.job_id)
        result = json.loads((out_dir / REPORT_JSON).read_text())
    finally:
        # Only this claim's folder: a second aggregation of the same experiment (two runs
        # ending at once both send "aggregate") may still be writing beside it.
        shutil.rmtree(out_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            out_dir.parent.rmdir()  # the experiment's folder, once no aggregation uses it
    result["runs"] = {
        condition: [run.id for seed in spec.seeds if (run := cells.get((condition, seed)))]
        for condition in spec.conditions
    }
    result["artifacts"] = files
    if any(run.state == JobState.SUCCEEDED for run in runs):
        return {"state": JobState.SUCCEEDED, "result": result}
    first = next((run for run in runs if run.error_reason), None)
    return {
        "state": JobState.FAILED,
        "result": result,
        "error_reason": first.error_reason if first else FailureReason.INTERNAL,
        "error_message": "no run of the experiment succeeded"
        + (f"; first error: {first.error_message}" if first else ""),
    }


def _child(run: Job | None, points: dict[str, list[dict]]) -> dict[str, Any]:
    """One cell as :func:`aggregate_experiment` takes it."""
    if run is None:
        return {"state": "missing", "history": [], "error": None}
    error = None
    if run.state != JobState.SUCCEEDED:
        error = {"reason": run.error_reason or run.state, "message": run.error_message}
    return {"state": run.state, "history": points.get(run.id, []), "error": error}


def _send(settings: Settings, send: Callable[[Any], Any]) -> None:
    """Send messages with a short-lived client; a failure is logged (the reaper re-sends)."""
    celery = make_celery(settings)
    try:
        send(celery)
    except Exception:
        log.warning("could not send to the broker; the reaper will re-send", exc_info=True)
    finally:
        celery.close()
