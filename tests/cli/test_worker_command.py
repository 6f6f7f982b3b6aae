"""``noisefa worker``: it ends its process itself once Celery has stopped (with Celery's
exit code, its message on stderr, and its logs flushed), and gives each job a fresh pool
child only where a GPU job would have GPU memory to return."""

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
    ("queues", "devices", "fresh"),
    [
        (["cpu", "gpu"], ["nvidia0", "nvidiactl"], True),
        (["gpu"], ["nvidia3"], True),
        (["cpu", "gpu"], ["nvidiactl", "null"], False),  # a driver's control file, no GPU
        (["cpu", "gpu"], [], False),
        (["cpu"], ["nvidia0"], False),
    ],
)
def test_a_fresh_child_per_job_only_where_a_gpu_job_has_memory_to_return(
    tmp_path, queues, devices, fresh
):
    for name in devices:
        (tmp_path / name).touch()
    assert fresh_child_per_job(queues, tmp_path) is fresh


def test_the_preload_for_fresh_children_imports_their_lazy_stacks_and_leaves_cuda_alone():
    code = (
        "import sys\n"
        "from noisefa.commands.worker import preload_for_fresh_children\n"
        "preload_for_fresh_children()\n"
        "import torch\n"
        "print('torch._dynamo' in sys.modules, 'torchvision' in sys.modules,"
        " torch.cuda.is_initialized())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.split() == ["True", "True", "False"]
