"""The settings as every CLI verb reads them: refused settings end the verb with exit code 2.

A bad environment (``NOISEFA_HEARTBEAT_TIMEOUT_S`` shorter than two heartbeats, a
``NOISEFA_MAX_WIDTH`` of 0) is a user error, like a bad spec: one line per refused setting on
stderr, naming its environment variable, and no traceback.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from noisefa.service.settings import Settings

EXIT_USAGE = 2


def load_settings() -> Settings:
    """The settings from ``NOISEFA_*``; exits with code 2 and a message when they are refused."""
    from pydantic import ValidationError

    from noisefa.service.settings import get_settings, settings_error_lines

    try:
        return get_settings()
    except ValidationError as exc:
        sys.stderr.write("".join(f"error: {line}\n" for line in settings_error_lines(exc)))
        raise SystemExit(EXIT_USAGE) from None
