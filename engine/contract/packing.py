"""Which runs of an experiment can train together, and how many go in one pack. No torch.

A *pack* is one worker task that trains several jobs as one stack (``engine/run.py:
run_jobs``). The engine stacks, phase by phase, the runs whose network shape, device, batch
plan and optimizer (the learning rate aside) agree; runs that do not are trained one stack
after another inside the same call, which is correct but gains nothing. :func:`pack_key` says
from the spec alone which runs will share a stack, so only those are packed together.

The key follows the job's last phase (``train`` when there is one, else ``pretrain``): an
experiment's conditions often differ only in whether they pretrain on noise first (the
``comparison`` preset), and such runs still share every step of their data phase; their noise
phases stack among the runs that have one.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

from .estimates import DatasetSize, Network, estimate_job
from .spec import JobSpec, OptimizerSpec

# Most runs one pack holds when ``pack_max_runs`` is unset. Past a dozen or so runs a CPU
# stack gains little more per run, and a pack ends only when its slowest member does.
PACK_RUNS_CAP = 16
# Model fields each run of a stack keeps its own value of; the others are the shape.
RUN_OWN_MODEL_FIELDS = ("seed", "rule", "feedback_seed", "feedback_scale")


def pack_key(spec: JobSpec) -> Hashable:
    """Equal for runs that train their last phase as one stack: device, network shape (the
    dataset fixing input and classes, and every model field but :data:`RUN_OWN_MODEL_FIELDS`)
    and the phase's plan (dataset or noise, epochs, batch size, samples, optimizer except its
    learning rate).

    Seeds, rules, learning rates, an extra noise phase, metrics settings and ``init_from`` may
    differ: each run keeps its own in the stack. (A direct rule such as ``dfa`` has feedback
    of another shape: packed with ``fa`` runs, it trains in a stack of its own, one after the
    other within the pack: still each run's own result, only without the shared steps.)
    """
    # Every model field but the run's own (seed, rule, feedback) is its shape: a field added
    # to ModelSpec later separates packs until it is listed here.
    shape = spec.model.model_dump(mode="json", exclude=set(RUN_OWN_MODEL_FIELDS))
    network = (spec.shape_dataset, repr(sorted(shape.items())))
    if spec.train is not None:
        train = spec.train
        phase: tuple = (
            "train",
            train.dataset,
            train.epochs,
            train.batch_size,
            _optimizer_key(train.optimizer),
        )
    else:
        assert spec.pretrain is not None, "a validated spec has pretrain or train"
        noise = spec.pretrain
        phase = (
            "pretrain",
            noise.epochs,
            noise.samples_per_epoch,
            noise.batch_size,
            noise.noise.labels,
            _optimizer_key(noise.optimizer),
        )
    return (spec.device, network, phase)


def _optimizer_key(optimizer: OptimizerSpec) -> str:
    """The optimizer's settings but its learning rate (a stack holds one lr per run)."""
    return repr(sorted(optimizer.model_dump(exclude={"lr"}).items()))


def pack_size(runs: int, max_runs: int, workers: int) -> int:
    """Runs per pack for ``runs`` runs of one key: at most ``max_runs``, and few enough that
    each of ``workers`` live workers gets a pack (9 runs on 2 workers → 5, so 2 packs run at
    once; 9 runs on 1 worker → 9)."""
    return max(1, min(max_runs, math.ceil(runs / max(1, workers))))


def split_into_packs(job_ids: Sequence[str], size: int) -> list[list[str]]:
    """``job_ids`` in order, cut into the fewest packs of at most ``size``, their sizes
    differing by one at most (9 by 4 → 3, 3, 3, not 4, 4, 1: the packs end together)."""
    if not job_ids:
        return []
    count = math.ceil(len(job_ids) / size)
    base, extra = divmod(len(job_ids), count)
    packs, start = [], 0
    for i in range(count):
        end = start + base + (1 if i < extra else 0)
        packs.append(list(job_ids[start:end]))
        start = end
    return packs


def runs_that_fit(
    spec: JobSpec,
    sizes: Mapping[str, DatasetSize],
    budget_bytes: int,
    cap: int = PACK_RUNS_CAP,
) -> int:
    """How many runs like ``spec`` one pack may hold within ``budget_bytes`` of estimated
    device memory (``estimate_job``), from 1 to ``cap``.

    A pack holds the training dataset once (the runs of a stack read one copy) and, per run,
    the rest of the run's estimate plus a second copy of its weights and feedback matrices
    (the stacked tensors beside each run's own model).
    """
    estimate = estimate_job(spec, sizes)
    shared = sizes[spec.train.dataset].device_bytes if spec.train is not None else 0
    stacked_copy = Network.of(spec.model, sizes[spec.shape_dataset]).state_bytes
    per_run = max(1, estimate.memory_bytes - shared + stacked_copy)
    return max(1, min(cap, (budget_bytes - shared) // per_run))
