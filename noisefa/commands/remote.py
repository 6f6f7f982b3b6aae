"""CLI verbs that drive a running noisefa server over HTTP, for shells and pipelines.

``submit``, ``status``, ``ls``, ``logs``, ``metrics``, ``cancel``, ``download`` and
``datasets``. Every verb takes ``--json`` for scripts. Exit codes: 0 success (for
``submit --wait``: only when the job succeeded), 1 job failed, 3 job cancelled,
4 the server refused the request or could not be reached.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

from noisefa.engine.contract.checkpoint_format import CHECKPOINT_PREFIX
from noisefa.engine.contract.states import JobState

EXIT_FAILED = 1
EXIT_CANCELLED = 3
EXIT_API_ERROR = 4
STATE_EXIT = {
    JobState.SUCCEEDED: 0,
    JobState.FAILED: EXIT_FAILED,
    JobState.CANCELLED: EXIT_CANCELLED,
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the HTTP verbs to the ``noisefa`` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="Server URL (default $NOISEFA_URL or 127.0.0.1:8000).")
    common.add_argument("--api-key", help="API key (default $NOISEFA_API_KEY or the key file).")
    common.add_argument("--json", action="store_true", help="Machine-readable JSON output.")

    p = subparsers.add_parser(
        "submit",
        parents=[common],
        help="Submit a job spec (JSON/YAML); a local checkpoint file in `init_from` is "
        "uploaded first and named `checkpoint:<id>`.",
    )
    p.add_argument("spec", type=Path)
    p.add_argument("--wait", action="store_true", help="Follow the job until it ends.")
    p.add_argument("--idempotency-key", help="Resubmitting with the same key returns one job.")
    p.add_argument("--timeout", type=float, help="Give up waiting after this many seconds.")
    p.set_defaults(func=_guard(_submit))

    p = subparsers.add_parser("status", parents=[common], help="Show one job.")
    p.add_argument("job_id")
    p.set_defaults(func=_guard(_status))

    p = subparsers.add_parser("ls", parents=[common], help="List the project's jobs.")
    p.add_argument("--state")
    p.add_argument("--kind")
    p.add_argument("--limit", type=int, default=50, help="At most this many jobs.")
    p.set_defaults(func=_guard(_ls))

    p = subparsers.add_parser("logs", parents=[common], help="Show a job's events.")
    p.add_argument("job_id")
    p.add_argument("--follow", "-f", action="store_true", help="Keep streaming until it ends.")
    p.set_defaults(func=_guard(_logs))

    p = subparsers.add_parser("metrics", parents=[common], help="Print a job's metrics.")
    p.add_argument("job_id")
    p.add_argument("--name", help="Only this metric, e.g. test_accuracy.")
    p.add_argument("--phase", choices=["pretrain", "train"])
    p.add_argument("--csv", action="store_true", help="CSV with a header row.")
    p.set_defaults(func=_guard(_metrics))

    p = subparsers.add_parser("cancel", parents=[common], help="Cancel a job.")
    p.add_argument("job_id")
    p.set_defaults(func=_guard(_cancel))

    p = subparsers.add_parser("download", parents=[common], help="Download a job's artifact.")
    p.add_argument("job_id")
    p.add_argument("name", help="Artifact name, e.g. result.json (see `status`).")
    p.add_argument("--out", type=Path, default=Path("."), help="File or folder to write.")
    p.set_defaults(func=_guard(_download))

    p = subparsers.add_parser("datasets", parents=[common], help="List or upload datasets.")
    p.add_argument("action", nargs="?", choices=["upload"], help="`upload PATH` an .npz.")
    p.add_argument("path", nargs="?", type=Path)
    p.set_defaults(func=_guard(_datasets))


def _guard(verb):
    """Run a verb with a client; turn API and connection errors into a message + exit 4."""

    def run(args: argparse.Namespace) -> int:
        from noisefa.client import ApiError, Client

        client = Client(args.url, args.api_key)
        try:
            return verb(client, args)
        except ApiError as err:
            if args.json:
                print(json.dumps({"status": err.status, "problem": err.problem}))
            else:
                print(f"error: {err}", file=sys.stderr)
                for item in err.problem.get("errors") or []:
                    print(f"  {item.get('field')}: {item.get('message')}", file=sys.stderr)
            return EXIT_API_ERROR
        finally:
            client.close()

    return run


def _print(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if args.json else text)


def _job_line(job: dict[str, Any]) -> str:
    return f"{job['id']}  {job['kind']:<9} {job['state']:<10} {_where(job.get('progress'))}"


def _where(progress: dict[str, Any] | None) -> str:
    """Where a job stands: an experiment's runs ended of all, else its phase's epoch of all."""
    if not progress:
        return ""
    phase = progress.get("phase") or ""
    if "children_total" in progress:
        return f"{phase} {progress.get('children_done', 0)}/{progress['children_total']} runs"
    if progress.get("epochs") is not None:
        return f"{phase} {progress.get('epoch')}/{progress['epochs']}"
    return phase


def _submit(client, args: argparse.Namespace) -> int:
    from noisefa.engine.spec_files import read_spec_file

    spec = read_spec_file(args.spec)
    local = _local_checkpoint(spec.get("init_from"), args.spec.parent)
    if local is not None:  # upload it, then start from the upload
        key = f"{args.idempotency_key}:init_from" if args.idempotency_key else None
        spec["init_from"] = client.upload_checkpoint(local, idempotency_key=key)["name"]
    job = client.submit(spec, idempotency_key=args.idempotency_key)
    if not args.wait:
        _print(args, job, job["id"])
        return 0
    job = _follow(client, job["id"], args)
    _print(args, job, _job_summary(job))
    return STATE_EXIT.get(job["state"], EXIT_FAILED)


def _local_checkpoint(init_from: Any, spec_folder: Path) -> Path | None:
    """The local checkpoint file ``init_from`` names (as given, or beside the spec file);
    None for a job id, ``checkpoint:<id>`` or no ``init_from``."""
    if not isinstance(init_from, str) or init_from.startswith(CHECKPOINT_PREFIX):
        return None
    for path in (Path(init_from), spec_folder / init_from):
        if path.is_file():
            return path
    return None


def _follow(client, job_id: str, args: argparse.Namespace) -> dict[str, Any]:
    """Wait for the job with a progress bar (epoch, loss, accuracy, alignment angle)."""
    from tqdm import tqdm

    bar = tqdm(total=0, unit="epoch", disable=args.json, file=sys.stderr, desc=job_id[:8])
    last_metrics: dict[str, float] = {}

    def on_event(event: dict[str, Any]) -> None:
        data = event.get("data") or {}
        if event["event"] == "progress" and data.get("epochs"):
            bar.total = data["epochs"]
            bar.set_description(f"{job_id[:8]} {data.get('phase')}")
            bar.n = max(0, int(data.get("epoch", 1)) - 1)
            bar.refresh()
        elif event["event"] == "metrics":
            last_metrics.update(data.get("metrics") or {})
            bar.n = int(data.get("epoch", 0))
            bar.set_postfix(_postfix(last_metrics), refresh=True)

    try:
        return client.wait(job_id, timeout=args.timeout, on_progress=on_event)
    finally:
        bar.close()


def _postfix(metrics: dict[str, float]) -> dict[str, str]:
    shown = {}
    for key, label in (("train_loss", "loss"), ("test_accuracy", "acc")):
        if key in metrics:
            shown[label] = f"{metrics[key]:.3f}"
    angles = sorted(k for k in metrics if k.startswith("alignment_angle/"))
    if angles:
        shown["angle"] = f"{metrics[angles[-1]]:.1f}°"
    return shown


def _job_summary(job: dict[str, Any]) -> str:
    lines = [_job_line(job)]
    if job.get("error"):
        lines.append(f"error: {job['error'].get('reason')}: {job['error'].get('message')}")
    final = (job.get("result") or {}).get("final_metrics") or {}
    for name in ("test_accuracy", "test_loss", "train_loss"):
        if name in final:
            lines.append(f"{name}: {final[name]:.4f}")
    return "\n".join(lines)


def _status(client, args: argparse.Namespace) -> int:
    job = client.get(args.job_id)
    artifacts = client.artifacts(args.job_id)
    names = "\n".join(f"  {a['name']} ({a['size']} bytes)" for a in artifacts)
    _print(
        args,
        {**job, "artifacts": artifacts},
        _job_summary(job) + (f"\nartifacts:\n{names}" if names else ""),
    )
    return 0


def _ls(client, args: argparse.Namespace) -> int:
    jobs = []
    for job in client.list(state=args.state, kind=args.kind):
        jobs.append(job)
        if len(jobs) >= args.limit:
            break
    _print(args, jobs, "\n".join(_job_line(j) for j in jobs) or "no jobs")
    return 0


def _logs(client, args: argparse.Namespace) -> int:
    if not args.follow:
        job = client.get(args.job_id)
        _print(args, job, _job_summary(job))
        return 0
    for event in client.events(args.job_id):
        if args.json:
            print(json.dumps(event), flush=True)
        else:
            print(f"[{event['event']}] {json.dumps(event['data'])}", flush=True)
    return 0


def _metrics(client, args: argparse.Namespace) -> int:
    points = client.metrics(args.job_id, name=args.name, phase=args.phase)
    if args.json:
        print(json.dumps(points))
    elif args.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=["name", "phase", "epoch", "value"])
        writer.writeheader()
        writer.writerows({k: p[k] for k in writer.fieldnames} for p in points)
    else:
        for p in points:
            print(f"{p['phase']:<9} {p['epoch']:>4}  {p['name']:<22} {p['value']:.6g}")
    return 0


def _cancel(client, args: argparse.Namespace) -> int:
    job = client.cancel(args.job_id)
    _print(args, job, _job_line(job))
    return 0


def _download(client, args: argparse.Namespace) -> int:
    path = client.download(args.job_id, args.name, args.out)
    _print(args, {"path": str(path)}, str(path))
    return 0


def _datasets(client, args: argparse.Namespace) -> int:
    if args.action == "upload":
        if args.path is None:
            print("error: datasets upload needs a PATH to an .npz file", file=sys.stderr)
            return 2
        record = client.upload_dataset(args.path)
        _print(args, record, record.get("name") or record.get("id", ""))
        return 0
    items = client.datasets()
    _print(args, items, "\n".join(str(item.get("name")) for item in items))
    return 0
