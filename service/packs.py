"""Queued experiment runs grouped into packs: one broker message, one worker, one stack.

Sent when an experiment fans out, and again by the reaper for runs it re-queues (a killed
pack's members come back as a pack, so they retrain as the same stack and resume exactly;
see docs/design.md). A pack is transient: its message carries the member job ids and the
database knows nothing of it; each member stays an ordinary job (its own row, attempt,
lease, state, metrics and artifacts).

Runs pack together when they are children of one experiment (or, with ``pack_window_s``
set, standalone runs of one project: :mod:`.held_jobs`), on one queue, with one
:func:`~noisefa.engine.contract.packing.pack_key`. Each such group is cut into packs of
``pack_size(runs, max_runs, live workers of the queue)``: at most ``pack_max_runs`` (unset:
what the memory estimate fits into ``pack_memory_bytes``), and no more than needed for every
live worker to get a pack. ``pack_max_runs = 1`` sends every run on its own, as "run job X".
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from celery import Celery
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from noisefa.engine.contract.packing import (
    PACK_RUNS_CAP,
    pack_key,
    pack_size,
    runs_that_fit,
    split_into_packs,
)
from noisefa.engine.contract.references import referenced_datasets
from noisefa.engine.contract.spec import JobSpec, parse_spec
from noisefa.engine.contract.states import JobKind

from .broker import enqueue_job, enqueue_pack
from .models import Job, utcnow
from .repositories.workers import live_workers_per_queue
from .resource_check import dataset_sizes
from .settings import Settings

log = logging.getLogger(__name__)

PACKABLE_KINDS = (JobKind.PRETRAIN, JobKind.TRAIN)


@dataclass(frozen=True)
class Pack:
    """Jobs one worker task runs together, and the queue it is sent on."""

    job_ids: tuple[str, ...]
    queue: str


def plan_packs(session: Session, settings: Settings, job_ids: Sequence[str]) -> list[Pack]:
    """The packs to send for the queued jobs ``job_ids`` (in their order; a job that packs
    with none is a pack of one). Reads only."""
    if not job_ids:
        return []
    rows = {
        row.id: row
        for row in session.execute(
            select(Job.id, Job.queue, Job.parent_id, Job.project_id, Job.kind, Job.spec).where(
                Job.id.in_(list(job_ids))
            )
        )
    }
    session.commit()  # end the read
    groups: dict[Hashable, list[str]] = {}
    specs: dict[str, JobSpec] = {}
    singles: list[Pack] = []
    for job_id in job_ids:
        row = rows.get(job_id)
        if row is None:
            continue
        spec = _packable_spec(row, settings)
        if spec is None:
            singles.append(Pack((job_id,), row.queue))
            continue
        specs[job_id] = spec
        owner = ("experiment", row.parent_id) if row.parent_id else ("project", row.project_id)
        groups.setdefault((owner, row.queue, pack_key(spec)), []).append(job_id)
    packs = list(singles)
    if not groups:
        return packs
    queues = {queue for _, queue, _ in groups}
    workers = live_workers_per_queue(session, settings.heartbeat_timeout_s, queues)
    for (_, queue, _), members in groups.items():
        project_id = rows[members[0]].project_id
        max_runs = settings.pack_max_runs or _runs_in_memory(
            session, settings, project_id, [specs[job_id] for job_id in members]
        )
        size = pack_size(len(members), max_runs, workers.get(queue, 0))
        packs += [Pack(tuple(ids), queue) for ids in split_into_packs(members, size)]
    return packs


def plan_packs_or_singles(
    session: Session, settings: Settings, jobs: Sequence[tuple[str, str]], sender: str
) -> list[Pack]:
    """:func:`plan_packs` for ``jobs`` (``(job_id, queue)``); each job alone when planning
    fails (a spec or an estimate that raises must not leave every job unsent)."""
    try:
        return plan_packs(session, settings, [job_id for job_id, _ in jobs])
    except Exception:
        log.exception("%s: planning packs failed; sending each job on its own", sender)
        session.rollback()
        return [Pack((job_id,), queue) for job_id, queue in jobs]


def send_packs(celery: Celery, packs: Sequence[Pack]) -> None:
    """Send each pack: "run job X" for a pack of one, "run pack [X, Y, ...]" otherwise."""
    for pack in packs:
        if len(pack.job_ids) == 1:
            enqueue_job(celery, pack.job_ids[0], pack.queue)
        else:
            enqueue_pack(celery, list(pack.job_ids), pack.queue)


def send_each(celery: Celery, packs: Sequence[Pack], sender: str) -> list[Pack]:
    """Send every pack, the ones after a failed one too; the packs sent. One that fails is
    logged and its jobs stay queued: the reaper sends them again after ``requeue_after_s``."""
    sent = []
    for pack in packs:
        try:
            send_packs(celery, [pack])
        except Exception:
            log.warning("%s: could not enqueue %s; will retry", sender, pack.job_ids, exc_info=True)
        else:
            sent.append(pack)
    return sent


def pack_hold_until(kind: str, settings: Settings) -> datetime | None:
    """Until when a new standalone job of ``kind`` waits unsent for others to join its pack
    (``pack_window_s`` from now); None: it is sent at once."""
    if not _packs_standalone(settings) or kind not in PACKABLE_KINDS:
        return None
    return utcnow() + timedelta(seconds=settings.pack_window_s)


def _packs_standalone(settings: Settings) -> bool:
    return settings.pack_window_s > 0 and settings.pack_max_runs != 1


def _packable_spec(row, settings: Settings) -> JobSpec | None:
    """The run's spec when it may join a pack: a pretrain or train run of an experiment (or
    standalone, when those pack) whose stored spec is still valid (an invalid one runs alone,
    to fail with its own message)."""
    if settings.pack_max_runs == 1 or row.kind not in PACKABLE_KINDS:
        return None
    if row.parent_id is None and not _packs_standalone(settings):
        return None
    try:
        return parse_spec(row.spec, settings.limits)
    except ValidationError:
        return None


def _runs_in_memory(
    session: Session, settings: Settings, project_id: str, specs: list[JobSpec]
) -> int:
    """The default pack size of runs of one key: as many of the largest one's estimate as fit
    ``pack_memory_bytes`` (at most ``PACK_RUNS_CAP``); 1 when a dataset's size is unknown."""
    fits = PACK_RUNS_CAP
    for spec in specs:
        names = [name for _, name in referenced_datasets(spec)]
        sizes = dataset_sizes(session, project_id, [spec.shape_dataset, *names])
        if sizes is None:
            log.info("a dataset of the run has no known size; it is not packed")
            return 1
        fits = min(fits, runs_that_fit(spec, sizes, settings.pack_memory_bytes))
    return fits
