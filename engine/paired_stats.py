"""Paired statistics over seeds: how much condition B differs from condition A.

An experiment's runs of one seed share their initial weights and feedback matrices under
every condition, so the per-seed differences ``d_s = b_s - a_s`` remove the seed's own luck
and the comparison is paired (a lab's "same init, different treatment"). For each pair:

- ``mean_difference``: mean of ``d``; ``std_difference`` its sample std (n - 1 dof);
- ``ci95``: ``mean ± t_{0.975, n-1} · std / √n`` (Student t, n - 1 degrees of freedom);
- ``p_t_test``: two-sided paired t-test (what ``scipy.stats.ttest_rel`` gives), which
  assumes the differences are roughly normal;
- ``p_sign_flip``: the exact two-sided sign-flip permutation test: under "no effect" every
  ``d_s`` is as likely to have the other sign, so p is the share of the ``2^n`` sign
  assignments whose ``|mean|`` is at least the observed one. No normality assumed; with
  3 seeds its smallest possible value is 2/8 = 0.25, which is why a lab with few seeds
  should read both (and run more seeds before calling an effect).

Edge cases are answered, not raised: seeds present under only one condition are dropped
(``n`` counts the pairs); no pair → every statistic ``None``; one pair → the difference
only (no spread, no test); zero variance → the CI is the point, the t-test is undefined
(``None``) unless every difference is 0 (then ``p_t_test = 1``), and the sign-flip p-value
stays exact. ``note`` says which case applied. Pure numpy/scipy (no torch).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

CONFIDENCE = 0.95
ZERO_SPREAD = 1e-12  # differences this close (relative) count as equal
MAX_EXACT_PAIRS = 16  # 2^16 sign assignments; above this the sign-flip p is not given


def paired_difference(a: Mapping[int, float], b: Mapping[int, float]) -> dict[str, Any]:
    """Statistics of ``b[s] - a[s]`` over the seeds ``s`` both hold (finite values only)."""
    seeds = sorted(s for s in a.keys() & b.keys() if _finite(a[s]) and _finite(b[s]))
    differences = np.array([b[s] - a[s] for s in seeds], dtype=np.float64)
    n = len(seeds)
    out: dict[str, Any] = {
        "n": n,
        "seeds": seeds,
        "mean_difference": None,
        "std_difference": None,
        "ci95": None,
        "p_t_test": None,
        "p_sign_flip": None,
        "note": None,
    }
    if n == 0:
        out["note"] = "no seed has a value under both conditions"
        return out
    mean = float(differences.mean())
    out["mean_difference"] = mean
    if n == 1:
        out["note"] = "one paired seed: no spread, no confidence interval, no test"
        return out
    # Student t's quantile and CDF from scipy.special, as scipy.stats' t computes them:
    # ~0.25 s to import, where scipy.stats takes ~0.8 s, in each worker's first report.
    from scipy import special

    std = float(differences.std(ddof=1))
    half_width = float(special.stdtrit(n - 1, 0.5 + CONFIDENCE / 2)) * std / math.sqrt(n)
    out |= {
        "std_difference": std,
        "ci95": [mean - half_width, mean + half_width],
        "p_sign_flip": sign_flip_p_value(differences),
    }
    if std <= ZERO_SPREAD * max(1.0, abs(mean)):  # equal up to float rounding
        if abs(mean) <= ZERO_SPREAD:
            out["p_t_test"] = 1.0
            out["note"] = "every difference is 0: the conditions agree on every seed"
        else:
            out["note"] = "every difference is equal: the t-test is undefined (zero variance)"
        return out
    t = mean / (std / math.sqrt(n))
    out["p_t_test"] = float(2 * special.stdtr(n - 1, -abs(t)))  # two-sided
    if n > MAX_EXACT_PAIRS:
        out["note"] = f"more than {MAX_EXACT_PAIRS} pairs: no exact sign-flip p-value"
    return out


def sign_flip_p_value(differences: np.ndarray) -> float | None:
    """Exact two-sided sign-flip p-value of the mean of ``differences`` (``None`` above
    :data:`MAX_EXACT_PAIRS`): the share of all ``2^n`` sign assignments, the observed one
    included, whose ``|mean|`` is at least the observed ``|mean|``."""
    n = len(differences)
    if n == 0 or n > MAX_EXACT_PAIRS:
        return None
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))  # (2^n, n)
    means = np.abs(signs @ differences) / n  # (2^n,)
    observed = abs(float(differences.mean()))
    # A relative tolerance so that float rounding never drops the observed assignment itself.
    at_least = means >= observed - ZERO_SPREAD * max(1.0, observed)
    return float(at_least.mean())


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
