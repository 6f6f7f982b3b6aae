"""``noisefa db upgrade|downgrade`` and ``noisefa keys create`` against real settings."""

from __future__ import annotations

import argparse

from sqlalchemy import inspect

from noisefa.commands import db, keys
from noisefa.service.db import engine_from_settings, make_sessionmaker
from noisefa.service.repositories.projects import project_for_key
from noisefa.service.settings import get_settings


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    db.register(subparsers)
    keys.register(subparsers)
    args = parser.parse_args(argv)
    return args.func(args)


def test_db_upgrade_then_keys_create_prints_a_working_key(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NOISEFA_HOME", str(tmp_path / "home"))
    for name in ("DATABASE_URL", "BROKER_URL", "STORAGE_URL"):
        monkeypatch.delenv(f"NOISEFA_{name}", raising=False)
    assert run("db", "upgrade") == 0
    assert run("keys", "create", "--project", "alpha") == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("nfa_") and "\n" not in key
    engine = engine_from_settings(get_settings())
    try:
        with make_sessionmaker(engine)() as session:
            assert project_for_key(session, key).name == "alpha"
            assert project_for_key(session, key + "x") is None
        assert run("db", "downgrade", "base") == 0
        assert inspect(engine).get_table_names() == ["alembic_version"]
    finally:
        engine.dispose()
