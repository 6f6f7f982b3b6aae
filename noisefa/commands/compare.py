"""``noisefa compare``: BP vs FA vs FA with noise pretraining, as a table like the paper's.

Runs the ``comparison`` preset (the flags change its dataset, seeds, epochs, noise samples,
target and device) as an experiment in this process: the same expansion, run path and
aggregator as an ``experiment`` job on the service. Each run keeps its folder under
``--out/runs/`` (so an interrupted comparison resumes), the report (``report.json``,
``report.md``, plots) goes into ``--out``, and the table is printed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from noisefa.engine.contract.presets import PRESETS

EXIT_USAGE = 2
PRESET = PRESETS["comparison"]["body"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``compare`` verb; its defaults are the ``comparison`` preset's."""
    train = PRESET["base"]["train"]
    parser = subparsers.add_parser(
        "compare",
        help="BP vs FA vs FA+noise pretraining, printed as a table.",
        description="Run the comparison preset locally over several seeds; print its report.",
    )
    parser.add_argument(
        "--dataset", default=train["dataset"], help="Dataset name (default: %(default)s)."
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=len(PRESET["seeds"]),
        help="Number of seeds (default: %(default)s).",
    )
    parser.add_argument(
        "--epochs", type=int, default=train["epochs"], help="Data epochs (default: %(default)s)."
    )
    parser.add_argument(
        "--pretrain-samples",
        type=int,
        default=PRESET["conditions"]["fa+noise"]["pretrain"]["samples_per_epoch"],
        help="Noise samples for pretraining (default: %(default)s).",
    )
    parser.add_argument(
        "--target",
        type=float,
        default=PRESET["target_accuracy"],
        help="Accuracy for 'epochs to target' (default: %(default)s).",
    )
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="Torchvision data folder (default: $NOISEFA_DATA_DIR, else ~/.cache/noisefa/data).",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="Keep the runs and the report here (default: a temp dir, removed afterwards).",
    )
    parser.set_defaults(func=compare_command)


def compare_command(args: argparse.Namespace) -> int:
    """Run the comparison experiment locally and print its table."""
    from pydantic import ValidationError

    from noisefa.engine.contract.bodies import parse_job
    from noisefa.engine.contract.errors import EngineError
    from noisefa.engine.contract.presets import comparison_body
    from noisefa.engine.experiment import run_experiment
    from noisefa.engine.process_choices import apply_settings
    from noisefa.engine.report_format import format_table_text

    from .run import format_validation_error
    from .settings import load_settings

    if args.seeds < 1 or args.epochs < 1:
        print("error: --seeds and --epochs must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    body = comparison_body(
        dataset=args.dataset,
        seeds=args.seeds,
        epochs=args.epochs,
        pretrain_samples=args.pretrain_samples,
        target_accuracy=args.target,
        device=args.device,
    )
    settings = load_settings()
    apply_settings(settings)
    limits = settings.limits
    try:
        spec = parse_job(body, limits)
    except ValidationError as exc:
        print(f"error: {format_validation_error(exc)}", file=sys.stderr)
        return EXIT_USAGE
    with tempfile.TemporaryDirectory(prefix="noisefa-compare-") as tmp:
        root = args.out or Path(tmp)
        try:
            report = run_experiment(
                spec,
                root,
                limits=limits,
                data_dir=args.data_dir or settings.data_dir,
                download=settings.download,
                on_child_start=lambda condition, seed: print(
                    f"running {condition} seed {seed}", file=sys.stderr
                ),
            )
        except EngineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    print(format_table_text(report["table"]))
    if args.out is not None:
        print(f"report: {args.out / 'report.md'}", file=sys.stderr)
    return 0
