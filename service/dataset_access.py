"""Which datasets a job may read: the rule the API checks at submit and the worker again.

A caller reaches only what the deployment serves every project, plus its own data:

- a built-in (:mod:`noisefa.engine.contract.catalogue`) whose files some live worker of the
  job's queue holds (or, in the embedded mode and before any worker has registered, the
  data folder itself holds);
- an upload of its project, ``upload:<id>`` (checked by ``submission.check_uploads``);
- ``npz:<absolute path>`` only where the operator lists folders in ``server_data_roots``,
  and then only a regular file inside one of them once every symlink is resolved.

Anything else is refused at submit naming the field, so no job reads a server file and none
fails later on a typo. The worker calls :func:`server_file` again before it reads, so a job
stored before the setting changed cannot read outside today's roots. No message names a
server folder, and about a path outside the roots none says more than that it is refused
(never "missing" rather than "unreadable": that would tell callers which server files exist).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.orm import Session

from noisefa.engine.contract.bodies import JobBody
from noisefa.engine.contract.catalogue import (
    NPZ_PREFIX,
    UPLOAD_PREFIX,
    builtins_on_disk,
    known_datasets,
)
from noisefa.engine.contract.references import referenced_datasets

from .broker import queue_for
from .repositories import workers as worker_repo
from .settings import Settings


class DatasetRefused(ValueError):
    """A dataset name a job may not read; the message is safe to show its caller."""


def server_file(name: str, roots: Sequence[Path]) -> Path:
    """The real file behind ``npz:<path>`` when it lies in one of ``roots``, symlinks
    resolved (read that path, not the name: a link swapped later cannot redirect the read).

    Raises :class:`DatasetRefused` for no roots, a relative path or one with ``..``, a path
    that resolves outside every root, and (inside a root only) a path that is no regular file.
    """
    if not roots:
        raise DatasetRefused(
            "server files are not datasets on this deployment; upload the .npz "
            "(POST /v1/datasets) and name it upload:<id>"
        )
    path = Path(name.removeprefix(NPZ_PREFIX))
    if not path.is_absolute() or ".." in path.parts:
        raise DatasetRefused(f"{NPZ_PREFIX}<path> must be an absolute path without '..'")
    outside = DatasetRefused("the file is not inside a server folder the operator allows")
    try:
        resolved = path.resolve()
        allowed = [root.resolve() for root in roots]
    except (OSError, RuntimeError) as exc:  # a symlink loop, an unreadable folder
        raise outside from exc
    if not any(resolved.is_relative_to(root) for root in allowed):
        raise outside
    if not resolved.is_file():
        raise DatasetRefused("no such file in the allowed server folders")
    return resolved


def servable_builtins(session: Session, settings: Settings, queue: str) -> set[str]:
    """Built-in names a job on ``queue`` can read: every one where missing sets are
    downloaded; else those some live worker of the queue holds; in the embedded mode (its
    worker shares this data folder) or while no live worker consumes the queue, those in
    ``settings.data_dir``."""
    if settings.download:
        return set(known_datasets())
    if not settings.embedded:
        held = worker_repo.datasets_held_on_queue(session, settings.heartbeat_timeout_s, queue)
        if held is not None:
            return held
    return builtins_on_disk(settings.data_dir)


def refused_datasets(session: Session, settings: Settings, spec: JobBody) -> list[tuple[str, str]]:
    """``(field, why)`` for every dataset ``spec`` reads that this deployment does not serve
    it; uploads are left to the upload check (a missing one answers 404, not 422)."""
    refused: list[tuple[str, str]] = []
    servable: set[str] | None = None  # asked once, and only when a built-in is named
    for field, name in referenced_datasets(spec):
        if name.startswith(UPLOAD_PREFIX):
            continue
        if name.startswith(NPZ_PREFIX):
            try:
                server_file(name, settings.server_data_roots)
            except DatasetRefused as refusal:
                refused.append((field, str(refusal)))
        elif name not in known_datasets():
            refused.append((field, _unknown(name, settings)))
        else:
            if servable is None:
                servable = servable_builtins(session, settings, queue_for(spec))
            if name not in servable:
                refused.append(
                    (
                        field,
                        f"built-in dataset {name!r} is unavailable: this deployment's workers "
                        "lack its files; upload it as .npz (POST /v1/datasets) or ask the "
                        "operator to install it",
                    )
                )
    return refused


def _unknown(name: str, settings: Settings) -> str:
    allowed = "upload:<id> of this project's uploads" + (
        f", or {NPZ_PREFIX}<path> of a file in an operator-allowed server folder"
        if settings.server_data_roots
        else ""
    )
    return (
        f"unknown dataset {name!r}; valid built-in names: {', '.join(known_datasets())}; "
        f"or {allowed}"
    )


def without_server_paths(message: str, settings: Settings) -> str:
    """``message`` with this deployment's own folders (data, scratch, home) replaced by their
    setting's name, so a job's error (an engine or torchvision message) shows no server path."""
    folders = {
        "<data_dir>": settings.data_dir,
        "<work_dir>": settings.resolved_work_dir,
        "<home>": settings.home,
    }
    spellings = [
        (str(spelling), label)
        for label, folder in folders.items()
        for spelling in {folder.absolute(), folder.resolve()}
        if spelling != spelling.parent  # never the bare root "/"
    ]
    for spelling, label in sorted(spellings, key=lambda pair: -len(pair[0])):  # deepest first
        message = message.replace(spelling, label)
    return message
