"""Apply Alembic migrations programmatically, so no ``alembic.ini`` has to be found at runtime.

``noisefa db upgrade``, the embedded first start and the tests all call these functions.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config

from noisefa import migrations

from .settings import Settings

# Alembic announces each of its plugins at INFO on every run; only migrations are news.
logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at the migrations package and at ``url``."""
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    # ConfigParser interpolates "%", which URL-encoded passwords contain.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Migrate the settings' database up to ``revision``."""
    if settings.database_url is None:
        settings.home.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(settings.resolved_database_url), revision)


def downgrade(settings: Settings, revision: str) -> None:
    """Migrate the settings' database down to ``revision`` (``base`` drops everything)."""
    command.downgrade(alembic_config(settings.resolved_database_url), revision)
