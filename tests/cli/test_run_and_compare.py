"""The ``noisefa run`` and ``noisefa compare`` commands, as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from noisefa.cli import main
from noisefa.engine.contract.bodies import parse_job
from noisefa.engine.contract.experiment_spec import expand_experiment
from noisefa.engine.contract.presets import comparison_body
from noisefa.engine.experiment import child_dir
from noisefa.engine.report import PLOTS, aggregate_experiment
from noisefa.engine.report_format import format_table_text
from noisefa.testing.specs import SMALL_METRICS
from noisefa.testing.waiting import wait_for

SPEC = {
    "kind": "train",
    "model": {"hidden": [32], "seed": 0},
    "pretrain": {"epochs": 6, "samples_per_epoch": 4096, "batch_size": 64},
    "train": {"dataset": "digits", "epochs": 3},
    "device": "cpu",
    "metrics": SMALL_METRICS,
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


def wait_first_checkpoint(process: subprocess.Popen, out: Path) -> None:
    """Until the run in ``out`` has written a checkpoint (or ended: the caller says which).

    Polled often: the run must still be going when the test interrupts it."""
    wait_for(
        lambda: process.poll() is not None or any((out / "checkpoints").glob("*.safetensors")),
        120,
        "the first checkpoint",
        poll_s=0.02,
    )


def test_a_run_killed_with_sigkill_resumes_to_exactly_the_same_metrics(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    reference = noisefa("run", str(spec), "--out", str(whole), "--no-progress")
    victim = noisefa("run", str(spec), "--out", str(killed), "--no-progress")
    try:
        wait_first_checkpoint(victim, killed)
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
        wait_first_checkpoint(process, out)
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


COMPARE = {"seeds": 2, "epochs": 2, "pretrain_samples": 1024, "target_accuracy": 0.5}


def read_metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_compare_runs_the_comparison_experiment_and_prints_its_report_table(tmp_path, capsys):
    out = tmp_path / "study"
    flags = ["--seeds", "2", "--epochs", "2", "--pretrain-samples", "1024", "--target", "0.5"]
    assert main(["compare", *flags, "--device", "cpu", "--out", str(out)]) == 0
    printed = capsys.readouterr().out

    # The same experiment aggregated again from the runs' own folders: the same table.
    spec = parse_job(comparison_body(**COMPARE, device="cpu"))
    children = {
        condition: [
            {"state": "succeeded", "history": read_metrics(child_dir(out, condition, seed))}
            for seed in spec.seeds
        ]
        for condition in spec.conditions
    }
    again = aggregate_experiment(spec, children, tmp_path / "again")
    assert printed == format_table_text(again["table"]) + "\n"
    assert json.loads((out / "report.json").read_text()) == json.loads(
        (tmp_path / "again" / "report.json").read_text()
    )
    assert list(again["conditions"]) == ["bp", "fa", "fa+noise"]
    assert all(c["seeds_succeeded"] == 2 for c in again["conditions"].values())
    assert again["conditions"]["fa+noise"]["alignment_angle"]["before_pretrain"] is not None
    assert {"report.md", *again["plots"]} <= {path.name for path in out.iterdir()}
    assert set(again["plots"]) == set(PLOTS.values()) - {PLOTS["rules_matrix"]}  # no matrix
    # Every run is the preset's child with the flags applied.
    for condition, specs in expand_experiment(spec).items():
        for child in specs:
            folder = child_dir(out, condition, child.model.seed)
            result = json.loads((folder / "result.json").read_text())
            assert result["spec"] == json.loads(child.canonical_json())


def test_compare_names_the_preset_field_a_bad_flag_sets_with_exit_code_2(tmp_path, capsys):
    code = main(["compare", "--pretrain-samples", "0", "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "conditions.fa+noise.pretrain.samples_per_epoch" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
