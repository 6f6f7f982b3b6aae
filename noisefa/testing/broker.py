"""Look inside the real Redis broker: which ``noisefa.run_job`` messages wait on a queue."""

from __future__ import annotations

import base64
import json

import redis

from .db import REDIS_URL


def flush(url: str = REDIS_URL) -> None:
    """Empty the test Redis database."""
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


def queued_job_ids(queue: str = "cpu", url: str = REDIS_URL) -> list[str]:
    """Job ids of the ``run_job`` messages waiting on ``queue`` (kombu's Redis list)."""
    client = redis.Redis.from_url(url)
    try:
        raw_messages = client.lrange(queue, 0, -1)
    finally:
        client.close()
    ids = []
    for raw in raw_messages:
        message = json.loads(raw)
        if message["headers"].get("task") != "noisefa.run_job":
            continue
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        ids.append(args[0])
    return ids
