"""``/metrics`` shows every project's job counts, so only a scraper bearing the configured
``NOISEFA_METRICS_TOKEN`` reads it: 404 without a token configured, 401 without the right one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from noisefa.service.app import create_app
from noisefa.service.repositories import execution
from noisefa.testing.db import migrated, new_project_key, settings_for
from noisefa.testing.specs import pretrain_spec

TOKEN = "scrape-token-0123456789abcdef"


@pytest.fixture
def scraped(tmp_path: Path) -> Iterator[TestClient]:
    """An app with a metrics token configured."""
    settings = migrated(settings_for(tmp_path, metrics_token=TOKEN, reaper_enabled=False))
    with TestClient(create_app(settings)) as client:
        yield client


def test_metrics_is_404_problem_json_without_a_token_configured(tmp_path: Path):
    settings = migrated(settings_for(tmp_path, reaper_enabled=False))
    with TestClient(create_app(settings)) as client:
        key = new_project_key(settings)
        for headers in ({}, {"Authorization": f"Bearer {key}"}):
            response = client.get("/metrics", headers=headers)
            assert response.status_code == 404
            assert response.headers["content-type"] == "application/problem+json"
            assert "noisefa_jobs" not in response.text


def test_metrics_is_401_without_the_right_token(scraped: TestClient):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        response = scraped.get("/metrics", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "noisefa_jobs" not in response.text


def test_metrics_count_jobs_by_state_and_time_requests_by_route(scraped: TestClient):
    settings = scraped.app.state.settings
    headers = {"Authorization": f"Bearer {new_project_key(settings)}"}
    job_id = scraped.post("/v1/jobs", json=pretrain_spec(), headers=headers).json()["id"]
    with scraped.app.state.sessionmaker() as session:
        execution.finish(session, execution.start_attempt(session, job_id), "succeeded")
    scraped.get(f"/v1/jobs/{job_id}", headers=headers)
    response = scraped.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert 'noisefa_jobs{state="succeeded"}' in response.text
    assert "noisefa_job_duration_seconds_count" in response.text
    assert 'route="/v1/jobs/{job_id}",status="200"' in response.text


def test_a_short_metrics_token_is_refused_at_start(tmp_path: Path):
    with pytest.raises(ValueError, match="metrics_token"):
        settings_for(tmp_path, metrics_token="short")
