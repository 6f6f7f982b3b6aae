"""Alembic environment: the URL comes from the config (set by ``service.migrate``) or settings."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from noisefa.service.db import engine_from_settings, make_engine
from noisefa.service.models import Base
from noisefa.service.settings import get_settings

config = context.config
target_metadata = Base.metadata


def database_url() -> str:
    """The config's ``sqlalchemy.url`` when given, else the settings' database."""
    return config.get_main_option("sqlalchemy.url") or get_settings().resolved_database_url


def database_engine() -> Engine:
    """An engine for the config's URL, else for the settings (creating the embedded home)."""
    url = config.get_main_option("sqlalchemy.url")
    return make_engine(url) if url else engine_from_settings(get_settings())


def run_migrations_offline() -> None:
    """Emit SQL to stdout instead of connecting (``alembic upgrade --sql``)."""
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Connect and migrate; batch mode lets SQLite alter tables by copying them."""
    engine = database_engine()
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=connection.dialect.name == "sqlite",
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
