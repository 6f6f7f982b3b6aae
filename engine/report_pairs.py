"""A report's per-seed values reduced: mean ± std over seeds, and paired condition comparisons.

The condition table (:mod:`.report`) and the rule × noise matrix (:mod:`.report_matrix`) read
the same per-seed values (``condition["per_seed"][key]``, one entry per seed, ``None`` where
the run did not succeed) through these helpers, so a number means the same in both.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

from .paired_stats import paired_difference
from .report_format import PAIRED_METRICS


def present(values: Iterable) -> list:
    """The values that are not ``None``."""
    return [v for v in values if v is not None]


def mean_std(values: Iterable[float | None]) -> dict[str, float | None]:
    """Mean and sample std of the values present (std 0 for one value)."""
    values = present(values)
    if not values:
        return {"mean": None, "std": None}
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def by_seed(condition: dict[str, Any], seeds: list[int], key: str) -> dict[int, float]:
    """Seed → the condition's value of ``key``, for the seeds that recorded one."""
    values = condition.get("per_seed", {}).get(key) or [None] * len(seeds)
    return {seed: v for seed, v in zip(seeds, values, strict=True) if v is not None}


def paired_comparisons(
    conditions: dict[str, Any], seeds: list[int], pairs: list[tuple[str, str]] | None = None
) -> list[dict[str, Any]]:
    """``pairs`` of conditions ``(a, b)`` (default: every pair in the spec's order, ``a``
    first), each with :func:`.paired_stats.paired_difference` of ``b - a`` over their common
    succeeded seeds for each of :data:`.report_format.PAIRED_METRICS`. Every pair rather
    than one reference condition: an experiment names no reference, and with a handful of
    conditions every pair stays short (a rule × noise matrix passes fewer)."""
    if pairs is None:
        names = list(conditions)
        pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    return [
        {
            "a": a,
            "b": b,
            "metrics": {
                key: paired_difference(
                    by_seed(conditions[a], seeds, key), by_seed(conditions[b], seeds, key)
                )
                for key in PAIRED_METRICS
            },
        }
        for a, b in pairs
    ]
