"""Look inside the real Redis broker: which messages (``noisefa.run_job``, ``noisefa.run_pack``,
...) wait on a queue."""

from __future__ import annotations

import base64
import json

import redis

from noisefa.service.broker import RUN_JOB_TASK
from noisefa.testing.redis_dbs import redis_url


def flush(url: str | None = None) -> None:
    """Empty a test Redis database (the default suite's unless ``url`` names another)."""
    client = redis.Redis.from_url(url or redis_url("default"))
    try:
        client.flushdb()
    finally:
        client.close()


def waiting_messages(queue: str = "cpu", url: str | None = None) -> list[tuple[str, list]]:
    """``(task name, args)`` of every message waiting on ``queue``, oldest first."""
    client = redis.Redis.from_url(url or redis_url("default"))
    try:
        raw_messages = client.lrange(queue, 0, -1)
    finally:
        client.close()
    messages = []
    for raw in reversed(raw_messages):  # kombu pushes on the left
        message = json.loads(raw)
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        messages.append((message["headers"]["task"], args))
    return messages


def queued_job_ids(queue: str = "cpu", url: str | None = None) -> list[str]:
    """Job ids of the ``run_job`` messages waiting on ``queue``, oldest first."""
    return [args[0] for task, args in waiting_messages(queue, url) if task == RUN_JOB_TASK]
