"""How an uploaded file (a dataset or a checkpoint) and its row are stored and deleted
together, so a listed upload always has its object and a refused one leaves nothing.

Storing writes the object first, then the row and its ``Idempotency-Key`` record in one
commit; if that commit fails the object is deleted again. Deleting goes the other way, row
first: a failure between the two leaves an unreferenced object (never listed, not counted),
never a listed upload without its file.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import delete
from sqlalchemy.orm import Session

from ..models import Base
from ..storage import Storage


def store_upload(
    session: Session,
    storage: Storage,
    key: str,
    path: Path,
    row: Base,
    key_record: Base | None,
) -> None:
    """Put ``path`` at ``key``, then add ``row`` (and ``key_record``, which refers to it)
    and commit; the object is deleted again if the rows cannot be committed."""
    storage.put_file(key, path)
    try:
        session.add(row)
        session.flush()
        if key_record is not None:
            session.add(key_record)
        session.commit()
    except BaseException:
        session.rollback()
        storage.delete(key)
        raise


def delete_upload_row(session: Session, storage: Storage, model: type[Base], row) -> None:
    """Delete ``row`` of ``model`` (its idempotency keys go with it), commit, then its
    object at ``row.storage_key``."""
    session.execute(
        delete(model).where(model.id == row.id).execution_options(synchronize_session=False)
    )
    session.commit()
    storage.delete(row.storage_key)
