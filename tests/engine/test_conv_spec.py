"""Conv fields of the spec: validated where they are given, naming the field; estimated."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from noisefa.engine.contract.estimates import DatasetSize, Network, builtin_size, estimate_job
from noisefa.engine.contract.limits import Limits
from noisefa.engine.contract.spec import parse_spec


def spec_with(model: dict, dataset: str = "digits", limits: Limits | None = None):
    return parse_spec({"kind": "train", "model": model, "train": {"dataset": dataset}}, limits)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"conv": [4, 4, 4, 4]}, "model.conv: 4 conv blocks are too many for 8×8 inputs"),
        ({"conv": [4], "kernel_size": 4}, "kernel_size: must be odd"),
        ({"conv": [600]}, "model.conv[0]: channels must be in [1, 512]"),
        ({"conv": [2] * 7}, "model.conv: at most 6 conv blocks"),
        ({"conv": [0]}, "greater than or equal to 1"),
        ({"kernel_size": 17}, "less than or equal to 15"),
    ],
)
def test_a_bad_conv_field_is_refused_naming_it(model, message):
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        spec_with(model)


def test_conv_limits_are_settings():
    spec_with({"conv": [600]}, limits=Limits(max_channels=600))
    with pytest.raises(ValidationError, match="at most 1 conv blocks"):
        spec_with({"conv": [2, 2]}, limits=Limits(max_conv_layers=1))


def test_three_blocks_fit_an_8x8_input_and_lenet_fits_fashion_mnist():
    assert spec_with({"conv": [4, 4, 4]}).model.conv == [4, 4, 4]
    assert spec_with({"conv": [6, 16], "hidden": [120, 84]}, "fashion_mnist").model.kernel_size == 5


def test_a_flat_non_square_input_cannot_take_convolutions():
    upload = DatasetSize((10,), 2, 100, 10)
    with pytest.raises(ValueError, match="model.conv: convolutions need image inputs"):
        Network.of(spec_with({"conv": [4]}).model, upload)


def test_lenet_estimate_counts_its_convolutions():
    fashion = builtin_size("fashion_mnist")
    lenet = spec_with({"conv": [6, 16], "hidden": [120, 84]}, "fashion_mnist")
    net = Network.of(lenet.model, fashion)
    conv_macs = 6 * 1 * 25 * 28 * 28 + 16 * 6 * 25 * 14 * 14
    assert net.widths == (16 * 7 * 7, 120, 84, 10)
    assert net.macs == conv_macs + 784 * 120 + 120 * 84 + 84 * 10
    assert net.parameters == 6 * 25 + 6 + 16 * 150 + 16 + 784 * 120 + 120 + 120 * 84 + 84 + 850
    mlp = spec_with({"hidden": [120, 84]}, "fashion_mnist")
    sizes = {"fashion_mnist": fashion}
    assert estimate_job(lenet, sizes).compute > estimate_job(mlp, sizes).compute
