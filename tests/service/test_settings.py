"""``Settings``: one class for every setting, the job limits included, refusing pairs that
make no sense."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from noisefa.engine.contract.limits import Limits
from noisefa.service.settings import Settings, settings_error_lines


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``NOISEFA_*`` variable of the outer environment leaks into these tests."""
    for name in list(os.environ):
        if name.startswith("NOISEFA_"):
            monkeypatch.delenv(name)


def refused(**values: object) -> list[str]:
    """The error lines of settings built from ``values``; fails when they are accepted."""
    with pytest.raises(ValidationError) as info:
        Settings(**values)
    return settings_error_lines(info.value)


def test_job_limits_come_from_their_environment_variables(monkeypatch):
    monkeypatch.setenv("NOISEFA_MAX_WIDTH", "12")
    monkeypatch.setenv("NOISEFA_MAX_DEPTH", "3")
    monkeypatch.setenv("NOISEFA_MAX_EXPERIMENT_RUNS", "5")
    limits = Settings().limits
    assert type(limits) is Limits
    assert limits == Limits(max_width=12, max_depth=3, max_experiment_runs=5)


def test_every_limit_is_a_setting_with_the_same_default_and_bounds(monkeypatch):
    assert Settings().limits == Limits()
    for name in Limits.model_fields:  # below every limit's bound (0 conv blocks is allowed)
        monkeypatch.setenv(f"NOISEFA_{name.upper()}", "-1")
    lines = refused()
    assert sorted(line.split(":")[0] for line in lines) == sorted(
        f"NOISEFA_{name.upper()}" for name in Limits.model_fields
    )


def test_the_limits_have_no_environment_reader_of_their_own():
    assert not hasattr(Limits, "from_env")


def test_data_dir_defaults_to_the_user_cache_and_download_is_off():
    settings = Settings()
    assert settings.data_dir == Path.home() / ".cache" / "noisefa" / "data"
    assert settings.download is False


def test_data_dir_and_download_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("NOISEFA_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("NOISEFA_DOWNLOAD", "1")
    settings = Settings()
    assert settings.data_dir == tmp_path
    assert settings.download is True


def test_a_heartbeat_timeout_under_two_heartbeats_is_refused_naming_both_variables():
    (line,) = refused(heartbeat_interval_s=5, heartbeat_timeout_s=9.9)
    assert line.startswith("NOISEFA_HEARTBEAT_TIMEOUT_S: ")
    assert "2 × NOISEFA_HEARTBEAT_INTERVAL_S (5 s)" in line
    assert "(got 9.9)" in line
    accepted = Settings(heartbeat_interval_s=5, heartbeat_timeout_s=10, reaper_interval_s=5)
    assert accepted.heartbeat_timeout_s == 10


def test_a_reaper_that_sweeps_less_often_than_the_timeout_is_refused():
    (line,) = refused(heartbeat_timeout_s=60, reaper_interval_s=60)
    assert line.startswith("NOISEFA_REAPER_INTERVAL_S: ")
    assert "shorter than NOISEFA_HEARTBEAT_TIMEOUT_S (60 s)" in line
    assert Settings(heartbeat_timeout_s=60, reaper_interval_s=59).reaper_interval_s == 59


def test_cross_checks_read_the_environment_too(monkeypatch):
    monkeypatch.setenv("NOISEFA_HEARTBEAT_INTERVAL_S", "30")
    assert Settings().heartbeat_timeout_s == 60  # the default: exactly two intervals, allowed
    monkeypatch.setenv("NOISEFA_HEARTBEAT_INTERVAL_S", "31")
    (line,) = refused()
    assert line.startswith("NOISEFA_HEARTBEAT_TIMEOUT_S: ") and "(got 60.0)" in line


def test_a_bad_value_is_reported_with_its_variable_and_what_was_given(monkeypatch):
    monkeypatch.setenv("NOISEFA_HEARTBEAT_INTERVAL_S", "soon")
    (line,) = refused()
    assert line.startswith("NOISEFA_HEARTBEAT_INTERVAL_S: ") and "(got 'soon')" in line
