"""How a worker trains: the CPU threads of each job, how its steps run (captured in CUDA
graphs; batches made ahead on a helper thread), and which runs it trains together as one
pack (:mod:`.packs`): how many, and how long a standalone run waits for others to join.

A group of :class:`~.settings.Settings` fields kept in a module of its own (``Settings``
inherits them, so each is still read from ``NOISEFA_<NAME>``).
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class WorkerSettings(BaseModel):
    """Threads per job, how its steps run (CUDA graphs, batches made ahead), pack sizes."""

    torch_threads: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="CPU threads each job of a worker trains with; default: the cores the "
        "worker may run on (its CPU affinity, e.g. a container's cpuset) divided by its "
        "concurrency, so concurrent jobs never oversubscribe the node.",
    )
    cuda_graphs: bool = Field(
        True,
        description="Capture each CUDA training step (batch, forward, feedback backward, "
        "optimizer) in a CUDA graph and replay it; `false`: eager steps (an on/off "
        "comparison, or a way round a driver problem).",
    )
    prefetch_batches: bool | None = Field(
        None,
        description="Make each CPU training step's batch (its noise draw or data gather) "
        "one step ahead on a helper thread, beside the torch threads: `true`, `false`, or "
        "unset: where making it costs a step more than handing it over would (64 × 784 "
        "noise does; data, gathered up to 16 steps at a time, only in large stacks) and the "
        "process has twice the job's torch threads in cores (`noisefa worker` sets `false` "
        "where its concurrent jobs take every core). Never on CUDA.",
    )
    pack_max_runs: int | None = Field(
        None,
        ge=1,
        le=256,
        description="Most runs of an experiment one worker task trains together as one stack "
        "(a pack: runs of one network shape, dataset, batch plan and device). Default: as many "
        "as the memory estimate fits into `pack_memory_bytes`, at most 16. `1`: every run is "
        "a task of its own. Packs are also cut so that each live worker gets one.",
    )
    pack_memory_bytes: int = Field(
        8 * 2**30,
        ge=1,
        description="Estimated device memory the runs of one pack may take together (bytes; "
        "default 8 GiB), which sets the pack size when `pack_max_runs` is unset; the dataset "
        "counts once, the rest of each run's estimate once per run.",
    )
    pack_window_s: float = Field(
        0.0,
        ge=0,
        le=600,
        description="Seconds a project's first held standalone pretrain or train job waits, "
        "queued and unsent, for more of the project's jobs to pack with it (as an "
        "experiment's runs do); then the API sends them all as packs. Read by the API "
        "process (its packer loop). 0 (default): every standalone job is sent at once.",
    )

    def threads_per_job(self, concurrency: int, cores: int) -> int:
        """``torch_threads``, else the worker's ``cores`` shared out among ``concurrency``
        jobs."""
        if self.torch_threads is not None:
            return self.torch_threads
        return max(1, cores // concurrency)
