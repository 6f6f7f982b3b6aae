"""Projects and their API keys. Keys are shown once; only their SHA-256 is stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..models import ApiKey, Project

KEY_PREFIX = "nfa_"


def hash_key(key: str) -> str:
    """SHA-256 hex of a key: what the database stores and looks keys up by."""
    return hashlib.sha256(key.encode()).hexdigest()


def get_or_create_project(session: Session, name: str) -> Project:
    """The project called ``name``, created when missing (safe against a concurrent create)."""
    project = session.scalar(select(Project).where(Project.name == name))
    if project is not None:
        return project
    try:
        with session.begin_nested():
            project = Project(name=name)
            session.add(project)
    except IntegrityError:
        project = session.scalars(select(Project).where(Project.name == name)).one()
    return project


def create_project_key(session: Session, project_name: str) -> str:
    """Create the project if needed and a new key for it; returns the plaintext key. Commits."""
    project = get_or_create_project(session, project_name)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiKey(project_id=project.id, key_hash=hash_key(key), prefix=key[:12]))
    session.commit()
    return key


def project_for_key(session: Session, key: str) -> Project | None:
    """The project a valid, unrevoked key belongs to; None otherwise."""
    digest = hash_key(key)
    row = session.execute(
        select(ApiKey, Project)
        .join(Project, Project.id == ApiKey.project_id)
        .where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None))
    ).first()
    # The lookup is by hash already; the constant-time compare keeps the check explicit.
    if row is None or not hmac.compare_digest(row.ApiKey.key_hash, digest):
        return None
    return row.Project
