"""``noisefa demo``: the paper's comparison (BP, FA, FA + noise pretraining) over HTTP.

Uses a running service if one answers at ``--url``, else starts the embedded one
(``noisefa serve`` on a free port, logging to ``NOISEFA_HOME/demo-server.log``) for the
duration of the demo. Submits every condition × seed as a job, shows live progress, prints
the comparison table, and says where the final checkpoints are.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from .processes import answers, free_port, spawn_noisefa, stop_process, wait_until_answers

log = logging.getLogger(__name__)

DATASET = "digits"
SERVER_START_TIMEOUT_S = 120.0
SERVER_STOP_TIMEOUT_S = 30.0
POLL_S = 0.5
BAR_UNITS = 1000
BAR_FORMAT = "{{desc}} |{{bar:24}}| {{percentage:3.0f}}% {status}"
TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
Submitted = tuple[str, int, dict[str, Any]]  # (condition, seed, job)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` verb."""
    parser = subparsers.add_parser(
        "demo", help="Run BP vs FA vs FA+noise on digits through the service."
    )
    parser.add_argument(
        "--url",
        default="http://127.0.0.1:8000",
        help="Use the service at this URL if one answers; else start an embedded one.",
    )
    parser.add_argument(
        "--seeds", type=int, default=3, help="Seeds per condition (default: %(default)s)."
    )
    parser.add_argument(
        "--epochs", type=int, default=3, help="Training epochs per job (default: %(default)s)."
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the comparison; 0 when every job succeeded, 1 otherwise."""
    if args.seeds < 1 or args.epochs < 1:
        raise SystemExit("--seeds and --epochs must be >= 1")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # else one line per request
    from noisefa.client import Client

    with service(args.url) as (url, storage_url), Client(url) as client:
        return compare(client, seeds=args.seeds, epochs=args.epochs, storage_url=storage_url)


@contextmanager
def service(url: str) -> Iterator[tuple[str, str | None]]:
    """Yield (url, local storage URL or None) of a service; start one if none answers."""
    if answers(url):
        log.info("using the service at %s", url)
        yield url, None
        return
    from noisefa.service.settings import get_settings

    settings = get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    server_log = settings.home / "demo-server.log"
    local_url = f"http://127.0.0.1:{free_port()}"
    log.info("no service at %s; starting one at %s (log: %s)", url, local_url, server_log)
    with server_log.open("ab") as out:
        # A first start prints the new key there; the client reads the key file.
        server = spawn_noisefa(
            ["serve", "--port", local_url.rsplit(":", 1)[1]], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        try:
            wait_until_answers(local_url, server, SERVER_START_TIMEOUT_S)
        except (RuntimeError, TimeoutError) as exc:
            raise SystemExit(
                f"the embedded service did not start ({exc}); see {server_log}"
            ) from None
        if not os.environ.get("NOISEFA_API_KEY") and not settings.key_file.is_file():
            raise SystemExit(f"the embedded service wrote no key file at {settings.key_file}")
        yield local_url, settings.resolved_storage_url
    finally:
        stop_process(server, sig=signal.SIGINT, timeout_s=SERVER_STOP_TIMEOUT_S)


def compare(client: Any, *, seeds: int, epochs: int, storage_url: str | None) -> int:
    """Submit every condition × seed, follow them, print the table and the checkpoints."""
    from noisefa.engine.compare import comparison_specs, format_table, summarize

    specs = comparison_specs(dataset=DATASET, seeds=list(range(seeds)), epochs=epochs)
    jobs: list[Submitted] = []
    for condition, condition_specs in specs.items():
        for seed, spec in enumerate(condition_specs):
            job = client.submit(spec.model_dump(mode="json", exclude_none=True))
            jobs.append((condition, seed, job))
    print(f"{len(jobs)} jobs on {client.base_url}: {', '.join(specs)} × {seeds} seeds, {DATASET}")
    finished = _follow(client, jobs)

    histories: dict[str, list[list[dict[str, Any]]]] = {condition: [] for condition in specs}
    failed = []
    for condition, seed, job in finished:
        if job["state"] == "succeeded":
            histories[condition].append(client.metrics(job["id"]))
        else:
            error = job.get("error") or {}
            failed.append(f"{condition} seed {seed}: {job['state']} {error.get('message') or ''}")
    print()
    print(format_table(summarize({c: h for c, h in histories.items() if h})))
    print()
    _print_checkpoints(finished, storage_url)
    for line in failed:
        print(f"not succeeded: {line}")
    return 1 if failed else 0


def _follow(client: Any, jobs: list[Submitted]) -> list[Submitted]:
    """Poll every job until all have ended, with one progress bar per job."""
    from tqdm import tqdm

    bars = [
        tqdm(
            total=BAR_UNITS,
            desc=f"{condition:>8} seed {seed}",
            position=i,
            bar_format=BAR_FORMAT.format(status="queued"),
        )
        for i, (condition, seed, _) in enumerate(jobs)
    ]
    current = [job for _, _, job in jobs]
    try:
        while True:
            for i, job in enumerate(current):
                if job["state"] not in TERMINAL_STATES:
                    current[i] = job = client.get(job["id"])
                _draw(bars[i], job)
            if all(job["state"] in TERMINAL_STATES for job in current):
                break
            time.sleep(POLL_S)
    finally:
        for bar in bars:
            bar.close()
    return [(cond, seed, job) for (cond, seed, _), job in zip(jobs, current, strict=True)]


def _draw(bar: Any, job: dict[str, Any]) -> None:
    """How far the job is over all of its phases, and where it is now."""
    progress = job.get("progress") or {}
    phases = [name for name in ("pretrain", "train") if job["spec"].get(name) is not None]
    ended = job["state"] in TERMINAL_STATES
    done = 1.0 if ended else 0.0
    if not ended and progress.get("steps") and progress.get("phase") in phases:
        in_phase = (progress["epoch"] - 1) * progress["steps"] + progress["step"]
        fraction = in_phase / (progress["epochs"] * progress["steps"])
        done = (phases.index(progress["phase"]) + fraction) / len(phases)
    bar.n = round(done * BAR_UNITS)
    where = ""
    if progress and not ended:
        where = f" {progress['phase']} epoch {progress['epoch']}/{progress['epochs']}"
    # tqdm's own postfix comes with a leading comma; the status is part of the format instead.
    bar.bar_format = BAR_FORMAT.format(status=job["state"] + where)
    bar.refresh()


def _print_checkpoints(finished: list[Submitted], storage_url: str | None) -> None:
    """Where each final checkpoint is: a local file, else how to download it."""
    root = None
    if storage_url and storage_url.startswith("file://"):
        root = Path(unquote(urlparse(storage_url).path))
    print("final checkpoints" + (f" (object storage {storage_url})" if storage_url else "") + ":")
    for condition, seed, job in finished:
        name = (job.get("result") or {}).get("final_checkpoint")
        if not name:
            continue
        # Local storage keys are <project id>/jobs/<job id>/<artifact name>.
        found = sorted(root.glob(f"*/jobs/{job['id']}/{name}")) if root else []
        where = str(found[0]) if found else f"noisefa download {job['id']} {name}"
        print(f"  {condition:>8} seed {seed}: {where}")
