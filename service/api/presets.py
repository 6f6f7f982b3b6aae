"""``/v1/presets``: the engine's ready experiment bodies, to send to ``POST /v1/jobs`` as is."""

from __future__ import annotations

from fastapi import APIRouter

from noisefa.engine.contract.presets import PRESETS

from ..schemas import PresetList, PresetOut
from .deps import CurrentProject

router = APIRouter(prefix="/v1/presets", tags=["presets"])


@router.get("", summary="List experiment presets")
def list_presets(project: CurrentProject) -> PresetList:
    """The paper's studies as experiment bodies, every hyperparameter written out."""
    return PresetList(
        items=[
            PresetOut(
                name=name,
                description=entry["description"],
                body=entry["body"],
                evaluate=entry.get("evaluate"),
            )
            for name, entry in PRESETS.items()
        ]
    )
