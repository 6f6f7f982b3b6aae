"""``noisefa compare``: BP vs FA vs FA with noise pretraining, as a table like the paper's.

Runs every condition × seed locally (each job in its own folder under ``--out``, so an
interrupted comparison resumes), then prints mean ± std over seeds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

EXIT_USAGE = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``compare`` verb."""
    parser = subparsers.add_parser(
        "compare",
        help="BP vs FA vs FA+noise pretraining, printed as a table.",
        description="Train BP, FA and FA with noise pretraining over several seeds.",
    )
    parser.add_argument("--dataset", default="digits", help="Dataset name (default: digits).")
    parser.add_argument("--seeds", type=int, default=3, help="Number of seeds (default: 3).")
    parser.add_argument("--epochs", type=int, default=10, help="Data epochs (default: 10).")
    parser.add_argument(
        "--pretrain-samples",
        type=int,
        default=60_000,
        help="Noise samples for pretraining (default: 60000).",
    )
    parser.add_argument(
        "--target",
        type=float,
        default=0.9,
        help="Accuracy for 'epochs to target'.",
    )
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    parser.add_argument("--data-dir", type=Path, default=None, help="Torchvision data folder.")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="Keep job folders here (default: a temp dir).",
    )
    parser.set_defaults(func=compare_command)


def compare_command(args: argparse.Namespace) -> int:
    """Run the comparison and print the table."""
    import json

    from noisefa.engine.compare import comparison_specs, format_table, summarize
    from noisefa.engine.contract.errors import EngineError
    from noisefa.engine.run import run_job

    if args.seeds < 1 or args.epochs < 1:
        print("error: --seeds and --epochs must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    specs = comparison_specs(
        dataset=args.dataset,
        seeds=list(range(args.seeds)),
        epochs=args.epochs,
        pretrain_samples=args.pretrain_samples,
        device=args.device,
    )
    with tempfile.TemporaryDirectory(prefix="noisefa-compare-") as tmp:
        root = args.out or Path(tmp)
        histories: dict[str, list[list[dict]]] = {}
        try:
            for condition, condition_specs in specs.items():
                histories[condition] = []
                for spec in condition_specs:
                    out = root / condition.replace("+", "_") / f"seed{spec.model.seed}"
                    print(f"running {condition} seed {spec.model.seed}", file=sys.stderr)
                    run_job(spec, out, data_dir=args.data_dir)
                    lines = (out / "metrics.jsonl").read_text().splitlines()
                    histories[condition].append([json.loads(line) for line in lines])
        except EngineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    print(format_table(summarize(histories, target=args.target)))
    return 0
