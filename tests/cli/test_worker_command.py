"""``noisefa worker``: it ends its process itself once Celery has stopped (with Celery's
exit code, its message on stderr, and its logs flushed), and gives each job a fresh pool
child only on a machine with a GPU, preloading for them what forks safely."""

from __future__ import annotations

import subprocess
import sys

import pytest

from noisefa.commands.worker import fresh_child_per_job

EXIT = (
    "import logging, sys\n"
    "from noisefa.commands.worker import exit_without_teardown\n"
    "logging.basicConfig(stream=sys.stderr, level=logging.INFO)\n"
    "logging.getLogger('worker').info('last words')\n"
    "exit_without_teardown({code!r})\n"
)


@pytest.mark.parametrize(
    ("code", "returncode", "message"), [(None, 0, ""), (0, 0, ""), (3, 3, ""), ("bad", 1, "bad")]
)
def test_the_exit_code_and_the_last_log_line_survive(code, returncode, message):
    done = subprocess.run(
        [sys.executable, "-c", EXIT.format(code=code)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == returncode, done.stderr
    assert "last words" in done.stderr
    assert message in done.stderr


@pytest.mark.parametrize(
    ("devices", "fresh"),
    [
        (["nvidia0", "nvidiactl"], True),
        (["nvidia3"], True),
        (["dxg"], True),  # WSL2
        (["nvhost-gpu"], True),  # Jetson
        (["nvidiactl", "null"], False),  # a driver's control file, no GPU
        ([], False),
    ],
)
def test_a_fresh_child_per_job_only_on_a_machine_with_a_gpu(tmp_path, devices, fresh):
    for name in devices:
        (tmp_path / name).touch()
    assert fresh_child_per_job(tmp_path) is fresh


def test_the_preload_for_fresh_children_imports_their_lazy_stacks_and_leaves_cuda_alone():
    code = (
        "import os, sys, threading\n"
        "from noisefa.commands.worker import preload_for_fresh_children\n"
        "preload_for_fresh_children()\n"
        "import torch\n"
        "fds = [os.readlink(f'/proc/self/fd/{fd}') for fd in os.listdir('/proc/self/fd')"
        " if os.path.exists(f'/proc/self/fd/{fd}')]\n"
        "lazy = ('torch._dynamo', 'torchvision', 'scipy.special', 'matplotlib')\n"
        "print(all(name in sys.modules for name in lazy),"
        " torch.cuda.is_initialized(), threading.active_count(),"
        " any(fd.startswith('/dev/nvidia') for fd in fds))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    # Safe to fork after: CUDA not initialised, no driver file open, no thread started.
    assert done.stdout.split() == ["True", "False", "1", "False"]


@pytest.mark.parametrize(
    ("cores", "concurrency", "setting", "threads", "ahead"),
    [
        (4, 1, None, 4, False),
        (4, 2, None, 2, False),
        (4, 3, None, 1, False),  # 3 jobs and their 3 helpers would take 6 cores
        (4, 2, "1", 1, None),  # 2 jobs of 1 thread, each with a helper: 4 cores
        (1, 1, None, 1, False),
    ],
)
def test_each_job_gets_its_share_of_cores_and_a_helper_thread_only_from_spare_ones(
    monkeypatch, cores, concurrency, setting, threads, ahead
):
    from noisefa.commands.worker import share_cpu
    from noisefa.service.settings import Settings

    for name in ("OMP_NUM_THREADS", "NOISEFA_TORCH_THREADS", "NOISEFA_PREFETCH_BATCHES"):
        monkeypatch.delenv(name, raising=False)
    if setting is not None:
        monkeypatch.setenv("NOISEFA_TORCH_THREADS", setting)
    # The cores this process may run on (its affinity), whatever the machine's count.
    monkeypatch.setattr("noisefa.engine.prefetch.usable_cores", lambda: cores)
    share_cpu(Settings(), concurrency)
    job = Settings()  # what a job process reads back
    assert job.torch_threads == threads
    assert job.prefetch_batches is ahead  # None: the engine's own rule, room is spare


@pytest.mark.parametrize(("setting", "ahead"), [("false", False), ("true", True)])
def test_a_job_process_makes_batches_ahead_as_its_settings_say(monkeypatch, setting, ahead):
    import torch

    from noisefa.engine.prefetch import prefetch_enabled
    from noisefa.engine.process_choices import CHOICES
    from noisefa.worker.celery_app import apply_engine_settings

    monkeypatch.setenv("NOISEFA_TORCH_THREADS", "1")
    monkeypatch.setenv("NOISEFA_PREFETCH_BATCHES", setting)
    monkeypatch.setenv("NOISEFA_CUDA_GRAPHS", "0")
    apply_engine_settings()
    assert prefetch_enabled(torch.device("cpu"), noise=False, elements=1) is ahead
    assert CHOICES.cuda_graphs is False
