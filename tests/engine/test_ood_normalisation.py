"""OOD evaluation with the model's own input normalisation (``normalize: model | own``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from safetensors import safe_open
from safetensors.torch import save_file

from noisefa.engine.checkpoint import (
    METADATA_KEY,
    InputNormalisation,
    load_checkpoint,
    model_from_checkpoint,
)
from noisefa.engine.contract.bodies import parse_job
from noisefa.engine.datasets import Dataset, load_dataset
from noisefa.engine.images import fit_inputs
from noisefa.engine.metrics import evaluate
from noisefa.engine.ood import NO_RECORD_NOTE, evaluate_checkpoint
from noisefa.engine.renormalise import inputs_for_model
from noisefa.engine.run import run_job


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_spec):
    """A BP model trained 3 epochs on digits: its final checkpoint and result."""
    folder = tmp_path_factory.mktemp("trained")
    spec = small_spec(model={"rule": "bp"}, pretrain=None, train={"epochs": 3})
    result = run_job(spec, folder)
    return folder / result["final_checkpoint"], result


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def evaluate_body(**fields):
    return parse_job(
        {"kind": "evaluate", "init_from": "x", "shifts": {"rotate": [0]}, "device": "cpu"} | fields
    )


def raw_pixels(data, x: torch.Tensor) -> torch.Tensor:
    """``x`` (standardised with ``data``'s statistics) back on the [0, 1] pixel scale."""
    return x * data.norm_std[0] + data.norm_mean[0]


def write_npz(path, x_train, y_train, x_test, y_test):
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    np.savez(path, **{key: value.numpy() for key, value in arrays.items()})
    return path


def test_digits_statistics_are_those_of_its_pixels_on_the_unit_scale(digits):
    raw_train = raw_pixels(digits, digits.x_train)
    assert raw_train.min().item() == pytest.approx(0.0, abs=1e-5)
    assert raw_train.max().item() == pytest.approx(1.0, abs=1e-5)  # 16/16
    assert raw_train.mean().item() == pytest.approx(digits.norm_mean[0], abs=1e-5)
    assert digits.norm_mean[0] == pytest.approx(0.3, abs=0.02)  # ~4.9 of 16 counts


def test_a_checkpoint_records_the_normalisation_it_trained_with(trained, digits):
    checkpoint, _ = trained
    assert load_checkpoint(checkpoint).normalisation == InputNormalisation(
        digits.norm_mean, digits.norm_std, (64,)
    )


def test_model_normalisation_on_the_training_sets_test_split_is_plain_test_accuracy(
    trained, tmp_path
):
    checkpoint, result = trained
    out = evaluate_checkpoint(evaluate_body(), checkpoint, tmp_path)
    assert out["normalize"] == "model" and "notes" not in out
    (cell,) = out["evaluations"]
    assert cell["accuracy"] == result["final_metrics"]["test_accuracy"]


def test_model_and_own_differ_on_a_dataset_with_other_statistics(trained, digits, tmp_path):
    checkpoint, result = trained
    plain = result["final_metrics"]["test_accuracy"]
    # The same digits, dimmer and on a grey background: other mean and std.
    shifted = raw_pixels(digits, digits.x_test) * 0.5 + 0.4
    path = write_npz(tmp_path / "s.npz", shifted, digits.y_test, shifted, digits.y_test)
    files = {"upload:s": path}
    cells = {}
    for normalize in ("model", "own"):
        spec = evaluate_body(datasets=["upload:s"], normalize=normalize)
        out = evaluate_checkpoint(spec, checkpoint, tmp_path / normalize, dataset_files=files)
        assert out["normalize"] == normalize
        (cell,) = out["evaluations"]
        cells[normalize] = cell["accuracy"]
    # "own" standardises the shift away: the digits are back as the model knows them.
    assert cells["own"] > plain - 0.05
    # "model" feeds the shifted pixels with the model's statistics, as computed by hand.
    model = model_from_checkpoint(checkpoint)
    by_hand = (shifted - digits.norm_mean[0]) / digits.norm_std[0]
    assert cells["model"] == evaluate(model, by_hand, digits.y_test, 4096)[1]
    assert cells["model"] < cells["own"] - 0.1


def test_model_normalisation_undoes_an_uploads_own_statistics(trained, digits, tmp_path):
    """Digit pixels uploaded on the [0, 1] scale: standardised with their own statistics, then
    back to raw and standardised with the model's, they are the model's test inputs again."""
    checkpoint, result = trained
    path = write_npz(
        tmp_path / "raw.npz",
        raw_pixels(digits, digits.x_train),
        digits.y_train,
        raw_pixels(digits, digits.x_test),
        digits.y_test,
    )
    spec = evaluate_body(datasets=["upload:raw"])
    out = evaluate_checkpoint(spec, checkpoint, tmp_path, dataset_files={"upload:raw": path})
    (cell,) = out["evaluations"]
    plain = result["final_metrics"]["test_accuracy"]
    assert abs(cell["accuracy"] - plain) <= 1 / len(digits.y_test)


def test_a_checkpoint_without_the_record_falls_back_to_own_with_a_note(trained, tmp_path):
    checkpoint, result = trained
    with safe_open(str(checkpoint), framework="pt") as handle:
        meta = json.loads(handle.metadata()[METADATA_KEY])
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    del meta["input_normalisation"]  # as written before checkpoints recorded it
    old = tmp_path / "old.safetensors"
    save_file(tensors, str(old), metadata={METADATA_KEY: json.dumps(meta)})
    assert load_checkpoint(old).normalisation is None
    out = evaluate_checkpoint(evaluate_body(), old, tmp_path / "out")
    assert out["normalize"] == "own"
    assert out["notes"] == [NO_RECORD_NOTE]
    (cell,) = out["evaluations"]
    assert cell["accuracy"] == result["final_metrics"]["test_accuracy"]


def test_normalize_defaults_to_model_and_refuses_other_values():
    assert evaluate_body().normalize == "model"
    with pytest.raises(ValidationError) as info:
        evaluate_body(normalize="raw")
    assert info.value.errors()[0]["loc"] == ("normalize",)


def test_per_channel_statistics_are_undone_before_resizing_and_the_models_applied_after():
    """A 3-channel 4×4 set into a 1-channel 2×2 model: raw values are averaged and resized,
    then standardised with the model's single mean and std."""
    raw = torch.rand(5, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.6, 0.7)
    own = (raw - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    data = Dataset("rgb", own, torch.zeros(5).long(), own, torch.zeros(5).long(), 2, mean, std)
    model = InputNormalisation((0.25,), (0.4,), (1, 2, 2))
    fitted = inputs_for_model(data, own, (1, 2, 2), model)
    expected = (fit_inputs(raw, (1, 2, 2)) - 0.25) / 0.4
    assert torch.allclose(fitted, expected, atol=1e-5)
    # Without a record (or with "own") the inputs are only resized.
    assert torch.equal(inputs_for_model(data, own, (1, 2, 2), None), fit_inputs(own, (1, 2, 2)))
