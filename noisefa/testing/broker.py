"""Look inside the real Redis broker: which ``noisefa.run_job`` messages wait on a queue."""

from __future__ import annotations

import base64
import json

import redis

from noisefa.testing.redis_dbs import redis_url


def flush(url: str | None = None) -> None:
    """Empty a test Redis database (the default suite's unless ``url`` names another)."""
    client = redis.Redis.from_url(url or redis_url("default"))
    try:
        client.flushdb()
    finally:
        client.close()


def queued_job_ids(queue: str = "cpu", url: str | None = None) -> list[str]:
    """Job ids of the ``run_job`` messages waiting on ``queue`` (kombu's Redis list)."""
    client = redis.Redis.from_url(url or redis_url("default"))
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
