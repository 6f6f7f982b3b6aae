"""The ``noisefa`` console script: one verb per module in :mod:`noisefa.commands`.

Each command module exposes ``register(subparsers)``, which adds its parser and sets
``func(args) -> int`` (``worker``'s never returns: it ends the process itself). Command
modules import heavy stacks (torch, FastAPI) inside their ``func``, so ``noisefa --help``
and light verbs start fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import __version__

COMMAND_MODULES = ("run", "evaluate", "compare", "serve", "worker", "db", "keys", "demo", "remote")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every command module's verbs."""
    parser = argparse.ArgumentParser(
        prog="noisefa",
        description="Feedback alignment with random-noise pretraining, as a training service.",
    )
    parser.add_argument("--version", action="version", version=f"noisefa {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="Debug logging.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"noisefa.commands.{name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # One INFO line per HTTP request drowns the output of the HTTP verbs.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
