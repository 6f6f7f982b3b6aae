"""Hostile input is refused or harmless: other projects' jobs, path escapes, SQL injection,
key theft from the database or the logs, and pickles."""

from __future__ import annotations

import ast
import hashlib
import logging
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from noisefa.service.models import ApiKey, Job
from noisefa.service.repositories import execution
from noisefa.service.repositories import projects as project_repo
from noisefa.testing.db import new_project_key
from noisefa.testing.specs import pretrain_spec, train_spec

ROOT = Path(__file__).resolve().parents[2]
INJECTIONS = [
    "' OR '1'='1",
    "x'; DROP TABLE jobs; --",
    '" OR ""="',
    "1) OR (1=1",
    "%' OR 1=1 --",
]


def submit(client, headers, spec=None):
    return client.post("/v1/jobs", json=spec or pretrain_spec(), headers=headers)


def test_init_from_another_projects_succeeded_job_is_404(client, headers, other_headers, session):
    source = submit(client, headers).json()["id"]
    attempt = execution.start_attempt(session, source)
    execution.finish(session, attempt, "succeeded", result={"final_checkpoint": "c"})
    stolen = submit(client, other_headers, train_spec(init_from=source))
    assert stolen.status_code == 404
    assert stolen.headers["content-type"] == "application/problem+json"
    assert submit(client, headers, train_spec(init_from=source)).status_code == 202


@pytest.mark.parametrize(
    "name",
    [
        # Literal dot segments are resolved by every client before sending; encoded ones
        # reach the server, which decodes them into the path parameter.
        "%2e%2e",
        "%2e%2e%2f%2e%2e%2fsecret",
        "..%2fapi_keys",
        "a%2F%2e%2e%2F%2e%2e%2Fb",
        "%2Fetc%2Fpasswd",
        "..%5C..%5Cwindows",
        "a%00.json",
        "checkpoints%2F%2e%2Fx",
        "checkpoints//x",
    ],
)
def test_artifact_names_cannot_leave_the_job_folder(client, headers, job_id, name):
    response = client.get(f"/v1/jobs/{job_id}/artifacts/{name}", headers=headers)
    assert response.status_code in (400, 404)
    assert response.headers["content-type"] == "application/problem+json"


@pytest.fixture
def job_id(client, headers) -> str:
    return submit(client, headers).json()["id"]


def test_api_keys_are_stored_only_as_their_sha256(settings, session):
    key = project_repo.create_project_key(session, "hashed-keys")
    rows = session.execute(select(ApiKey)).scalars().all()
    stored = [str(getattr(row, column.key)) for row in rows for column in ApiKey.__table__.c]
    assert not any(key in value or key[len(project_repo.KEY_PREFIX) :] in value for value in stored)
    digest = hashlib.sha256(key.encode()).hexdigest()
    assert session.scalar(select(func.count()).where(ApiKey.key_hash == digest)) == 1


def test_api_keys_are_compared_in_constant_time(session, monkeypatch):
    key = project_repo.create_project_key(session, "constant-time")
    compared = []
    real = project_repo.hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(project_repo.hmac, "compare_digest", spy)
    assert project_repo.project_for_key(session, key) is not None
    assert compared == [(project_repo.hash_key(key), project_repo.hash_key(key))]


def test_no_api_key_reaches_the_logs(client, settings, caplog):
    key = new_project_key(settings)
    wrong = "nfa_" + "w" * 43
    good = {"Authorization": f"Bearer {key}"}
    with caplog.at_level(logging.DEBUG):
        job = submit(client, good).json()["id"]
        client.get(f"/v1/jobs/{job}", headers=good)
        client.get("/v1/jobs/nope", headers=good)
        client.post("/v1/jobs", content=b"{", headers=good)
        client.get("/v1/jobs", headers={"Authorization": f"Bearer {wrong}"})
        client.get("/v1/jobs", headers={"Authorization": f"Basic {key}"})
    logged = "\n".join(
        record.getMessage() + str(record.args) + str(record.exc_text) for record in caplog.records
    )
    ours = [record for record in caplog.records if record.name.startswith("noisefa")]
    assert len(ours) >= 3, "the service logged nothing: the test would prove nothing"
    assert key not in logged and wrong not in logged


def test_sql_injection_in_ids_and_filters_is_harmless(client, headers, session):
    own = submit(client, headers).json()["id"]
    before = session.scalar(select(func.count()).select_from(Job))
    for attack in INJECTIONS:
        assert client.get(f"/v1/jobs/{attack}", headers=headers).status_code == 404
        assert client.post(f"/v1/jobs/{attack}/cancel", headers=headers).status_code == 404
        metrics = client.get(f"/v1/jobs/{own}/metrics", headers=headers, params={"name": attack})
        assert metrics.status_code == 200 and metrics.json()["items"] == []
        phase = client.get(f"/v1/jobs/{own}/metrics", headers=headers, params={"phase": attack})
        assert phase.json()["items"] == []
        for params in ({"state": attack}, {"kind": attack}, {"page_token": attack}):
            listed = client.get("/v1/jobs", headers=headers, params=params)
            assert listed.status_code == 422
            assert listed.headers["content-type"] == "application/problem+json"
        keyed = submit(client, {**headers, "Idempotency-Key": attack})
        assert keyed.status_code == 202
        assert submit(client, {**headers, "Idempotency-Key": attack}).json() == keyed.json()
    listed = client.get("/v1/jobs", headers=headers).json()["items"]
    assert len(listed) == 1 + len(INJECTIONS)
    after = session.scalar(select(func.count()).select_from(Job))
    assert after >= before + len(INJECTIONS)  # the jobs table is still there, and full
    assert session.scalar(text("SELECT count(*) FROM api_keys")) > 0


PICKLE_CALLS = {("torch", "load"), ("pickle", "load"), ("pickle", "loads"), ("dill", "load")}


def _unsafe_loads(path: Path) -> list[str]:
    """Calls that could unpickle: torch.load, pickle.load(s), np.load without allow_pickle=False."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value
        name = (getattr(owner, "id", None), node.func.attr)
        if name in PICKLE_CALLS:
            found.append(f"{path}:{node.lineno} {name[0]}.{name[1]}")
        if name in (("np", "load"), ("numpy", "load")):
            safe = any(
                kw.arg == "allow_pickle"
                and isinstance(kw.value, ast.Constant)
                and kw.value.value is False
                for kw in node.keywords
            )
            if not safe:
                found.append(f"{path}:{node.lineno} np.load without allow_pickle=False")
    return found


def test_no_code_path_unpickles_uploads_or_checkpoints():
    files = [p for folder in ("engine", "service", "worker") for p in (ROOT / folder).rglob("*.py")]
    assert files
    assert [hit for path in files for hit in _unsafe_loads(path)] == []


def test_nul_characters_are_refused_at_the_edge_not_in_the_database(client, headers, job_id):
    for path, params in (
        ("/v1/jobs/abc%00def", {}),
        (f"/v1/jobs/{job_id}/metrics", {"name": "loss\x00"}),
        ("/v1/jobs", {"page_token": "\x00"}),
    ):
        response = client.get(path, headers=headers, params=params)
        assert response.status_code == 400, path
        assert response.headers["content-type"] == "application/problem+json"
    spec = pretrain_spec()
    spec["pretrain"]["dataset"] = "digits\x00"
    refused = submit(client, headers, spec)
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"] == "pretrain.dataset"
