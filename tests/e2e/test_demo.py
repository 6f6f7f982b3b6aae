"""``noisefa demo`` (README's first command) runs the comparison on a fresh embedded service."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from noisefa.commands.processes import free_port

DEMO_TIMEOUT_S = 300


def test_demo_prints_the_comparison_and_where_the_checkpoints_are(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOISEFA_")}
    env["NOISEFA_HOME"] = str(tmp_path / "home")
    env.setdefault("OMP_NUM_THREADS", "1")  # see noisefa/testing/stack.py: stack_env
    nobody = f"http://127.0.0.1:{free_port()}"  # no service there: the demo starts its own
    done = subprocess.run(
        [sys.executable, "-m", "noisefa.cli", "demo", "--url", nobody, "--seeds", "1"]
        + ["--epochs", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    rows = {line.split()[0] for line in done.stdout.splitlines() if line.strip()}
    assert {"condition", "bp", "fa", "fa+noise"} <= rows
    paths = [line.split(": ", 1)[1] for line in done.stdout.splitlines() if " seed 0: " in line]
    assert len(paths) == 3
    assert all(Path(path).is_file() and path.endswith(".safetensors") for path in paths)
