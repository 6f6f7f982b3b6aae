"""A damaged checkpoint is found, named without its folder, and survived: a run resumes from
the newest intact one and ends as if nothing happened; with none intact it fails as
``checkpoint_corrupt``."""

from __future__ import annotations

import logging

import pytest

from noisefa.engine.checkpoint import CHECKPOINT_DIR, load_checkpoint
from noisefa.engine.contract.errors import CorruptCheckpointError
from noisefa.engine.contract.states import FailureReason
from noisefa.engine.run import run_job
from noisefa.testing.corruption import DAMAGES

# Retention leaves pretrain-0002 (a final), train-0003 and train-0004 (the final).
KEPT = ["pretrain-0002.safetensors", "train-0003.safetensors", "train-0004.safetensors"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, small_spec):
    """A finished run's folder (copied by each test) and its result."""
    spec = small_spec(train={"epochs": 4})
    folder = tmp_path_factory.mktemp("finished")
    result = run_job(spec, folder)
    assert sorted(p.name for p in (folder / CHECKPOINT_DIR).iterdir()) == KEPT
    return spec, folder, result


def copy_run(source, target):
    target.mkdir()
    (target / CHECKPOINT_DIR).mkdir()
    for path in (source / CHECKPOINT_DIR).iterdir():
        (target / CHECKPOINT_DIR / path.name).write_bytes(path.read_bytes())
    return target


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_checkpoint_raises_an_error_naming_the_file_not_its_folder(
    tmp_path, finished, damage
):
    _, folder, _ = finished
    path = copy_run(folder, tmp_path / "run") / CHECKPOINT_DIR / KEPT[-1]
    DAMAGES[damage](path)
    with pytest.raises(CorruptCheckpointError) as caught:
        load_checkpoint(path)
    assert caught.value.reason == FailureReason.CHECKPOINT_CORRUPT
    assert KEPT[-1] in str(caught.value)
    assert str(tmp_path) not in str(caught.value) and CHECKPOINT_DIR not in str(caught.value)


@pytest.mark.parametrize("damage", ["truncated", "garbled-data"])
def test_a_rerun_skips_a_damaged_newest_checkpoint_and_ends_as_the_undamaged_run(
    tmp_path, finished, damage, caplog
):
    spec, folder, result = finished
    run = copy_run(folder, tmp_path / "run")
    DAMAGES[damage](run / CHECKPOINT_DIR / KEPT[-1])
    with caplog.at_level(logging.WARNING, logger="noisefa.engine.run"):
        resumed = run_job(spec, run)
    assert any(KEPT[-1] in record.getMessage() for record in caplog.records), caplog.text
    # Resumed from train-0003: epoch 4 trained again, bit-exactly as the first time.
    assert resumed == result
    assert (run / "metrics.jsonl").read_text() == (folder / "metrics.jsonl").read_text()
    assert load_checkpoint(run / CHECKPOINT_DIR / KEPT[-1]).progress.epoch == 4


def test_a_run_whose_checkpoints_are_all_damaged_fails_checkpoint_corrupt(tmp_path, finished):
    spec, folder, _ = finished
    run = copy_run(folder, tmp_path / "run")
    for name, damage in zip(KEPT, ("truncated", "garbled-data", "garbled-header"), strict=True):
        DAMAGES[damage](run / CHECKPOINT_DIR / name)
    with pytest.raises(CorruptCheckpointError) as caught:
        run_job(spec, run)
    message = str(caught.value)
    assert caught.value.reason == FailureReason.CHECKPOINT_CORRUPT
    assert all(name in message for name in KEPT) and str(tmp_path) not in message
    assert not (run / "result.json").exists()
