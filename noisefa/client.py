"""A typed Python client for the noisefa HTTP API, for notebooks, scripts and pipelines.

    from noisefa.client import Client
    client = Client()                      # NOISEFA_URL / NOISEFA_API_KEY, or the embedded key
    job = client.submit({"kind": "train", "train": {"dataset": "digits"}})
    job = client.wait(job["id"])
    points = client.metrics(job["id"], name="test_accuracy")

Every error the server answers raises :class:`ApiError` carrying the RFC 9457 problem.
Connection errors and 503s are retried with backoff, but only for calls that are safe to
repeat: reads, cancel (idempotent by design) and submissions that carry an idempotency key.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from noisefa.engine.contract.states import TERMINAL_STATES

log = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:8000"
Job = dict[str, Any]


class ApiError(Exception):
    """The server answered with an error; ``problem`` is its RFC 9457 body."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        detail = problem.get("detail") or problem.get("title") or "request failed"
        super().__init__(f"HTTP {status}: {detail}")


class ServiceUnavailable(ApiError):
    """No server answered at the URL (or it kept answering 503) after the retries."""


class WaitTimeout(TimeoutError):
    """``wait`` ran past its timeout before the job ended."""


def default_api_key() -> str | None:
    """``NOISEFA_API_KEY``, else the key the embedded ``noisefa serve`` stored on first start."""
    key = os.environ.get("NOISEFA_API_KEY")
    if key:
        return key
    home = Path(os.environ.get("NOISEFA_HOME", ".noisefa"))
    key_file = home / "api_key"
    return key_file.read_text().strip() if key_file.is_file() else None


class Client:
    """Talks to one noisefa server with one project's API key."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 4,
        backoff_s: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = (base_url or os.environ.get("NOISEFA_URL") or DEFAULT_URL).rstrip("/")
        key = api_key or default_api_key()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.retries = retries
        self.backoff_s = backoff_s
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # -- jobs -------------------------------------------------------------------------------

    def submit(self, spec: dict[str, Any], idempotency_key: str | None = None) -> Job:
        """Submit a job; with ``idempotency_key`` a retried submit returns the same job."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._request(
            "POST", "/v1/jobs", json=spec, headers=headers, retry=idempotency_key is not None
        ).json()

    def get(self, job_id: str) -> Job:
        """The job's current state, progress, result and error."""
        return self._request("GET", f"/v1/jobs/{job_id}").json()

    def list(
        self,
        *,
        state: str | None = None,
        kind: str | None = None,
        created_after: str | None = None,
        created_before: str | None = None,
        parent_id: str | None = None,
        page_size: int = 100,
    ) -> Iterator[Job]:
        """Iterate over the project's jobs, newest first, fetching pages as needed;
        ``parent_id`` lists an experiment's runs."""
        params = {
            "state": state,
            "kind": kind,
            "created_after": created_after,
            "created_before": created_before,
            "parent_id": parent_id,
            "page_size": page_size,
        }
        yield from self._pages("/v1/jobs", {k: v for k, v in params.items() if v is not None})

    def cancel(self, job_id: str) -> Job:
        """Ask the job to stop; a finished job is returned unchanged (idempotent)."""
        return self._request("POST", f"/v1/jobs/{job_id}/cancel", retry=True).json()

    def events(self, job_id: str, last_event_id: str | None = None) -> Iterator[dict[str, Any]]:
        """The job's Server-Sent Events as dicts ``{id, event, data}``, until it ends."""
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        with self._http.stream(
            "GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=None
        ) as response:
            if response.status_code >= 400:
                response.read()
                raise _api_error(response)
            yield from _parse_sse(response.iter_lines())

    def wait(
        self,
        job_id: str,
        timeout: float | None = None,
        on_progress: Callable[[Job], None] | None = None,
        poll_s: float = 1.0,
    ) -> Job:
        """Block until the job ends and return it; follows SSE, falls back to polling."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            for event in self.events(job_id):
                if on_progress is not None:
                    on_progress(event)
                if event["event"] == "state" and event["data"].get("state") in TERMINAL_STATES:
                    return self.get(job_id)
                if deadline is not None and time.monotonic() > deadline:
                    raise WaitTimeout(f"job {job_id} still running after {timeout}s")
        except (httpx.TransportError, ApiError) as err:
            # 503: no stream now; 429: the project's stream cap is reached. Polling works
            # for both.
            if isinstance(err, ApiError) and err.status not in (429, 503):
                raise
            log.info("event stream unavailable (%s); polling instead", err)
        while True:
            job = self.get(job_id)
            if on_progress is not None:
                on_progress({"event": "poll", "data": job})
            if job["state"] in TERMINAL_STATES:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeout(f"job {job_id} still {job['state']} after {timeout}s")
            time.sleep(poll_s)

    def metrics(
        self, job_id: str, name: str | None = None, phase: str | None = None
    ) -> list[dict[str, Any]]:
        """All metric points ``{name, phase, epoch, value}`` of a job, optionally filtered."""
        params = {k: v for k, v in {"name": name, "phase": phase}.items() if v is not None}
        return list(self._pages(f"/v1/jobs/{job_id}/metrics", params))

    def metrics_frame(self, job_id: str, name: str | None = None, phase: str | None = None):
        """The metric points as a pandas DataFrame (needs pandas installed)."""
        import pandas as pd  # optional dependency, imported only when asked for

        return pd.DataFrame(self.metrics(job_id, name=name, phase=phase))

    def artifacts(self, job_id: str) -> list[dict[str, Any]]:
        """The job's artifacts: ``{name, size, content_type, created_at}``."""
        return self._request("GET", f"/v1/jobs/{job_id}/artifacts").json()["items"]

    def download(self, job_id: str, name: str, path: str | Path) -> Path:
        """Stream an artifact to ``path`` (a folder keeps the artifact's base name)."""
        target = Path(path)
        if target.is_dir():
            target = target / Path(name).name
        partial = target.with_name(target.name + ".part")
        with self._http.stream("GET", f"/v1/jobs/{job_id}/artifacts/{name}") as response:
            if response.status_code >= 400:
                response.read()
                raise _api_error(response)
            with partial.open("wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
        partial.replace(target)  # never leave a half-written file under the real name
        return target

    # -- datasets ---------------------------------------------------------------------------

    def datasets(self) -> list[dict[str, Any]]:
        """Built-in datasets and the project's uploads."""
        return self._request("GET", "/v1/datasets").json()["items"]

    def upload_dataset(self, path: str | Path, idempotency_key: str | None = None) -> dict:
        """Upload an ``.npz`` with ``x_train, y_train, x_test, y_test``; returns its record."""
        source = Path(path)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        with source.open("rb") as handle:
            files = {"file": (source.name, handle, "application/octet-stream")}
            return self._request("POST", "/v1/datasets", files=files, headers=headers).json()

    # -- checkpoints ------------------------------------------------------------------------

    def checkpoints(self) -> list[dict[str, Any]]:
        """The project's uploaded checkpoints, newest first."""
        return self._request("GET", "/v1/checkpoints").json()["items"]

    def upload_checkpoint(self, path: str | Path, idempotency_key: str | None = None) -> dict:
        """Upload a ``.safetensors`` checkpoint; returns its record, whose ``name``
        (``checkpoint:<id>``) a train or evaluate job sets as ``init_from``."""
        source = Path(path)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        with source.open("rb") as handle:
            files = {"file": (source.name, handle, "application/octet-stream")}
            return self._request("POST", "/v1/checkpoints", files=files, headers=headers).json()

    # -- plumbing ---------------------------------------------------------------------------

    def _pages(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            page = self._request("GET", path, params={**params, "page_token": token}).json()
            yield from page["items"]
            token = page.get("next_page_token")
            if not token:
                return

    def _request(self, method: str, path: str, *, retry: bool | None = None, **kwargs):
        """Send a request; retry connection errors and 503s when the call is safe to repeat."""
        if "params" in kwargs:
            kwargs["params"] = {k: v for k, v in kwargs["params"].items() if v is not None}
        safe = retry if retry is not None else method == "GET"
        attempts = self.retries + 1 if safe else 1
        for attempt in range(attempts):
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as err:
                if attempt + 1 >= attempts:
                    raise ServiceUnavailable(
                        503,
                        {
                            "title": "Service unavailable",
                            "detail": f"no noisefa server answered at {self.base_url} ({err})",
                        },
                    ) from err
            else:
                if response.status_code != 503 or attempt + 1 >= attempts:
                    if response.status_code >= 400:
                        raise _api_error(response)
                    return response
            time.sleep(self.backoff_s * 2**attempt)
        raise AssertionError("unreachable: the loop returns or raises")


def _api_error(response: httpx.Response) -> ApiError:
    try:
        problem = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        problem = {"title": response.reason_phrase, "detail": response.text[:500]}
    if not isinstance(problem, dict):
        problem = {"title": response.reason_phrase, "detail": str(problem)[:500]}
    cls = ServiceUnavailable if response.status_code == 503 else ApiError
    return cls(response.status_code, problem)


def _parse_sse(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Parse a text/event-stream into ``{id, event, data}`` dicts (data decoded as JSON)."""
    event: dict[str, Any] = {"id": None, "event": "message", "data": []}
    for line in lines:
        if not line:
            if event["data"]:
                text = "\n".join(event["data"])
                try:
                    data = json.loads(text)
                except json.JSONDecodeError:
                    data = text
                yield {"id": event["id"], "event": event["event"], "data": data}
            event = {"id": None, "event": "message", "data": []}
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            event["data"].append(value)
        elif field in ("id", "event"):
            event[field] = value
