"""Every job's metrics also as a TensorBoard event file artifact, read back with the
``tensorboard`` package's own reader: one series per metric, pretrain before train."""

from __future__ import annotations

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from noisefa.client import Client
from noisefa.testing.specs import SMALL_METRICS, train_body

JOB_TIMEOUT_S = 180.0
PRETRAIN_EPOCHS = 2


def test_event_file_holds_every_metric_with_pretrain_before_train(client: Client, tmp_path: Path):
    body = train_body(
        model={"hidden": [16], "seed": 0},
        pretrain={"epochs": PRETRAIN_EPOCHS, "samples_per_epoch": 512, "batch_size": 64},
        train={"dataset": "digits", "epochs": 1, "batch_size": 64},
        metrics=dict(SMALL_METRICS),
    )
    job = client.wait(client.submit(body)["id"], timeout=JOB_TIMEOUT_S)
    assert job["state"] == "succeeded", job.get("error")
    names = [a["name"] for a in client.artifacts(job["id"])]
    event_files = [name for name in names if name.startswith("tensorboard/events.out.tfevents")]
    assert len(event_files) == 1, names
    logdir = tmp_path / "tensorboard"
    logdir.mkdir()
    client.download(job["id"], event_files[0], logdir)

    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    events.Reload()
    expected: dict[str, dict[int, float]] = {}
    for point in client.metrics(job["id"]):
        offset = 0 if point["phase"] == "pretrain" else PRETRAIN_EPOCHS + 1
        expected.setdefault(point["name"], {})[offset + point["epoch"]] = point["value"]
    assert set(events.Tags()["scalars"]) == set(expected)
    for name, points in expected.items():
        written = {event.step: event.value for event in events.Scalars(name)}
        assert written.keys() == points.keys(), name
        for step, value in points.items():
            assert abs(written[step] - value) <= 1e-5 * max(1.0, abs(value)), (name, step)
    # pretrain epochs 0..2 at steps 0..2, train epochs 0..1 at steps 3..4
    assert sorted({event.step for event in events.Scalars("train_loss")}) == [0, 1, 2, 3, 4]
