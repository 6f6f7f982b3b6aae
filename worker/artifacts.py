"""A job's files in object storage: uploads with their checksum, verified downloads of
checkpoints, and checkpoint retention.

Every object is written before its row, so a listed artifact is always downloadable, and
its size and sha256 go into the row. A checkpoint is used (to resume, or as ``init_from``)
only once its bytes match them; a resuming attempt passes over damaged ones, newest first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from noisefa.engine.checkpoint import final_checkpoint_names, names_to_prune
from noisefa.engine.contract.checkpoint_format import checkpoint_upload_id
from noisefa.engine.contract.errors import CorruptCheckpointError
from noisefa.engine.contract.spec import JobSpec
from noisefa.service.checksums import CorruptObjectError, file_digest, get_verified_file
from noisefa.service.models import Artifact, CheckpointUpload
from noisefa.service.repositories import execution as repo
from noisefa.service.repositories.artifacts import recorded_digest
from noisefa.service.storage import Storage

log = logging.getLogger(__name__)

CONTENT_TYPES = {
    ".json": "application/json",
    ".jsonl": "application/x-ndjson",
    ".safetensors": "application/octet-stream",
    ".png": "image/png",
    ".md": "text/markdown; charset=utf-8",
}


def upload_artifact(
    attempt: repo.Attempt,
    sessions: sessionmaker[Session],
    storage: Storage,
    path: Path,
    name: str,
) -> bool:
    """Store ``path`` as the job's artifact ``name``; False when the attempt's lease is lost.

    The digest is read from the local file just before the upload (the engine writes each
    file completely, by rename, before handing it over), the object is written atomically by
    the storage backend, then the row records both.
    """
    key = repo.artifact_key(attempt.project_id, attempt.job_id, name)
    digest = file_digest(path)
    storage.put_file(key, path)
    content_type = CONTENT_TYPES.get(path.suffix, "application/octet-stream")
    with sessions() as session:
        return repo.record_artifact(
            session, attempt, name, key, digest.size, content_type, sha256=digest.sha256
        )


def download_checkpoint(
    storage: Storage, artifact: Artifact | CheckpointUpload, path: Path
) -> None:
    """Download a checkpoint artifact (or uploaded checkpoint) to ``path`` only if intact.

    :class:`CorruptCheckpointError` naming the artifact (never a path or key) when the object
    is damaged or gone.
    """
    try:
        get_verified_file(storage, artifact.storage_key, path, recorded_digest(artifact))
    except FileNotFoundError as error:
        raise CorruptCheckpointError(
            f"checkpoint {artifact.name} is missing from storage"
        ) from error
    except CorruptObjectError as error:
        raise CorruptCheckpointError(
            f"checkpoint {artifact.name} is damaged in storage ({error})"
        ) from error


def init_checkpoint_path(out_dir: Path, init: Artifact | CheckpointUpload) -> Path:
    """Where the ``init_from`` checkpoint ``init`` is put in an attempt's folder: its file
    name (``checkpoints/<file>`` of a job, ``checkpoint:<id>`` of an upload, with ``-`` for
    the ``:`` that is no portable file name character)."""
    return out_dir / "init" / init.name.rsplit("/", 1)[-1].replace(":", "-")


def missing_init_message(init_from: str, purpose: str) -> str:
    """Why ``init_from`` gives nothing to ``purpose`` (``start from``, ``evaluate``): the
    upload is gone, or the job has no final checkpoint (not succeeded, or not this
    project's)."""
    if checkpoint_upload_id(init_from) is not None:
        return f"init_from: {init_from} is no longer a checkpoint of this project"
    return f"init_from: job {init_from} has no final checkpoint to {purpose}"


def fetch_resume_checkpoint(
    attempt: repo.Attempt, sessions: sessionmaker[Session], storage: Storage, out_dir: Path
) -> str | None:
    """Download the job's newest intact stored checkpoint into ``out_dir``; its name, or None
    when the job has none (a first attempt).

    Each damaged one passed over is logged and recorded as a ``checkpoint_skipped`` event.
    :class:`CorruptCheckpointError` when none is intact: the job cannot resume.
    """
    with sessions() as session:
        stored = repo.checkpoint_artifacts(session, attempt.job_id)
    for artifact in stored:
        try:
            download_checkpoint(storage, artifact, out_dir / artifact.name)
        except CorruptCheckpointError as error:
            log.warning("job %s: skipping a stored checkpoint: %s", attempt.job_id, error)
            with sessions() as session:
                repo.record_checkpoint_skipped(session, attempt, artifact.name, str(error))
            continue
        return artifact.name
    if stored:
        names = ", ".join(artifact.name for artifact in stored)
        raise CorruptCheckpointError(
            f"none of the job's {len(stored)} stored checkpoints is intact ({names}); "
            "it cannot resume"
        )
    return None


@dataclass(frozen=True)
class CheckpointRetention:
    """Which stored checkpoints a job keeps: the newest ``keep_last`` and each phase's final
    one (``finals``, file names), by the engine's rule (:func:`names_to_prune`)."""

    keep_last: int
    finals: frozenset[str]

    @classmethod
    def of(cls, spec: JobSpec, keep_last: int) -> CheckpointRetention:
        """The retention of a job with ``spec``, keeping ``keep_last`` besides the finals."""
        return cls(keep_last=keep_last, finals=frozenset(final_checkpoint_names(spec)))


def prune_stored_checkpoints(
    attempt: repo.Attempt,
    sessions: sessionmaker[Session],
    storage: Storage,
    retention: CheckpointRetention,
) -> bool:
    """Delete the job's stored checkpoints that ``retention`` does not keep, newest written
    first; False when the attempt's lease is lost.

    Rows go first, objects after: a crash in between leaves an unlisted object, never a
    listed artifact that cannot be downloaded.
    """
    with sessions() as session:
        stored = repo.checkpoint_artifacts(session, attempt.job_id)
        keep = {a.name for a in stored if a.name.rsplit("/", 1)[-1] in retention.finals}
        doomed = set(names_to_prune([a.name for a in stored], keep, retention.keep_last))
        if not doomed:
            return True
        if not repo.delete_artifacts(session, attempt, doomed):
            return False
    for artifact in stored:
        if artifact.name in doomed:
            try:
                storage.delete(artifact.storage_key)
            except Exception:  # an orphan object costs space, not correctness
                log.exception("job %s: could not delete %s", attempt.job_id, artifact.name)
    return True
