"""Database engine and sessions, built from settings: one code path for Postgres and SQLite.

SQLite (the embedded default) is shared by the API threads and a worker process, so it runs
in WAL mode with a busy timeout; Postgres gets ``pool_pre_ping`` so a restarted server costs
one reconnect instead of a failed request.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from .settings import Settings

SQLITE_BUSY_TIMEOUT_MS = 30_000


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets readers run beside the writer; busy_timeout waits instead of failing."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(
    url: str, *, pool_size: int = 10, max_overflow: int = 20, pool_timeout_s: float = 10.0
) -> Engine:
    """An engine for ``url`` with the options its backend needs (pool sizes: Postgres only)."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # The API serves requests from a thread pool: room for a burst without waiting on the pool.
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout_s,
    )


def engine_from_settings(settings: Settings) -> Engine:
    """The engine for the settings' database (creating the SQLite folder when needed)."""
    url = settings.resolved_database_url
    if url.startswith("sqlite") and settings.database_url is None:
        settings.home.mkdir(parents=True, exist_ok=True)
    return make_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout_s=settings.db_pool_timeout_s,
    )


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit (responses read them)."""
    return sessionmaker(bind=engine, expire_on_commit=False)
