"""``noisefa demo``: the paper's comparison (BP, FA, FA + noise pretraining) over HTTP.

Uses a running service if one answers at ``--url``, else starts the embedded one
(``noisefa serve`` on a free port, logging to ``NOISEFA_HOME/demo-server.log``) for the
duration of the demo. Submits the ``comparison`` preset (on digits, with ``--seeds`` and
``--epochs``) as one ``experiment`` job, shows how many of its runs are done, prints the
table of the experiment's report (the server aggregates; nothing is summarised here), and
says where each run's final checkpoint is.
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

from noisefa.engine.contract.states import TERMINAL_STATES, JobState

from .processes import answers, free_port, spawn_noisefa, stop_process, wait_until_answers

log = logging.getLogger(__name__)

SERVER_START_TIMEOUT_S = 120.0
SERVER_STOP_TIMEOUT_S = 30.0
POLL_S = 0.5
BAR_UNITS = 1000
BAR_FORMAT = "{{desc}} |{{bar:24}}| {{percentage:3.0f}}% {status}"
Job = dict[str, Any]


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
        return run_comparison(client, seeds=args.seeds, epochs=args.epochs, storage_url=storage_url)


@contextmanager
def service(url: str) -> Iterator[tuple[str, str | None]]:
    """Yield (url, local storage URL or None) of a service; start one if none answers."""
    if answers(url):
        log.info("using the service at %s", url)
        yield url, None
        return
    from .settings import load_settings

    settings = load_settings()
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


def run_comparison(client: Any, *, seeds: int, epochs: int, storage_url: str | None) -> int:
    """Submit the comparison experiment, follow it, print its table and the checkpoints."""
    from noisefa.client import ApiError
    from noisefa.engine.contract.presets import comparison_body
    from noisefa.engine.report_format import format_table_text

    body = comparison_body(seeds=seeds, epochs=epochs)  # on the preset's dataset, digits
    try:
        experiment = client.submit(body)
    except ApiError as exc:
        raise SystemExit(f"the service refused the comparison experiment: {exc}") from None
    conditions = list(body["conditions"])
    print(
        f"experiment {experiment['id']} on {client.base_url}: {', '.join(conditions)} "
        f"× {seeds} seeds, {body['base']['train']['dataset']}"
    )
    experiment, runs = _follow(client, experiment, total=len(conditions) * seeds)
    order = {name: i for i, name in enumerate(conditions)}
    runs.sort(key=lambda run: (order.get(run["condition"], len(order)), _seed(run)))
    print()
    if experiment.get("result"):
        print(format_table_text(experiment["result"]["table"]))
        print()
    _print_checkpoints(runs, storage_url)
    failed = [run for run in runs if run["state"] != JobState.SUCCEEDED]
    for run in failed:
        error = run.get("error") or {}
        print(
            f"not succeeded: {run['condition']} seed {_seed(run)}: {run['state']} "
            f"{error.get('message') or ''}"
        )
    if experiment["state"] != JobState.SUCCEEDED:
        error = experiment.get("error") or {}
        print(f"experiment {experiment['state']}: {error.get('message') or ''}")
    return 0 if experiment["state"] == JobState.SUCCEEDED and not failed else 1


def _follow(client: Any, experiment: Job, *, total: int) -> tuple[Job, list[Job]]:
    """Poll the experiment and its runs until it has ended, with one progress bar."""
    from tqdm import tqdm

    bar = tqdm(total=BAR_UNITS, desc="comparison", bar_format=BAR_FORMAT.format(status="queued"))
    try:
        while True:
            runs = list(client.list(parent_id=experiment["id"]))
            _draw(bar, experiment, runs, total)
            if experiment["state"] in TERMINAL_STATES:
                return experiment, runs
            time.sleep(POLL_S)
            experiment = client.get(experiment["id"])
    finally:
        bar.close()


def _draw(bar: Any, experiment: Job, runs: list[Job], total: int) -> None:
    """How far the runs are together, how many have ended, and where a running one is."""
    ended = sum(run["state"] in TERMINAL_STATES for run in runs)
    bar.n = round(sum(_run_fraction(run) for run in runs) / max(total, 1) * BAR_UNITS)
    status = f"{experiment['state']}, {ended}/{total} runs done"
    live = experiment["state"] not in TERMINAL_STATES
    running = [run for run in runs if run.get("progress") and run["state"] == JobState.RUNNING]
    if live and running:
        run, progress = running[0], running[0]["progress"]
        status += (
            f"; {run['condition']} seed {_seed(run)} "
            f"{progress['phase']} epoch {progress['epoch']}/{progress['epochs']}"
        )
    elif live and ended == total:
        status += "; aggregating the report"
    # tqdm's own postfix comes with a leading comma; the status is part of the format instead.
    bar.bar_format = BAR_FORMAT.format(status=status)
    bar.refresh()


def _run_fraction(run: Job) -> float:
    """How far one run is over all of its phases: 1 once it has ended."""
    if run["state"] in TERMINAL_STATES:
        return 1.0
    progress = run.get("progress") or {}
    phases = [name for name in ("pretrain", "train") if run["spec"].get(name) is not None]
    if not progress.get("steps") or progress.get("phase") not in phases:
        return 0.0
    in_phase = (progress["epoch"] - 1) * progress["steps"] + progress["step"]
    fraction = in_phase / (progress["epochs"] * progress["steps"])
    return (phases.index(progress["phase"]) + fraction) / len(phases)


def _seed(run: Job) -> int:
    return run["spec"]["model"]["seed"]


def _print_checkpoints(runs: list[Job], storage_url: str | None) -> None:
    """Where each run's final checkpoint is: a local file, else how to download it."""
    root = None
    if storage_url and storage_url.startswith("file://"):
        root = Path(unquote(urlparse(storage_url).path))
    print("final checkpoints" + (f" (object storage {storage_url})" if storage_url else "") + ":")
    for run in runs:
        name = (run.get("result") or {}).get("final_checkpoint")
        if not name:
            continue
        # Local storage keys are <project id>/jobs/<job id>/<artifact name>.
        found = sorted(root.glob(f"*/jobs/{run['id']}/{name}")) if root else []
        where = str(found[0]) if found else f"noisefa download {run['id']} {name}"
        print(f"  {run['condition']:>8} seed {_seed(run)}: {where}")
