"""Every verb that reads the settings refuses a bad environment the same way: exit code 2,
one ``error: NOISEFA_<NAME>: ...`` line per refused setting on stderr, no traceback, and
nothing started or written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from noisefa.cli import main
from noisefa.commands.processes import free_port

TIMEOUT_S = 120.0
BAD_SETTINGS = {
    "NOISEFA_HEARTBEAT_INTERVAL_S": "5",
    "NOISEFA_HEARTBEAT_TIMEOUT_S": "6",  # under two heartbeats
    "NOISEFA_MAX_WIDTH": "0",
}


def verb_args(verb: str, tmp_path: Path) -> list[str]:
    """The command line of ``verb`` as a user would type it."""
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps({"kind": "train", "model": {"hidden": [8]}, "train": {"dataset": "digits"}})
    )
    return {
        "serve": ["serve", "--port", str(free_port())],
        "worker": ["worker"],
        "db": ["db", "upgrade"],
        "keys": ["keys", "create", "--project", "p"],
        "run": ["run", str(spec), "--out", str(tmp_path / "out")],
        "compare": ["compare", "--out", str(tmp_path / "out")],
        "demo": ["demo", "--url", f"http://127.0.0.1:{free_port()}"],
    }[verb]


@pytest.mark.parametrize("verb", ["serve", "worker", "db", "keys", "run", "compare", "demo"])
def test_refused_settings_exit_2_with_one_line_per_setting(verb, tmp_path):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOISEFA_")}
    env |= {"NOISEFA_HOME": str(home), "OMP_NUM_THREADS": "1", **BAD_SETTINGS}
    done = subprocess.run(
        [sys.executable, "-m", "noisefa.cli", *verb_args(verb, tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2, done.stderr
    assert any(
        line.startswith("error: NOISEFA_HEARTBEAT_TIMEOUT_S: ")
        and "NOISEFA_HEARTBEAT_INTERVAL_S" in line
        for line in errors
    ), done.stderr
    assert any(line.startswith("error: NOISEFA_MAX_WIDTH: ") for line in errors), done.stderr
    assert not home.exists(), "the verb went on despite refused settings"
    assert not (tmp_path / "out").exists()


def test_run_takes_its_limits_and_data_folder_from_the_settings(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NOISEFA_MAX_WIDTH", "16")
    spec = tmp_path / "wide.json"
    spec.write_text(
        json.dumps({"kind": "train", "model": {"hidden": [32]}, "train": {"dataset": "digits"}})
    )
    assert main(["run", str(spec), "--out", str(tmp_path / "o")]) == 2
    assert "model.hidden[0]: width must be in [1, 16]" in capsys.readouterr().err

    monkeypatch.delenv("NOISEFA_MAX_WIDTH")
    monkeypatch.setenv("NOISEFA_DATA_DIR", str(tmp_path / "data"))
    spec.write_text(json.dumps({"kind": "train", "train": {"dataset": "mnist"}, "device": "cpu"}))
    assert main(["run", str(spec), "--out", str(tmp_path / "o")]) == 2
    assert str(tmp_path / "data" / "MNIST" / "raw") in capsys.readouterr().err
