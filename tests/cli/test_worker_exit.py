"""``noisefa worker`` ends its process itself once Celery has stopped: with Celery's exit
code, its message on stderr, and its logs flushed."""

from __future__ import annotations

import subprocess
import sys

import pytest

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
