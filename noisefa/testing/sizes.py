"""Run sizes: CI's reduced ones by default, the full ones with ``NOISEFA_FULL=1``."""

from __future__ import annotations

import os

FULL = os.environ.get("NOISEFA_FULL") == "1"
"""True when the long fault, fuzz and load sizes were asked for."""
