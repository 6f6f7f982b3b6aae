"""Checkpoints: complete round trips, loading that never unpickles, ordering, rebuilding."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from noisefa.engine.checkpoint import (
    Progress,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_model_state,
    model_from_checkpoint,
    save_checkpoint,
)
from noisefa.engine.contract.errors import CheckpointError
from noisefa.engine.model import MLP, MLPConfig
from noisefa.engine.run import run_job
from noisefa.engine.trainer import make_optimizer


def train_steps(model, optimizer, generator, steps=3):
    for _ in range(steps):
        x = torch.randn(8, 6, generator=generator)
        y = torch.randint(3, (8,), generator=generator)
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


@pytest.mark.parametrize("optimizer_name", ["adam", "sgd"])
def test_round_trip_restores_weights_feedback_optimizer_and_rng(
    tmp_path, optimizer_name, small_spec
):
    spec = small_spec(pretrain={"optimizer": {"name": optimizer_name, "momentum": 0.9}})
    config = MLPConfig(input_shape=(6,), num_classes=3, hidden=[5], batch_norm=True)
    model = MLP(config)
    optimizer = make_optimizer(spec.pretrain.optimizer, model.parameters())
    generator = torch.Generator().manual_seed(0)
    train_steps(model, optimizer, generator)
    path = save_checkpoint(
        tmp_path / "checkpoints" / "pretrain-0001.safetensors",
        spec=spec,
        model=model,
        optimizer=optimizer,
        progress=Progress(phase="pretrain", epoch=1, history=[{"name": "x", "value": 1.5}]),
        generators={"data": generator.get_state()},
    )
    checkpoint = load_checkpoint(path)
    assert checkpoint.fingerprint == spec.fingerprint() and checkpoint.spec == spec
    assert checkpoint.progress.history == [{"name": "x", "value": 1.5}]

    restored = MLP(checkpoint.model_config)
    load_model_state(restored, checkpoint)
    restored_optimizer = make_optimizer(spec.pretrain.optimizer, restored.parameters())
    checkpoint.load_optimizer(restored_optimizer)
    restored_generator = torch.Generator()
    restored_generator.set_state(checkpoint.tensors["rng.data"])
    assert torch.equal(restored.layers[0].fixed_feedback, model.layers[0].fixed_feedback)
    assert torch.equal(restored.norms[0].running_var, model.norms[0].running_var)

    train_steps(model, optimizer, generator)
    train_steps(restored, restored_optimizer, restored_generator)
    for a, b in zip(model.state_dict().values(), restored.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_loading_refuses_a_pickle_renamed_to_safetensors(tmp_path):
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps({"weight": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match="not a readable safetensors checkpoint"):
        load_checkpoint(path)


def test_loading_refuses_a_safetensors_file_that_is_not_ours(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="not a noisefa checkpoint"):
        load_checkpoint(path)


def test_checkpoint_files_order_by_phase_epoch_and_step(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    names = [
        "train-0002.safetensors",
        "pretrain-0003.safetensors",
        "train-0003-step000010.safetensors",
        "train-0001.safetensors",
        ".tmp.safetensors.tmp",
    ]
    for name in names:
        (folder / name).touch()
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "pretrain-0003.safetensors",
        "train-0001.safetensors",
        "train-0002.safetensors",
        "train-0003-step000010.safetensors",
    ]
    assert latest_checkpoint(tmp_path).name == "train-0003-step000010.safetensors"
    assert latest_checkpoint(tmp_path / "nothing") is None


def test_model_from_checkpoint_rebuilds_the_trained_network_in_eval_mode(tmp_path, small_spec):
    run_job(small_spec(train={"epochs": 1}), tmp_path)
    model = model_from_checkpoint(tmp_path / "checkpoints" / "train-0001.safetensors")
    assert not model.training
    assert model(torch.randn(3, 64)).shape == (3, 10)
