"""Which experiment runs pack together, how big packs are, and what fan-out sends: the pack
key and sizes (pure), then an experiment fanned out on SQLite whose messages are read back
from the real Redis broker (no worker consumes that database)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from noisefa.engine.contract.estimates import Network, builtin_sizes, estimate_job
from noisefa.engine.contract.experiment_spec import ExperimentSpec
from noisefa.engine.contract.packing import (
    PACK_RUNS_CAP,
    pack_key,
    pack_size,
    runs_that_fit,
    split_into_packs,
)
from noisefa.engine.contract.spec import parse_spec
from noisefa.service.broker import RUN_JOB_TASK, RUN_PACK_TASK
from noisefa.service.db import engine_from_settings, make_sessionmaker
from noisefa.service.repositories import experiments as experiment_repo
from noisefa.service.repositories.jobs import create_job
from noisefa.service.repositories.projects import get_or_create_project
from noisefa.service.repositories.workers import register_worker
from noisefa.testing import broker
from noisefa.testing.db import migrated, settings_for
from noisefa.testing.specs import cpu_pretrain_spec, experiment_spec, train_body
from noisefa.worker.execution import execute_job

BASE = train_body()
NOISE = {"epochs": 1, "samples_per_epoch": 1024, "batch_size": 64}


def spec(**changes: Any):
    """``train_body()`` with blocks replaced (``model``, ``train``, ``pretrain``, ...)."""
    body = json.loads(json.dumps(BASE))
    for key, value in changes.items():
        body[key] = {**body.get(key, {}), **value} if isinstance(value, dict) else value
    return parse_spec(body)


# -- the key ------------------------------------------------------------------------------


def test_runs_that_differ_in_their_own_settings_share_a_pack_key():
    same = {
        pack_key(spec()),
        pack_key(spec(model={"seed": 3, "rule": "bp", "feedback_scale": 2.0})),
        pack_key(spec(train={"optimizer": {"lr": 0.01}})),
        pack_key(spec(pretrain=NOISE)),  # an extra noise phase: the data phase is shared
        pack_key(spec(metrics={"probe_size": 32, "readout_size": 128})),
    }
    assert len(same) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"model": {"hidden": [64]}},
        {"model": {"activation": "tanh"}},
        {"train": {"batch_size": 32}},
        {"train": {"epochs": 3}},
        {"train": {"optimizer": {"name": "sgd"}}},
        {"train": {"dataset": "fake"}},
        {"device": "auto"},
    ],
    ids=lambda change: json.dumps(change),
)
def test_another_shape_dataset_plan_or_device_gets_another_pack_key(change):
    assert pack_key(spec(**change)) != pack_key(spec())


# -- sizes --------------------------------------------------------------------------------


def test_packs_spread_over_the_live_workers_within_the_maximum():
    assert pack_size(9, max_runs=16, workers=2) == 5  # 9 runs on 2 workers: 2 packs at once
    assert pack_size(9, max_runs=16, workers=1) == 9
    assert pack_size(9, max_runs=4, workers=1) == 4
    assert pack_size(9, max_runs=16, workers=0) == 9  # no live worker yet counts as one
    assert pack_size(2, max_runs=16, workers=8) == 1
    ids = [str(i) for i in range(9)]
    assert [len(p) for p in split_into_packs(ids, 5)] == [5, 4]
    assert [len(p) for p in split_into_packs(ids, 4)] == [3, 3, 3]  # the packs end together
    assert sum(split_into_packs(ids, 4), []) == ids  # every run once, in order


def test_the_default_pack_size_is_what_the_memory_budget_holds():
    run, sizes = spec(model={"hidden": [1000, 1000]}), builtin_sizes()
    dataset = sizes["digits"].device_bytes  # held once by the whole pack
    weights = Network.of(run.model, sizes["digits"]).state_bytes  # twice by each run
    per_run = estimate_job(run, sizes).memory_bytes - dataset + weights
    assert runs_that_fit(run, sizes, dataset + 3 * per_run) == 3
    assert runs_that_fit(run, sizes, dataset + 3 * per_run - 1) == 2
    assert runs_that_fit(run, sizes, 1) == 1  # never less than one run
    assert runs_that_fit(run, sizes, 10**15) == PACK_RUNS_CAP


# -- fan-out ------------------------------------------------------------------------------


def fanned_out(tmp_path: Path, body: dict, *, workers: int, **settings: Any) -> list:
    """Fan ``body`` out in this process with ``workers`` live workers registered; the
    messages on the broker's cpu queue as ``(task, args)``, and the children's specs by id."""
    config = migrated(settings_for(tmp_path, **settings))
    broker.flush(config.broker_url)
    engine = engine_from_settings(config)
    sessions = make_sessionmaker(engine)
    try:
        with sessions() as session:
            project = get_or_create_project(session, "packs")
            experiment = ExperimentSpec.model_validate(body, context={"limits": config.limits})
            parent = create_job(session, project.id, experiment, max_attempts=3).id
            for i in range(workers):
                register_worker(
                    session, f"w{i}", hostname="test", pid=i, queues=["cpu"], datasets=["digits"]
                )
        assert execute_job(parent, config) is None  # the experiment waits on its runs
        with sessions() as session:
            children = {job.id: job.spec for job in experiment_repo.children(session, parent)}
        return broker.waiting_messages("cpu", config.broker_url), children
    finally:
        engine.dispose()
        broker.flush(config.broker_url)


def nine_runs(**base: Any) -> dict:
    return experiment_spec(
        cpu_pretrain_spec(samples=256, hidden=8) | base,
        conditions={"bp": {"model": {"rule": "bp"}}, "fa": {}, "fa2": {"model": {"seed": 9}}},
        seeds=[0, 1, 2],
    )


def test_nine_runs_on_two_workers_fan_out_as_two_packs(tmp_path: Path):
    messages, children = fanned_out(tmp_path, nine_runs(), workers=2)
    assert [task for task, _ in messages] == [RUN_PACK_TASK, RUN_PACK_TASK]
    packs = [args[0] for _, args in messages]
    assert [len(pack) for pack in packs] == [5, 4]
    assert sorted(sum(packs, [])) == sorted(children)


def test_pack_max_runs_1_sends_one_run_job_per_child(tmp_path: Path):
    messages, children = fanned_out(tmp_path, nine_runs(), workers=1, pack_max_runs=1)
    assert [task for task, _ in messages] == [RUN_JOB_TASK] * 9
    assert sorted(args[0] for _, args in messages) == sorted(children)


def test_children_of_another_shape_go_to_packs_of_their_own(tmp_path: Path):
    body = experiment_spec(
        cpu_pretrain_spec(samples=256, hidden=8),
        conditions={"narrow": {}, "wide": {"model": {"hidden": [16]}}},
        seeds=[0, 1, 2],
    )
    messages, children = fanned_out(tmp_path, body, workers=1)
    assert [task for task, _ in messages] == [RUN_PACK_TASK, RUN_PACK_TASK]
    widths = [
        {tuple(children[job_id]["model"]["hidden"]) for job_id in args[0]} for _, args in messages
    ]
    assert sorted(widths) == [{(8,)}, {(16,)}]  # one pack per condition, its three seeds
