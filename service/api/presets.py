"""``/v1/presets``: the engine's ready experiment bodies, to send to ``POST /v1/jobs`` as is,
each marked with whether this deployment can run it (and which datasets it lacks)."""

from __future__ import annotations

from fastapi import APIRouter

from ..presets import presets_with_availability
from ..schemas import PresetList, PresetOut
from .deps import CurrentProject, SessionDep, SettingsDep
from .routing import SessionReleasingRoute

router = APIRouter(prefix="/v1/presets", tags=["presets"], route_class=SessionReleasingRoute)


@router.get("", summary="List experiment presets")
def list_presets(project: CurrentProject, session: SessionDep, settings: SettingsDep) -> PresetList:
    """The paper's studies as experiment bodies, every hyperparameter written out; one
    marked ``available: false`` names in ``missing_datasets`` the built-in sets this
    deployment's workers lack (submitting it answers 422 naming them)."""
    return PresetList(
        items=[PresetOut(**entry) for entry in presets_with_availability(session, settings)]
    )
