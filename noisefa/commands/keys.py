"""``noisefa keys create --project NAME``: print a new API key (alone on stdout)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``keys create --project NAME``."""
    parser = subparsers.add_parser("keys", help="Manage API keys.")
    verbs = parser.add_subparsers(dest="keys_command", metavar="VERB", required=True)
    create = verbs.add_parser(
        "create", help="Create a key for a project (created if missing) and print it."
    )
    create.add_argument("--project", required=True, help="Project name.")
    create.set_defaults(func=create_key)


def create_key(args: argparse.Namespace) -> int:
    """Create the key; the database must be migrated (``noisefa db upgrade``)."""
    from noisefa.service.db import engine_from_settings, make_sessionmaker
    from noisefa.service.repositories.projects import create_project_key

    from .settings import load_settings

    engine = engine_from_settings(load_settings())
    try:
        with make_sessionmaker(engine)() as session:
            key = create_project_key(session, args.project)
    finally:
        engine.dispose()
    sys.stdout.write(key + "\n")
    return 0
