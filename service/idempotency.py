"""``Idempotency-Key`` on the POSTs that create something (jobs, dataset and checkpoint
uploads).

One key, one resource, whatever the timing. A key is *held* for the whole of its first
request, so a duplicate sent meanwhile is answered 409 (retry to get the answer) rather
than making a second resource:

- within this API process by :class:`InFlightKeys`;
- across API replicas on Postgres by a transaction-scoped advisory lock, released when the
  request's transaction ends (its commit or rollback);
- and last by the key table's primary key: a concurrent commit of the same key (several
  SQLite processes) raises ``IntegrityError``, answered with the first resource.

Once its request has committed, a key replays its resource until it expires
(``idempotency_ttl_s``); the same key with another body is a 422.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .models import (
    CheckpointIdempotencyKey,
    CheckpointUpload,
    Dataset,
    DatasetIdempotencyKey,
    IdempotencyKey,
    Job,
)
from .problems import FieldError, ProblemError
from .repositories import checkpoints as checkpoint_repo
from .repositories import datasets as dataset_repo
from .repositories import jobs as job_repo

Resource = TypeVar("Resource")
Record = TypeVar("Record", bound="KeyRecord")
Claim = tuple[str, str, str]
"""``(scope, project id, key)``: a job and an upload may use the same key string."""


class KeyRecord(Protocol):
    """A stored key: the hash of the request that made its resource."""

    request_hash: str


class InFlightKeys:
    """Keys whose first request this process is still answering."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._claims: set[Claim] = set()

    def claim(self, claim: Claim) -> bool:
        """True when ``claim`` was free (and is now held)."""
        with self._lock:
            if claim in self._claims:
                return False
            self._claims.add(claim)
            return True

    def release(self, claim: Claim) -> None:
        """Free ``claim``."""
        with self._lock:
            self._claims.discard(claim)

    def holds(self, claim: Claim) -> bool:
        """Whether a request of this process holds ``claim`` now."""
        with self._lock:
            return claim in self._claims


def key_in_flight() -> ProblemError:
    """The 409 for a duplicate whose first request is still being answered."""
    return ProblemError(
        409,
        "Idempotency-Key: a request with this key is still being processed; retry shortly "
        "to get its answer",
        slug="idempotency-key-in-flight",
    )


def key_reused(body: str) -> ProblemError:
    """The 422 for a key already used with another request ``body``."""
    message = f"already used with another {body}; use a new key"
    return ProblemError(
        422,
        f"invalid field(s): Idempotency-Key (Idempotency-Key: {message})",
        slug="validation",
        title="Invalid request",
        errors=[FieldError(field="Idempotency-Key", message=message)],
    )


@dataclass(frozen=True)
class KeyTable(Generic[Record, Resource]):
    """Where one kind of resource keeps its keys, and how a key's record names the resource.

    ``find(session, project_id, key, ttl_s)`` is the live record (``ttl_s=None``: ignore
    expiry); ``resource(session, project_id, record)`` the resource it made; ``body`` names
    what a request sends, for the 422 of a reused key.
    """

    scope: str
    find: Callable[[Session, str, str, float | None], Record | None]
    resource: Callable[[Session, str, Record], Resource | None]
    body: str

    def claim(self, project_id: str, key: str) -> Claim:
        """What :class:`InFlightKeys` holds for ``key`` of the project."""
        return (self.scope, project_id, key)

    def lock(self, session: Session, project_id: str, key: str) -> bool:
        """Postgres: take the key's transaction-scoped advisory lock; False while another
        request (another replica) holds it. SQLite: True (each process guards its own
        requests; the primary key still refuses a second record)."""
        if session.get_bind().dialect.name != "postgresql":
            return True
        digest = hashlib.sha256(f"idempotency:{self.scope}:{project_id}:{key}".encode()).digest()
        lock_key = int.from_bytes(digest[:8], "big", signed=True)
        query = text("SELECT pg_try_advisory_xact_lock(:key)")
        return bool(session.scalar(query, {"key": lock_key}))

    @contextmanager
    def hold(
        self, session: Session, in_flight: InFlightKeys, project_id: str, key: str
    ) -> Iterator[None]:
        """Hold ``key`` for the block (409 while another request holds it). The advisory
        lock lasts until ``session``'s transaction ends, so commit inside the block."""
        claim = self.claim(project_id, key)
        if not in_flight.claim(claim):
            raise key_in_flight()
        try:
            if not self.lock(session, project_id, key):
                raise key_in_flight()
            yield
        finally:
            in_flight.release(claim)

    def replay_or_create(
        self,
        session: Session,
        project_id: str,
        key: str,
        request_hash: str,
        ttl_s: float,
        create: Callable[[], Resource],
    ) -> tuple[Resource, bool]:
        """The key's first resource and False; else ``create()`` (which stores the key and
        commits) and True. Call while the key is held."""
        first = self._replay(session, project_id, key, request_hash, ttl_s)
        if first is not None:
            return first, False
        try:
            return create(), True
        except IntegrityError:
            # Another API process committed the same key first (SQLite, several processes).
            session.rollback()
            first = self._replay(session, project_id, key, request_hash, None)
            if first is None:
                raise
            return first, False

    def _replay(
        self, session: Session, project_id: str, key: str, request_hash: str, ttl_s: float | None
    ) -> Resource | None:
        """The first resource of ``key``, None when unused; 422 when the body differs."""
        record = self.find(session, project_id, key, ttl_s)
        if record is None:
            return None
        if record.request_hash != request_hash:
            raise key_reused(self.body)
        return self.resource(session, project_id, record)


JOB_KEYS: KeyTable[IdempotencyKey, Job] = KeyTable(
    scope="jobs",
    find=job_repo.find_idempotent,
    resource=lambda session, project_id, record: job_repo.get_job(
        session, project_id, record.job_id
    ),
    body="request body",
)
"""Keys of ``POST /v1/jobs``."""

UPLOAD_KEYS: KeyTable[DatasetIdempotencyKey, Dataset] = KeyTable(
    scope="datasets",
    find=dataset_repo.find_idempotent,
    resource=lambda session, project_id, record: dataset_repo.get_upload(
        session, project_id, record.dataset_id
    ),
    body="file",
)
"""Keys of ``POST /v1/datasets``."""

CHECKPOINT_KEYS: KeyTable[CheckpointIdempotencyKey, CheckpointUpload] = KeyTable(
    scope="checkpoints",
    find=checkpoint_repo.find_idempotent,
    resource=lambda session, project_id, record: checkpoint_repo.get_upload(
        session, project_id, record.checkpoint_id
    ),
    body="file",
)
"""Keys of ``POST /v1/checkpoints``."""
