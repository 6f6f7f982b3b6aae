"""``noisefa run SPEC --out DIR``: run one job locally, with a progress bar.

Re-running into the same folder resumes from its last checkpoint; a folder holding another
spec's checkpoints is refused. Limits, data folder and downloading come from the same
``NOISEFA_*`` settings as the service's (``--data-dir`` overrides the folder). User errors
(bad settings, bad spec, missing dataset, foreign checkpoint) exit with code 2 and a message
on stderr, never a traceback. Ctrl-C stops gracefully: the loop writes a checkpoint and the
next run resumes from it.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from noisefa.engine.callbacks import RunCallbacks

if TYPE_CHECKING:
    from noisefa.engine.contract.limits import Limits

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class ProgressBarCallbacks(RunCallbacks):
    """A tqdm bar per phase; Ctrl-C sets a flag the loop polls, so it stops at a checkpoint."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.stop_requested = False
        self.bar: Any = None

    def on_phase_start(self, phase: str, epochs: int, steps_per_epoch: int) -> None:
        from tqdm import tqdm

        self.close()
        self.bar = tqdm(
            total=epochs * steps_per_epoch, desc=phase, unit="step", disable=not self.enabled
        )

    def on_progress(self, phase: str, epoch: int, step: int, steps_per_epoch: int) -> None:
        self.bar.n = (epoch - 1) * steps_per_epoch + step
        if step == steps_per_epoch or step % 20 == 0:
            self.bar.refresh()

    def on_epoch_end(self, phase: str, epoch: int, metrics: dict[str, float]) -> None:
        if self.bar is not None and "train_loss" in metrics:
            shown = {"loss": f"{metrics['train_loss']:.3f}"}
            if "test_accuracy" in metrics:
                shown["test_acc"] = f"{metrics['test_accuracy']:.3f}"
            self.bar.set_postfix(shown, refresh=True)

    def should_stop(self) -> bool:
        return self.stop_requested

    def request_stop(self) -> None:
        """Ask the loop to stop at the next step (from the SIGINT handler)."""
        self.stop_requested = True

    def close(self) -> None:
        """Close the current bar, if any."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def add_local_arguments(parser: argparse.ArgumentParser, what: str, label: str) -> None:
    """The arguments of a verb that runs a body in this process (``run``, ``evaluate``): the
    body file, ``--out``, ``--device`` and ``--data-dir``."""
    parser.add_argument(what, type=Path, help=f"{label} file (.json, .yaml or .yml).")
    parser.add_argument("--out", type=Path, required=True, help="Output folder.")
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda", "auto"),
        default=None,
        help=f"Override the {what}'s device.",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="Folder of torchvision datasets (default: $NOISEFA_DATA_DIR, else "
        "~/.cache/noisefa/data).",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``run`` verb."""
    parser = subparsers.add_parser(
        "run",
        help="Run a job locally (resumes when DIR holds its checkpoint).",
        description="Run a job spec locally and write metrics, checkpoints and result.json.",
    )
    add_local_arguments(parser, "spec", "Job spec")
    parser.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")
    parser.set_defaults(func=run_command)


def format_validation_error(error: Exception) -> str:
    """One line per invalid field: ``field.path: message``."""
    lines = []
    for item in error.errors():  # type: ignore[attr-defined]
        where = ".".join(str(part) for part in item["loc"]) or "spec"
        lines.append(f"  {where}: {item['msg']}")
    return "invalid spec:\n" + "\n".join(lines)


def load_body(path: Path, parse: Callable[[Any, Limits], Any], limits: Limits, what: str) -> Any:
    """The body in ``path`` (JSON or YAML) validated by ``parse``; None once the reason it is
    refused has been printed on stderr (the caller exits with :data:`EXIT_USAGE`)."""
    import yaml
    from pydantic import ValidationError

    from noisefa.engine.spec_files import read_spec_file

    try:
        raw = read_spec_file(path)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        print(f"error: cannot read {what} {path}: {exc}", file=sys.stderr)
        return None
    try:
        return parse(raw, limits)
    except ValidationError as exc:
        print(f"error: {format_validation_error(exc)}", file=sys.stderr)
        return None


def run_command(args: argparse.Namespace) -> int:
    """Validate the spec, run the job, print where the results are."""
    from noisefa.engine.contract.errors import EngineError, RunStopped
    from noisefa.engine.contract.spec import parse_spec
    from noisefa.engine.process_choices import apply_settings
    from noisefa.engine.run import run_job

    from .settings import load_settings

    settings = load_settings()
    spec = load_body(args.spec, parse_spec, settings.limits, "spec")
    if spec is None:
        return EXIT_USAGE
    apply_settings(settings)

    callbacks = ProgressBarCallbacks(enabled=not args.no_progress)
    previous = signal.signal(signal.SIGINT, lambda *_: callbacks.request_stop())
    result, failure = None, None
    try:
        result = run_job(
            spec,
            args.out,
            device=args.device,
            callbacks=callbacks,
            data_dir=args.data_dir or settings.data_dir,
            download=settings.download,
        )
    except EngineError as exc:
        failure = (f"error: {exc}", EXIT_USAGE)
    except RunStopped:
        failure = (f"stopped; rerun the same command to resume from {args.out}", EXIT_INTERRUPTED)
    finally:
        callbacks.close()  # before any message, so the bar does not overwrite it
        signal.signal(signal.SIGINT, previous)
    if failure is not None:
        print(failure[0], file=sys.stderr)
        return failure[1]
    final = result["final_metrics"]
    shown = {k: round(v, 4) for k, v in final.items() if "/" not in k}
    print(json.dumps({"out": str(args.out), "final_metrics": shown}, indent=2))
    return 0
