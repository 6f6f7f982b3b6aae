"""The API runs without the training stack: submitting, listing and uploading load no torch
(docs/design.md: the API validates jobs without loading it)."""

from __future__ import annotations

import subprocess
import sys

CHECK_DEADLINE_S = 180


def test_api_submits_lists_and_uploads_without_loading_torch(tmp_path):
    checked = subprocess.run(
        [sys.executable, "-m", "noisefa.testing.torch_free", "api", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=CHECK_DEADLINE_S,
    )
    assert checked.returncode == 0, checked.stderr
