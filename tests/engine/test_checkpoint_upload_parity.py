"""The API's torch-free check of uploaded checkpoints (``service/checkpoint_check``) accepts
every checkpoint the engine writes, for every rule, with batch norm and with conv blocks, and
knows the model config by the engine's own field names: when the model grows, these fail."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from noisefa.engine.checkpoint import Progress, save_checkpoint
from noisefa.engine.contract.checkpoint_format import StoredModelConfig
from noisefa.engine.contract.limits import Limits
from noisefa.engine.contract.spec import parse_spec
from noisefa.engine.model import MLP, MLPConfig
from noisefa.engine.rules import RULES
from noisefa.service.checkpoint_check import CheckpointLimits, check_checkpoint

LIMITS = CheckpointLimits(max_header_bytes=1 << 20, limits=Limits())


def test_the_stored_model_config_has_the_engine_s_fields():
    assert set(StoredModelConfig.model_fields) == {f.name for f in dataclasses.fields(MLPConfig)}


def _written(tmp_path: Path, **model) -> Path:
    spec = parse_spec({"kind": "train", "model": model, "train": {"dataset": "digits"}})
    net = MLP(MLPConfig.from_spec(spec.model, (8, 8), 10))
    optimizer = torch.optim.Adam(net.parameters())
    net(torch.randn(4, 8, 8)).sum().backward()
    optimizer.step()  # optimizer state tensors, as a real checkpoint has them
    return save_checkpoint(
        tmp_path / "c.safetensors",
        spec=spec,
        model=net,
        progress=Progress(phase="train", epoch=1),
        optimizer=optimizer,
        generators={"order": torch.Generator().get_state()},
    )


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize(
    "shape", [{"hidden": [6]}, {"hidden": [6, 5], "batch_norm": True}, {"conv": [3], "hidden": [4]}]
)
def test_every_checkpoint_the_engine_writes_passes_the_upload_check(tmp_path, rule, shape):
    path = _written(tmp_path, rule=rule, **shape)
    info = check_checkpoint(path, LIMITS)
    assert info.model_config["rule"] == rule
    assert info.model_config["hidden"] == shape["hidden"]
    assert info.trained_on == "digits"
