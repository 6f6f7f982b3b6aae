"""Where runs resume: each run's newest intact checkpoint of its own spec, and one common
point for the runs of a stack, so that resuming stays exact."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from .checkpoint import (
    CHECKPOINT_DIR,
    Checkpoint,
    checkpoint_order,
    list_checkpoints,
    load_checkpoint,
)
from .contract.errors import CheckpointError, CorruptCheckpointError
from .contract.spec import JobSpec
from .member import Member

log = logging.getLogger(__name__)


def common_resume(
    members: Sequence[Member], resumes: Sequence[Checkpoint | None]
) -> list[Checkpoint | None]:
    """Resume every run of one call from the earliest point they all reached, where the runs
    that are ahead still hold a checkpoint of it.

    A stack killed between two members' checkpoint writes leaves them an epoch apart.
    Resumed from there they would train in separate stacks, and a stack's ``bmm`` may round
    differently from a single run's, so they would end a few ulps away from an uninterrupted
    stack. Rewinding the runs that are ahead (their previous checkpoint is still on disk:
    retention keeps the newest two) makes them retrain that epoch together, exactly.
    """
    reached = [resume.path for resume in resumes if resume is not None]
    if len({path.name for path in reached}) <= 1:
        return list(resumes)
    earliest = min(reached, key=lambda path: checkpoint_order(path) or (0, 0, 0)).name
    aligned = []
    for member, resume in zip(members, resumes, strict=True):
        behind = member.out_dir / CHECKPOINT_DIR / earliest
        if resume is not None and resume.path.name != earliest and behind.is_file():
            try:
                resume = load_checkpoint(behind)
            except CorruptCheckpointError as exc:
                log.warning("not rewinding to a damaged checkpoint: %s", exc)
        aligned.append(resume)
    return aligned


def find_resume(spec: JobSpec, out_dir: Path) -> Checkpoint | None:
    """The newest intact checkpoint in ``out_dir`` if it is this spec's; refuse another spec's.

    Damaged checkpoints are skipped, newest first; :class:`CorruptCheckpointError` when every
    one is. Messages name files, not the folder (for a worker it is a server path).
    """
    paths = list_checkpoints(out_dir) if out_dir.is_dir() else []
    for path in reversed(paths):
        try:
            checkpoint = load_checkpoint(path)
        except CorruptCheckpointError as exc:
            log.warning("skipping a damaged checkpoint: %s", exc)
            continue
        if checkpoint.fingerprint != spec.fingerprint():
            raise CheckpointError(
                f"the output folder holds checkpoints of a different spec (fingerprint "
                f"{checkpoint.fingerprint}, this spec {spec.fingerprint()}); "
                "use another output folder"
            )
        return checkpoint
    if paths:
        raise CorruptCheckpointError(
            f"none of the {len(paths)} checkpoints in the output folder is intact "
            f"({', '.join(path.name for path in paths)}); use another output folder"
        )
    return None
