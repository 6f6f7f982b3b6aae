"""Which job ids the messages waiting on a broker queue carry, read without taking any.

The reaper re-sends a queued job only when no waiting message names it (:mod:`.reaper`).
Counting messages is not enough: a "run pack" message carries several jobs, so a queue of
packs holds fewer messages than queued jobs even when none is lost, and one pack lost among
many others is not visible in a count. So the bodies are read: kombu's Redis transport keeps
a queue as Redis lists (one per priority step), its filesystem transport (the embedded mode)
as ``<stamp>_<uuid>.<queue>.msg`` files. Messages a worker already holds are not in either.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from celery import Celery

from .broker import RUN_JOB_TASK, RUN_PACK_TASK

log = logging.getLogger(__name__)

# Redis list entries read per LRANGE: a long backlog is read in pages, not in one reply.
REDIS_PAGE = 500


def waiting_job_ids(app: Celery, queue: str) -> set[str] | None:
    """Ids of the jobs that "run job" and "run pack" messages waiting on ``queue`` name;
    None when the broker cannot be asked or its transport cannot be read this way."""
    try:
        with app.connection_for_write(connect_timeout=2) as connection:
            connection.ensure_connection(max_retries=1)
            channel = connection.default_channel
            # The driver, not the configured name: a subclass (the embedded worker's
            # transport) is named by its import path.
            transport = connection.transport.driver_type
            if transport == "redis":
                return _job_ids(_redis_messages(channel, queue))
            if transport == "filesystem":
                return _job_ids(_file_messages(Path(channel.data_folder_in), queue))
            return None
    except Exception:
        log.warning("could not read the messages waiting on %s", queue, exc_info=True)
        return None


def message_job_ids(raw: bytes | str) -> list[str]:
    """The job ids one kombu message (Celery protocol 2, JSON) names; [] for other tasks."""
    message = json.loads(raw)
    task = message.get("headers", {}).get("task")
    if task not in (RUN_JOB_TASK, RUN_PACK_TASK):
        return []
    body = message["body"]
    if message.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    args, _kwargs, _embed = json.loads(body)
    return [args[0]] if task == RUN_JOB_TASK else list(args[0])


def _job_ids(messages: Iterable[bytes]) -> set[str]:
    return {job_id for raw in messages for job_id in message_job_ids(raw)}


def _redis_messages(channel, queue: str) -> Iterable[bytes]:
    """Every entry of the queue's Redis lists, a page at a time."""
    client = channel.client
    for key in {channel._q_for_pri(queue, pri) for pri in channel.priority_steps}:
        start = 0
        while page := client.lrange(key, start, start + REDIS_PAGE - 1):
            yield from page
            start += len(page)


def _file_messages(folder: Path, queue: str) -> Iterable[bytes]:
    """The queue's message files (one taken meanwhile by a worker is skipped)."""
    suffix = f"{queue}.msg"
    for name in os.listdir(folder):
        if name.partition(".")[2] != suffix:
            continue
        try:
            yield (folder / name).read_bytes()
        except FileNotFoundError:
            continue
