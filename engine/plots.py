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


def plot_reliability(counts, accuracy, confidence, path: Path, *, title: str) -> None:
    """A reliability diagram: per equal-width confidence bin, the accuracy (bars) against
    the mean confidence (dots) and the diagonal a calibrated model sits on. Empty bins are
    left out; the arguments are :func:`.metrics.reliability_bins`' per-bin tensors."""
    figure, (axis,) = new_figure(1, width=4.5, height=4.5)
    draw_reliability(axis, counts, accuracy, confidence, title=title)
    save_figure(figure, path)


def plot_reliability_panels(panels: dict[str, dict[str, list[float]]], path: Path) -> None:
    """One reliability diagram per entry (``{counts, accuracy, confidence}`` per bin), side
    by side; a single empty panel saying so when there is none."""
    figure, axes = new_figure(max(len(panels), 1), width=4.5, height=4.5)
    if not panels:
        axes[0].set(title="no run recorded reliability bins", xlim=(0, 1), ylim=(0, 1))
    for axis, (name, bins) in zip(axes, panels.items(), strict=False):
        draw_reliability(axis, bins["counts"], bins["accuracy"], bins["confidence"], title=name)
    save_figure(figure, path)


def draw_reliability(axis, counts, accuracy, confidence, *, title: str) -> None:
    """Draw one reliability diagram on ``axis`` (see :func:`plot_reliability`)."""
    bins = len(counts)
    edges = [b / bins for b in range(bins)]
    filled = [b for b in range(bins) if counts[b] > 0]
    axis.bar(
        [edges[b] for b in filled],
        [float(accuracy[b]) for b in filled],
        width=1 / bins,
        align="edge",
        edgecolor="black",
        label="accuracy",
    )
    axis.plot(
        [edges[b] + 0.5 / bins for b in filled],
        [float(confidence[b]) for b in filled],
        "o",
        color="tab:red",
        label="mean confidence",
    )
    axis.plot([0, 1], [0, 1], "--", color="gray", label="calibrated")
    axis.set(
        title=title, xlabel="confidence (max softmax)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1)
    )
    axis.legend(loc="upper left")
