"""Stored ``Idempotency-Key`` records of uploads: one lookup for every kind of upload.

A record is live for ``idempotency_ttl_s`` after it was made; an expired one is deleted when
it is next looked up, so its key can make a new resource.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TypeVar

from sqlalchemy.orm import Session

from ..models import CheckpointIdempotencyKey, DatasetIdempotencyKey, utcnow

Record = TypeVar("Record", DatasetIdempotencyKey, CheckpointIdempotencyKey)


def find_live_record(
    session: Session, table: type[Record], project_id: str, key: str, ttl_s: float | None
) -> Record | None:
    """The live record of ``key`` in ``table``; None when unused or expired.

    ``ttl_s=None`` ignores expiry (a record just committed by a concurrent request).
    """
    record = session.get(table, (project_id, key))
    if record is None or ttl_s is None:
        return record
    created = record.created_at
    if created.tzinfo is None:
        created = created.replace(tzinfo=utcnow().tzinfo)
    if created < utcnow() - timedelta(seconds=ttl_s):
        session.delete(record)
        session.flush()
        return None
    return record
