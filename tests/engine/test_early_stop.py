"""Training to convergence: ``train.early_stop`` stops a run once test accuracy stalls."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from noisefa.engine.callbacks import RunCallbacks
from noisefa.engine.checkpoint import load_checkpoint
from noisefa.engine.contract.bodies import parse_job
from noisefa.engine.contract.spec import EarlyStopSpec
from noisefa.engine.convergence import converged_epoch
from noisefa.engine.experiment import run_children
from noisefa.engine.report import aggregate_experiment
from noisefa.engine.report_format import format_num
from noisefa.engine.run import run_job, run_jobs


def test_converges_at_the_last_improving_epoch_once_patience_epochs_follow_it():
    rule = EarlyStopSpec(patience=3, min_delta=0.01)
    accuracies = [0.1, 0.5, 0.6, 0.6, 0.609, 0.605, 0.7]
    assert converged_epoch(accuracies[:5], rule) is None  # two epochs after the best
    assert converged_epoch(accuracies[:6], rule) == 2  # 0.609 is not 0.01 above 0.6
    assert converged_epoch([0.1, 0.2, 0.3, 0.4], rule) is None  # still improving
    # Without min_delta a tie is no improvement; any rise is.
    ties = EarlyStopSpec(patience=2, min_delta=0.0)
    assert converged_epoch([0.5, 0.5, 0.5], ties) == 0
    assert converged_epoch([0.5, 0.5, 0.5000001], ties) is None


def test_early_stop_fields_are_bounded():
    for bad in ({"patience": 0}, {"min_delta": -0.1}, {"min_delta": 1.5}, {"patience": 1001}):
        with pytest.raises(ValidationError):
            EarlyStopSpec(**bad)


def points(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_a_stack_member_stops_at_convergence_and_the_other_trains_on_unchanged(
    tmp_path, small_spec
):
    rule = {"patience": 1, "min_delta": 0.2}
    stopping = small_spec(pretrain=None, train={"epochs": 6, "early_stop": rule})
    other = small_spec(
        model={"hidden": [32], "rule": "fa", "seed": 1}, pretrain=None, train={"epochs": 6}
    )
    alone = run_job(other, tmp_path / "alone")
    results = run_jobs([stopping, other], [tmp_path / "stop", tmp_path / "other"])
    assert all(isinstance(r, dict) for r in results), results
    stopped, together = results

    accuracy = [p["value"] for p in points(tmp_path / "stop") if p["name"] == "test_accuracy"]
    last = len(accuracy) - 1
    # It ran until the rule first fired, and no further: well before its 6 epochs.
    assert last < 6
    assert all(
        converged_epoch(accuracy[: k + 1], EarlyStopSpec(**rule)) is None for k in range(last)
    )
    assert stopped["convergence"] == {
        "converged_epoch": last - 1,
        "converged_test_accuracy": accuracy[last - 1],
        "stopped_epoch": last,
    }
    assert stopped["phases"] == [{"name": "train", "epochs": last}]
    final = load_checkpoint(tmp_path / "stop" / stopped["final_checkpoint"])
    assert final.progress.epoch == last and "train" in final.progress.phases_done

    # The other run of the stack trains all its epochs as it would alone.
    want, got = points(tmp_path / "alone"), points(tmp_path / "other")
    assert [(p["name"], p["epoch"]) for p in got] == [(p["name"], p["epoch"]) for p in want]
    for a, b in zip(want, got, strict=True):
        assert b["value"] == pytest.approx(a["value"], rel=1e-5, abs=1e-4), a
    assert together["phases"] == alone["phases"] == [{"name": "train", "epochs": 6}]
    assert "convergence" not in together


def test_an_experiment_report_shows_epochs_to_converge_and_accuracy_there(tmp_path):
    rule = {"patience": 1, "min_delta": 0.2}
    body = {
        "kind": "experiment",
        "base": {
            "kind": "train",
            "model": {"hidden": [32]},
            "train": {"dataset": "digits", "epochs": 6},
            "device": "cpu",
            "metrics": {"probe_size": 64, "readout_size": 256},
        },
        "conditions": {"converge": {"train": {"early_stop": rule}}, "fixed": {}},
        "seeds": [0, 1],
        "target_accuracy": 0.5,
    }
    spec = parse_job(body)
    children = run_children(spec, tmp_path / "runs")
    report = aggregate_experiment(spec, children, tmp_path / "report")
    assert report["early_stop"] is True
    converging, fixed = report["conditions"]["converge"], report["conditions"]["fixed"]
    expected = []
    for child in children["converge"]:
        accuracy = [p["value"] for p in child["history"] if p["name"] == "test_accuracy"]
        epoch = converged_epoch(accuracy, EarlyStopSpec(**rule))
        assert epoch == len(accuracy) - 2  # it stopped `patience` epochs after converging
        expected.append((epoch, accuracy[epoch]))
    assert converging["per_seed"]["epochs_to_converge"] == [e for e, _ in expected]
    assert converging["epochs_to_converge"] == {
        "mean": sum(e for e, _ in expected) / 2,
        "seeds_reached": 2,
    }
    assert converging["converged_test_accuracy"]["mean"] == pytest.approx(
        sum(a for _, a in expected) / 2
    )
    assert fixed["epochs_to_converge"] == {"mean": None, "seeds_reached": 0}
    row = {r["condition"]: r for r in report["table"]}
    assert row["converge"]["epochs to converge"] == format_num(
        converging["epochs_to_converge"]["mean"]
    )
    assert row["fixed"]["epochs to converge"] == "-"
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "epochs to converge" in markdown and "acc % at convergence" in markdown


class Journal(RunCallbacks):
    """Appends (run, event, epoch) to one list shared by the runs of a stack."""

    def __init__(self, name: str, events: list):
        self.name, self.events = name, events

    def on_epoch_end(self, phase: str, epoch: int, metrics: dict[str, float]) -> None:
        self.events.append((self.name, "epoch", epoch))

    def on_run_end(self, outcome) -> None:
        self.events.append((self.name, "end", outcome))


def test_a_converged_member_is_ended_the_moment_it_leaves_not_when_the_stack_ends(
    tmp_path, small_spec
):
    rule = {"patience": 1, "min_delta": 0.2}
    stopping = small_spec(pretrain=None, train={"epochs": 6, "early_stop": rule})
    other = small_spec(pretrain=None, model={"seed": 1}, train={"epochs": 6})
    events: list = []
    callbacks = [Journal("stopping", events), Journal("other", events)]
    results = run_jobs(
        [stopping, other], [tmp_path / "stop", tmp_path / "other"], callbacks=callbacks
    )
    ends = [i for i, event in enumerate(events) if event[1] == "end"]
    assert [events[i][0] for i in ends] == ["stopping", "other"]  # each once
    stopped_at = ends[0]
    # The other run still trained epochs after the converged one was ended ...
    assert ("other", "epoch", 6) in events[stopped_at:]
    # ... and each run was ended with what run_jobs returns for it.
    assert events[ends[0]][2] is results[0] and events[ends[1]][2] is results[1]
