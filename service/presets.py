"""Which presets this deployment can run as shipped, by the rule that judges a submission.

A preset is available when every dataset its body (and its follow-up ``evaluate`` body)
reads is one :func:`.dataset_access.refused_datasets` lets through, so ``GET /v1/presets``
never advertises ``available: true`` for a body that ``POST /v1/jobs`` then refuses, and an
unavailable one names the same datasets the submit-time 422 does.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from noisefa.engine.contract.bodies import parse_job
from noisefa.engine.contract.presets import PRESETS
from noisefa.engine.contract.references import referenced_datasets

from .dataset_access import refused_datasets
from .settings import Settings


def presets_with_availability(session: Session, settings: Settings) -> list[dict[str, Any]]:
    """Every preset (``name``, ``description``, ``study``, ``body``, ``evaluate``) with
    ``available`` and ``missing_datasets`` (the names this deployment cannot serve, sorted)."""
    listed = []
    for name, entry in PRESETS.items():
        missing = missing_datasets(session, settings, entry["body"])
        if entry.get("evaluate") is not None:
            missing |= missing_datasets(session, settings, entry["evaluate"])
        listed.append(
            {
                "name": name,
                "description": entry["description"],
                "study": entry["study"],
                "body": entry["body"],
                "evaluate": entry.get("evaluate"),
                "available": not missing,
                "missing_datasets": sorted(missing),
            }
        )
    return listed


def missing_datasets(session: Session, settings: Settings, body: dict[str, Any]) -> set[str]:
    """Names of the datasets ``body`` reads that a submission of it would be refused."""
    spec = parse_job(body, settings.limits)
    refused = {field for field, _ in refused_datasets(session, settings, spec)}
    return {name for field, name in referenced_datasets(spec) if field in refused}
