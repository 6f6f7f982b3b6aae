"""docker-compose.yml agrees with the settings: every NOISEFA_* variable it sets is a
Settings field, and the API and the workers see the same database, broker and storage."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from noisefa.service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SHARED = ("NOISEFA_DATABASE_URL", "NOISEFA_BROKER_URL", "NOISEFA_STORAGE_URL")


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the KEY=value form
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def test_compose_has_every_production_service(services):
    assert {"api", "worker", "postgres", "redis", "minio", "minio-setup", "migrate"} <= set(
        services
    )
    for name in ("api", "worker", "postgres", "redis", "minio"):
        assert "healthcheck" in services[name], f"{name} has no health check"


def test_every_noisefa_variable_is_a_setting(services):
    fields = {f"NOISEFA_{name.upper()}" for name in Settings.model_fields}
    for name, service in services.items():
        unknown = {key for key in _env(service) if key.startswith("NOISEFA_")} - fields
        assert not unknown, f"{name} sets variables Settings does not read: {sorted(unknown)}"


def test_api_and_worker_share_database_broker_and_storage(services):
    api, worker, migrate = (_env(services[n]) for n in ("api", "worker", "migrate"))
    for key in (*SHARED, "NOISEFA_S3_ENDPOINT_URL"):
        assert key in api, f"api does not set {key}"
        assert api[key] == worker[key], f"api and worker disagree on {key}"
    assert migrate["NOISEFA_DATABASE_URL"] == api["NOISEFA_DATABASE_URL"]
    assert api["NOISEFA_DATABASE_URL"].startswith("postgresql")
    assert api["NOISEFA_BROKER_URL"].startswith("redis://redis:")
    assert api["NOISEFA_STORAGE_URL"].startswith("s3://")


def test_storage_bucket_is_created_and_migrations_run_before_the_api(services):
    bucket = _env(services["api"])["NOISEFA_STORAGE_URL"].removeprefix("s3://").split("/")[0]
    setup = " ".join(services["minio-setup"]["entrypoint"])
    assert f"local/{bucket}" in setup
    assert services["migrate"]["command"][:3] == ["noisefa", "db", "upgrade"]
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"


def test_worker_reserves_a_gpu_and_consumes_the_gpu_queue(services):
    worker = services["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert "gpu" in worker["command"][worker["command"].index("--queues") + 1].split(",")


def test_no_secret_is_written_in_the_compose_file():
    text = (ROOT / "docker-compose.yml").read_text()
    keys = re.finditer(r"^\s*[A-Z_]*(PASSWORD|SECRET)[A-Z_]*:\s*(\S+)", text, re.MULTILINE)
    for match in keys:
        assert match.group(2).startswith("${"), f"hard-coded secret: {match.group(0).strip()}"
