"""Every limit is a setting, and going over one is a 4xx problem that names it."""

from __future__ import annotations

import pytest

from noisefa.testing.specs import pretrain_spec, train_spec


def submit(client, headers, spec):
    return client.post("/v1/jobs", json=spec, headers=headers)


@pytest.mark.parametrize(
    ("setting", "limit", "spec", "field"),
    [
        ("max_depth", 2, train_spec(model={"hidden": [4, 4, 4]}), "model.hidden"),
        ("max_width", 16, train_spec(model={"hidden": [4, 17]}), "model.hidden[1]"),
        ("max_epochs", 3, train_spec(epochs=4), "train.epochs"),
        ("max_epochs", 3, pretrain_spec(epochs=4), "pretrain.epochs"),
        (
            "max_samples_per_epoch",
            1000,
            {"kind": "pretrain", "pretrain": {"dataset": "digits", "samples_per_epoch": 1001}},
            "pretrain.samples_per_epoch",
        ),
    ],
)
def test_a_spec_over_a_limit_is_a_422_naming_the_field_and_the_limit(
    client, headers, settings, monkeypatch, setting, limit, spec, field
):
    monkeypatch.setattr(settings, setting, limit)
    response = submit(client, headers, spec)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    error = response.json()["errors"][0]
    assert error["field"] == field
    assert str(limit) in error["message"]


def test_a_spec_at_every_limit_is_accepted(client, headers, settings, monkeypatch):
    for setting, limit in (("max_depth", 2), ("max_width", 16), ("max_epochs", 3)):
        monkeypatch.setattr(settings, setting, limit)
    monkeypatch.setattr(settings, "max_samples_per_epoch", 1000)
    spec = train_spec(epochs=3, model={"hidden": [16, 16]})
    spec["pretrain"] = {"epochs": 3, "samples_per_epoch": 1000}
    assert submit(client, headers, spec).status_code == 202


def test_a_body_over_max_body_bytes_is_a_413_naming_the_setting(client, headers, settings):
    padding = "x" * settings.max_body_bytes
    response = submit(client, headers, pretrain_spec(padding=padding))
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert "max_body_bytes" in response.json()["detail"]


def test_too_many_unfinished_jobs_is_a_429_naming_the_setting(
    client, headers, settings, monkeypatch
):
    monkeypatch.setattr(settings, "max_concurrent_jobs", 1)
    assert submit(client, headers, pretrain_spec()).status_code == 202
    refused = submit(client, headers, pretrain_spec())
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert "max_concurrent_jobs" in refused.json()["detail"]
    listed = client.get("/v1/jobs", headers=headers).json()["items"]
    cancelled = client.post(f"/v1/jobs/{listed[0]['id']}/cancel", headers=headers)
    assert cancelled.json()["state"] == "cancelled"
    assert submit(client, headers, pretrain_spec()).status_code == 202  # the slot is free again


def test_a_page_size_over_max_page_size_is_a_422_naming_it(client, headers, settings):
    response = client.get(
        "/v1/jobs", headers=headers, params={"page_size": settings.max_page_size + 1}
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "page_size"
