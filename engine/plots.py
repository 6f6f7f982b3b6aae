"""Matplotlib on the Agg backend (no display needed), for the engine's PNG artifacts."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)


def new_figure(panels: int, *, width: float = 4.5, height: float = 3.5):
    """A figure with ``panels`` side-by-side axes; returns ``(figure, [axes])``."""
    figure, axes = plt.subplots(1, max(panels, 1), figsize=(width * max(panels, 1), height))
    return figure, list(axes) if panels > 1 else [axes]


def save_figure(figure, path: Path) -> None:
    """Write ``figure`` as a PNG at ``path`` and release its memory."""
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
