"""Live event streams at scale: many open streams share one poller per API process, hold no
database connection while they wait, are capped per project, and give their slot back when
the client leaves. Real uvicorn on a loopback port, real databases."""

from __future__ import annotations

import asyncio
import json
from contextlib import ExitStack

import httpx

from noisefa.service.app import create_app
from noisefa.service.event_hub import EventHub
from noisefa.service.repositories import execution, running
from noisefa.testing.http import serve_in_thread
from noisefa.testing.specs import pretrain_spec
from noisefa.testing.waiting import wait_for

STREAMS = 50
ANSWER_DEADLINE_S = 5.0  # generous: an API that answers at all answers far sooner
STREAM_DEADLINE_S = 30.0
# The hub's read and one request may hold a connection at the moment the pool is looked at;
# a stream that held one while waiting would put STREAMS here.
MOST_CONNECTIONS_IN_USE = 4


async def read_stream(http: httpx.AsyncClient, url: str, first_event: asyncio.Event) -> list:
    """``(id, event, data)`` of every message of one stream until the server ends it."""
    messages, current = [], {}
    async with http.stream("GET", url) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if not line:
                if "event" in current:
                    messages.append((int(current["id"]), current["event"], current["data"]))
                    first_event.set()
                current = {}
            elif line.startswith(("id: ", "event: ", "data: ")):
                field, _, value = line.partition(": ")
                current[field] = json.loads(value) if field == "data" else value
    return messages


def run_to_the_end(sessions, job_id: str) -> None:
    """Act as a worker: start the job, report progress, succeed."""
    with sessions() as session:
        attempt = execution.start_attempt(session, job_id)
        running.report_progress(session, attempt, {"phase": "pretrain", "epoch": 1})
        execution.finish(session, attempt, "succeeded")


async def open_many_streams(app, base_url: str, headers: dict, job_id: str) -> list[list]:
    limits = httpx.Limits(max_connections=STREAMS + 4)
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, limits=limits, timeout=STREAM_DEADLINE_S
    ) as http:
        opened = [asyncio.Event() for _ in range(STREAMS)]
        url = f"/v1/jobs/{job_id}/events"
        streams = [asyncio.create_task(read_stream(http, url, event)) for event in opened]
        waiting = asyncio.gather(*(event.wait() for event in opened))
        await asyncio.wait_for(waiting, STREAM_DEADLINE_S)

        for path in (f"/v1/jobs/{job_id}", "/healthz"):
            response = await http.get(path, timeout=ANSWER_DEADLINE_S)
            assert response.status_code == 200, path
        assert app.state.engine.pool.checkedout() <= MOST_CONNECTIONS_IN_USE

        await asyncio.to_thread(run_to_the_end, app.state.sessionmaker, job_id)
        return await asyncio.wait_for(asyncio.gather(*streams), STREAM_DEADLINE_S)


def test_many_streams_leave_the_api_responsive_and_each_gets_every_new_event(app, headers):
    with serve_in_thread(app) as base_url:
        job = httpx.post(f"{base_url}/v1/jobs", json=pretrain_spec(), headers=headers)
        results = asyncio.run(open_many_streams(app, base_url, headers, job.json()["id"]))

    first = results[0]
    assert [(kind, data.get("state")) for _, kind, data in first] == [
        ("state", "queued"),
        ("state", "running"),
        ("progress", None),
        ("state", "succeeded"),
    ]
    assert [event_id for event_id, _, _ in first] == sorted({event_id for event_id, _, _ in first})
    assert all(messages == first for messages in results), "a stream lost or repeated an event"


def test_streams_past_the_project_cap_are_refused_and_a_closed_one_frees_its_slot(
    settings, headers, other_headers
):
    capped = create_app(settings.model_copy(update={"max_streams_per_project": 2}))
    with serve_in_thread(capped) as base_url, httpx.Client(base_url=base_url, timeout=10) as http:
        job_id = http.post("/v1/jobs", json=pretrain_spec(), headers=headers).json()["id"]
        url = f"/v1/jobs/{job_id}/events"
        with ExitStack() as open_streams:
            for _ in range(2):
                stream = open_streams.enter_context(http.stream("GET", url, headers=headers))
                assert stream.status_code == 200
            refused = http.get(url, headers=headers)
            assert refused.status_code == 429
            assert refused.headers["content-type"] == "application/problem+json"
            assert "max_streams_per_project" in refused.json()["detail"]
            assert refused.headers["retry-after"].isdigit()
            other_job = http.post("/v1/jobs", json=pretrain_spec(), headers=other_headers)
            other_url = f"/v1/jobs/{other_job.json()['id']}/events"
            with http.stream("GET", other_url, headers=other_headers) as other:
                assert other.status_code == 200, "the cap is per project"

        def both_slots_free() -> bool:
            with ExitStack() as reopened:
                codes = [
                    reopened.enter_context(http.stream("GET", url, headers=headers)).status_code
                    for _ in range(2)
                ]
            return codes == [200, 200]

        wait_for(both_slots_free, STREAM_DEADLINE_S, "the closed streams' slots to be freed")


async def fill_a_listener(app, job_id: str, queue_events: int):
    hub = EventHub(app.state.sessionmaker, poll_s=0.05, queue_events=queue_events)
    hub.start()
    try:
        listener = hub.subscribe(job_id)
        hub.follow(listener, 0)
        deadline = asyncio.get_running_loop().time() + STREAM_DEADLINE_S
        while not listener.dropped:
            assert asyncio.get_running_loop().time() < deadline, "the listener was not dropped"
            await asyncio.sleep(0.05)
        return listener
    finally:
        await hub.stop()


def test_a_listener_a_whole_queue_behind_is_dropped_not_grown(app, client, session, headers):
    job_id = client.post("/v1/jobs", json=pretrain_spec(), headers=headers).json()["id"]
    attempt = execution.start_attempt(session, job_id)
    for epoch in (1, 2):
        running.report_progress(session, attempt, {"phase": "pretrain", "epoch": epoch})
    # 4 events (queued, running, 2 × progress) for a queue of 2, and nobody reading it.
    listener = asyncio.run(fill_a_listener(app, job_id, queue_events=2))
    assert listener.queue.qsize() == 2
    assert [listener.queue.get_nowait().data.get("state") for _ in range(2)] == [
        "queued",
        "running",
    ]
