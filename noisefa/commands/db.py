"""``noisefa db upgrade|downgrade``: apply Alembic migrations to the settings' database."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``db upgrade [REV]`` and ``db downgrade REV``."""
    parser = subparsers.add_parser("db", help="Migrate the database (Alembic).")
    verbs = parser.add_subparsers(dest="db_command", metavar="VERB", required=True)
    up = verbs.add_parser("upgrade", help="Apply migrations up to REV (default head).")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(func=upgrade)
    down = verbs.add_parser("downgrade", help="Revert migrations down to REV (e.g. base).")
    down.add_argument("revision")
    down.set_defaults(func=downgrade)


def upgrade(args: argparse.Namespace) -> int:
    """Migrate up; the settings come from ``NOISEFA_*``."""
    from noisefa.service import migrate

    from .settings import load_settings

    migrate.upgrade(load_settings(), args.revision)
    return 0


def downgrade(args: argparse.Namespace) -> int:
    """Migrate down."""
    from noisefa.service import migrate

    from .settings import load_settings

    migrate.downgrade(load_settings(), args.revision)
    return 0
