"""``noisefa evaluate BODY --out DIR``: evaluate a local checkpoint, as the API's evaluate job.

The body is the API's ``kind: evaluate`` body, except that ``init_from`` names a checkpoint
file (``<run folder>/checkpoints/train-0003.safetensors``; a relative path is relative to the
current folder) instead of a job id. ``DIR`` receives what the job's artifacts hold:
``result.json`` and the accuracy-vs-severity plot. Settings, data folder and downloading are
``noisefa run``'s; user errors exit with code 2 and a message, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .run import EXIT_USAGE, add_local_arguments, load_body


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` verb."""
    parser = subparsers.add_parser(
        "evaluate",
        help="Evaluate a local checkpoint against datasets and shifts.",
        description="Run an evaluate body (init_from: a checkpoint file) locally and write "
        "result.json and the accuracy-vs-severity plot.",
    )
    add_local_arguments(parser, "body", "Evaluate body")
    parser.set_defaults(func=evaluate_command)


def evaluate_command(args: argparse.Namespace) -> int:
    """Validate the body, evaluate its checkpoint, print the result's cells."""
    from noisefa.engine.contract.bodies import parse_job
    from noisefa.engine.contract.errors import EngineError
    from noisefa.engine.contract.evaluate_spec import EvaluateSpec
    from noisefa.engine.ood import evaluate_checkpoint

    from .settings import load_settings

    settings = load_settings()
    spec = load_body(args.body, parse_job, settings.limits, "body")
    if spec is None:
        return EXIT_USAGE
    if not isinstance(spec, EvaluateSpec):
        print(
            f"error: kind: noisefa evaluate takes kind 'evaluate', got {spec.kind!r} "
            "(run it with noisefa run)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    checkpoint = Path(spec.init_from)
    if checkpoint.is_dir():
        print(
            f"error: init_from: {checkpoint} is a folder; name a checkpoint file "
            "(a run's checkpoints/*.safetensors)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        result = evaluate_checkpoint(
            spec,
            checkpoint,
            args.out,
            device=args.device,
            data_dir=args.data_dir or settings.data_dir,
            download=settings.download,
        )
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    shown = {key: result[key] for key in ("normalize", "notes") if key in result}
    shown["evaluations"] = result["evaluations"]
    print(json.dumps({"out": str(args.out), **shown}, indent=2))
    return 0
