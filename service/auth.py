"""Bearer API keys: each key belongs to one project, and every query is scoped to it.

Keys are looked up by their SHA-256 (the plaintext is never stored). A missing or wrong key
answers 401 with ``WWW-Authenticate: Bearer``; the key itself never reaches a log line —
refusals are logged with a short fingerprint of its hash, enough to match repeated attempts.
"""

from __future__ import annotations

import logging

from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from .models import Project
from .problems import ProblemError
from .repositories.projects import hash_key, project_for_key

logger = logging.getLogger(__name__)

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="`Authorization: Bearer <key>`; create keys with `noisefa keys create`.",
)


def unauthorized(detail: str) -> ProblemError:
    """The 401 problem, with the challenge header RFC 6750 asks for."""
    return ProblemError(
        401, detail, slug="unauthorized", headers={"WWW-Authenticate": 'Bearer realm="noisefa"'}
    )


def authenticate(session: Session, credentials: HTTPAuthorizationCredentials | None) -> Project:
    """The caller's project, or a 401 problem."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        logger.info("refused a request without a bearer API key")
        raise unauthorized("missing bearer API key (Authorization: Bearer <key>)")
    project = project_for_key(session, credentials.credentials)
    if project is None:
        logger.info("refused API key with hash %s…", hash_key(credentials.credentials)[:8])
        raise unauthorized("invalid or revoked API key")
    logger.debug("authenticated project %s", project.name)
    return project
