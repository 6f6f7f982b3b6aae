"""The ``noisefa run`` and ``noisefa compare`` commands, as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from noisefa.cli import main

SPEC = {
    "kind": "train",
    "model": {"hidden": [32], "seed": 0},
    "pretrain": {"epochs": 6, "samples_per_epoch": 4096, "batch_size": 64},
    "train": {"dataset": "digits", "epochs": 3},
    "device": "cpu",
    "metrics": {"probe_size": 64, "readout_size": 256},
}


def noisefa(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "noisefa.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def test_a_run_killed_with_sigkill_resumes_to_exactly_the_same_metrics(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    reference = noisefa("run", str(spec), "--out", str(whole), "--no-progress")
    victim = noisefa("run", str(spec), "--out", str(killed), "--no-progress")
    try:
        checkpoints = killed / "checkpoints"
        wait_for(
            lambda: (
                victim.poll() is not None
                or (checkpoints.is_dir() and any(checkpoints.glob("*.safetensors")))
            ),
            timeout=120,
            what="the first checkpoint",
        )
        assert victim.poll() is None, "the run ended before it could be killed"
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        victim.kill()
    assert victim.returncode == -signal.SIGKILL
    assert not (killed / "result.json").exists()
    code, _, err = finish(noisefa("run", str(spec), "--out", str(killed), "--no-progress"))
    assert code == 0, err
    assert finish(reference)[0] == 0
    assert (killed / "metrics.jsonl").read_text() == (whole / "metrics.jsonl").read_text()
    resumed = json.loads((killed / "result.json").read_text())
    uninterrupted = json.loads((whole / "result.json").read_text())
    assert resumed["final_metrics"] == uninterrupted["final_metrics"]
    assert resumed == uninterrupted


def test_ctrl_c_stops_at_a_checkpoint_and_the_rerun_finishes_the_job(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    out = tmp_path / "out"
    process = noisefa("run", str(spec), "--out", str(out), "--no-progress")
    try:
        wait_for(
            lambda: process.poll() is not None or any((out / "checkpoints").glob("*.safetensors")),
            timeout=120,
            what="the first checkpoint",
        )
        assert process.poll() is None, "the run ended before it could be interrupted"
        process.send_signal(signal.SIGINT)
        code, _, err = finish(process)
    finally:
        process.kill()
    assert code == 130 and "rerun the same command to resume" in err
    assert "Traceback" not in err
    assert not (out / "result.json").exists()
    code, _, err = finish(noisefa("run", str(spec), "--out", str(out), "--no-progress"))
    assert code == 0, err
    assert json.loads((out / "result.json").read_text())["phases"][-1]["epochs"] == 3


def write_spec(path: Path, data: dict) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def test_run_refuses_a_folder_holding_another_spec_with_exit_code_2(tmp_path, capsys):
    small = {**SPEC, "pretrain": None, "train": {"dataset": "digits", "epochs": 1}}
    assert (
        main(
            [
                "run",
                write_spec(tmp_path / "a.json", small),
                "--out",
                str(tmp_path / "o"),
                "--no-progress",
            ]
        )
        == 0
    )
    other = {**small, "model": {"hidden": [16]}}
    code = main(
        [
            "run",
            write_spec(tmp_path / "b.json", other),
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "different spec" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"model": {"hidden": [100_000]}}, "model.hidden[0]: width must be in [1, 4096]"),
        ({"train": {"dataset": "digits", "epochs": 0}}, "train.epochs"),
        ({"pretrain": {"optimizer": {"lr": -1}}}, "pretrain.optimizer.lr"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_run_reports_an_invalid_spec_field_with_exit_code_2(tmp_path, capsys, change, field):
    code = main(
        ["run", write_spec(tmp_path / "s.json", {**SPEC, **change}), "--out", str(tmp_path / "o")]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "invalid spec" in err and field in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_run_reads_yaml_and_reports_a_missing_dataset(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text("kind: train\ntrain:\n  dataset: mnist\ndevice: cpu\n")
    code = main(["run", str(spec), "--out", str(tmp_path / "o"), "--data-dir", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "mnist" in err and str(tmp_path / "MNIST" / "raw") in err


def test_compare_prints_a_table_of_the_three_conditions(capsys):
    code = main(
        [
            "compare",
            "--seeds",
            "1",
            "--epochs",
            "1",
            "--pretrain-samples",
            "1024",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    table = capsys.readouterr().out
    for condition in ("bp", "fa", "fa+noise"):
        assert f"\n{condition} " in table
