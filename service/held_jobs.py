"""Standalone runs held for packing, sent as packs once their window has passed.

With ``pack_window_s`` set, a standalone pretrain or train job is stored ``queued`` with
``hold_until`` = submission + window, and no message (:mod:`.submission`). Every half window
the API's :class:`Packer` looks for a project's queue with a held job whose time has come,
releases every job of that project held on that queue (each by a conditional UPDATE, so two
replicas never both send one), plans them into packs by pack key
(:func:`~.packs.plan_packs`), and sends the packs. The jobs a project submits within one
window of its first held one therefore train as one stack (as many as fit; cut to the live
workers), each still its own job; a job cancelled while held is no longer queued and is
never sent. A pack that fails to send leaves its jobs queued and no longer held: the reaper
sends them again after ``requeue_after_s``. Should planning fail, each job is sent on its
own. A job still held when no packer runs any more (the API restarted without
``pack_window_s``) is sent by the reaper once its hold has been over for
``requeue_after_s`` (the reaper must run in some API process, as it must for every lost
message).
"""

from __future__ import annotations

import logging

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from .packs import Pack, plan_packs_or_singles, send_each
from .periodic import PeriodicLoop
from .repositories.reaping import release_held_jobs
from .settings import Settings

log = logging.getLogger(__name__)

# The shortest interval between two rounds of the packer, however short the window.
MIN_INTERVAL_S = 0.05


def send_held_jobs(
    sessions: sessionmaker[Session], celery: Celery, settings: Settings
) -> list[Pack]:
    """Release the held jobs that are due and send them as packs; the packs sent."""
    with sessions() as session:
        released = release_held_jobs(session)  # commits
        if not released:
            return []
        packs = plan_packs_or_singles(session, settings, released, "packer")
    sent = send_each(celery, packs, "packer")
    log.info("packer: sent %d held job(s) as %d pack(s)", len(released), len(sent))
    return sent


class Packer(PeriodicLoop):
    """:func:`send_held_jobs` every half ``pack_window_s`` on a daemon thread (a project's
    first held job waits between one and one and a half windows, those after it less),
    until :meth:`stop`."""

    def __init__(self, sessions: sessionmaker[Session], celery: Celery, settings: Settings) -> None:
        super().__init__(
            "packer",
            lambda: send_held_jobs(sessions, celery, settings),
            max(settings.pack_window_s / 2, MIN_INTERVAL_S),
        )
