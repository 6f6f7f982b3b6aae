"""A conv network the data cannot hold (more blocks than its images can halve) is refused at
submit as a 422 problem naming ``model.conv``, for built-in datasets, experiment conditions
and uploads alike, and nothing is stored; the most blocks an image allows are taken."""

from __future__ import annotations

import io

import numpy as np
import pytest

from noisefa.testing.specs import experiment_spec, pretrain_spec, train_spec

from .test_input_edges import assert_problem, nothing_stored

TOO_MANY = {"conv": [4, 4, 4, 4], "kernel_size": 3}  # digits is 8×8: three halvings fit


def image_npz(side: int = 8) -> bytes:
    """A two-class upload of (side, side) images."""
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        x_train=rng.normal(size=(20, side, side)).astype(np.float32),
        y_train=np.arange(20) % 2,
        x_test=rng.normal(size=(6, side, side)).astype(np.float32),
        y_test=np.arange(6) % 2,
    )
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (train_spec(model=TOO_MANY), "model.conv"),
        (pretrain_spec(model=TOO_MANY), "model.conv"),
        (
            experiment_spec(train_spec(), conditions={"deep": {"model": TOO_MANY}}),
            "conditions.deep.model.conv",
        ),
    ],
)
def test_more_conv_blocks_than_digits_can_halve_is_a_422_naming_model_conv(
    client, headers, body, field
):
    with nothing_stored(client.app):
        response = client.post("/v1/jobs", json=body, headers=headers)
        problem = assert_problem(response, 422, field)
    message = next(e["message"] for e in problem["errors"] if e["field"] == field)
    assert "at most 3" in message, message
    assert "/" not in message.replace("model.conv", ""), "no server path in the answer"


def test_three_conv_blocks_fit_digits(client, headers):
    body = train_spec(model={"conv": [4, 4, 4], "kernel_size": 3})
    response = client.post("/v1/jobs", json=body, headers=headers)
    assert response.status_code == 202, response.text
    assert response.json()["spec"]["model"]["conv"] == [4, 4, 4]


def test_too_many_conv_blocks_for_an_uploads_images_is_a_422_naming_model_conv(client, headers):
    uploaded = client.post(
        "/v1/datasets", files={"file": ("images.npz", image_npz())}, headers=headers
    )
    assert uploaded.status_code == 201, uploaded.text
    body = {
        "kind": "train",
        "train": {"dataset": uploaded.json()["name"], "epochs": 1},
        "model": TOO_MANY,
    }
    with nothing_stored(client.app):
        response = client.post("/v1/jobs", json=body, headers=headers)
        assert_problem(response, 422, "model.conv")
