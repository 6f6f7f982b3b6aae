"""Paired statistics over seeds, against hand computations on constructed inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from noisefa.engine.paired_stats import paired_difference, sign_flip_p_value

# t_{0.975} quantiles of Student t from a printed table, by degrees of freedom.
T_975 = {1: 12.706205, 3: 3.182446}


def test_mean_ci_and_t_test_match_the_hand_computation():
    a = {0: 0.50, 1: 0.60, 2: 0.55, 3: 0.40}
    b = {0: 0.60, 1: 0.80, 2: 0.60, 3: 0.60}
    # d = [0.10, 0.20, 0.05, 0.20]; mean 0.1375; sum of squared deviations
    # 0.0375² + 0.0625² + 0.0875² + 0.0625² = 0.016875; s² = 0.016875 / 3 = 0.005625.
    stats = paired_difference(a, b)
    mean, std = 0.1375, math.sqrt(0.005625)
    assert stats["n"] == 4 and stats["seeds"] == [0, 1, 2, 3]
    assert stats["mean_difference"] == pytest.approx(mean)
    assert stats["std_difference"] == pytest.approx(std)
    half = T_975[3] * std / 2  # √4 = 2
    assert stats["ci95"] == pytest.approx([mean - half, mean + half], rel=1e-6)
    # t = 0.1375 / (0.075 / 2) = 3.6667 on 3 dof; the table puts t_{0.975} = 3.182 and
    # t_{0.99} = 4.541 around it, so 0.02 < p < 0.05 (two-sided; exactly 0.03508).
    assert mean / (std / 2) == pytest.approx(3.666667, rel=1e-6)
    assert stats["p_t_test"] == pytest.approx(0.03508, abs=1e-4)
    # Sign flips: every |d| is ≥ 0.05, and only "all +" and "all −" reach |mean| 0.1375.
    assert stats["p_sign_flip"] == pytest.approx(2 / 16)
    assert stats["note"] is None


def test_sign_flip_counts_every_assignment_at_least_as_extreme():
    # d = [1, 2, 3]: the 8 assignments' |sum| are 6, 4, 2, 0, each twice (±); ≥ 6: 2 of 8.
    assert sign_flip_p_value(np.array([1.0, 2.0, 3.0])) == pytest.approx(2 / 8)
    # d = [3, -1, -1]: |sum| over the 8 assignments: ±(3-1-1)=1, ±(3+1-1)=3, ±(3-1+1)=3,
    # ±(3+1+1)=5 → all 8 are ≥ 1.
    assert sign_flip_p_value(np.array([3.0, -1.0, -1.0])) == pytest.approx(1.0)
    # d = [2, 1, -1]: |sum| ±2, ±4, ±0, ±2 → ≥ 2: 6 of 8.
    assert sign_flip_p_value(np.array([2.0, 1.0, -1.0])) == pytest.approx(6 / 8)


def test_only_seeds_present_under_both_conditions_pair():
    a = {0: 1.0, 1: 2.0, 2: 4.0}
    b = {1: 3.0, 2: 7.0, 3: 9.0}
    # d over seeds 1 and 2: [1, 3]; mean 2, s = √2, CI 2 ± t_{0.975, 1}·√2/√2.
    stats = paired_difference(a, b)
    assert stats["n"] == 2 and stats["seeds"] == [1, 2]
    assert stats["mean_difference"] == pytest.approx(2.0)
    assert stats["ci95"] == pytest.approx([2 - T_975[1], 2 + T_975[1]], rel=1e-6)
    assert stats["p_sign_flip"] == pytest.approx(2 / 4)


def test_one_seed_gives_the_difference_without_statistics():
    stats = paired_difference({0: 0.5}, {0: 0.7})
    assert stats["n"] == 1
    assert stats["mean_difference"] == pytest.approx(0.2)
    assert stats["std_difference"] is None and stats["ci95"] is None
    assert stats["p_t_test"] is None and stats["p_sign_flip"] is None
    assert "one paired seed" in stats["note"]


def test_no_common_seed_gives_nothing():
    stats = paired_difference({0: 0.5}, {1: 0.7})
    assert stats["n"] == 0 and stats["mean_difference"] is None
    assert "no seed" in stats["note"]


def test_missing_and_non_finite_values_are_dropped():
    stats = paired_difference({0: 1.0, 1: float("nan"), 2: 2.0}, {0: 2.0, 1: 5.0, 2: 4.0})
    assert stats["seeds"] == [0, 2]
    assert stats["mean_difference"] == pytest.approx(1.5)


def test_equal_differences_have_a_point_ci_and_no_t_test():
    stats = paired_difference({0: 0.1, 1: 0.2, 2: 0.3}, {0: 0.2, 1: 0.3, 2: 0.4})
    assert stats["mean_difference"] == pytest.approx(0.1)
    assert stats["ci95"] == pytest.approx([0.1, 0.1])
    assert stats["p_t_test"] is None
    assert stats["p_sign_flip"] == pytest.approx(2 / 8)
    assert "zero variance" in stats["note"]


def test_identical_conditions_have_p_one():
    values = {0: 0.5, 1: 0.6, 2: 0.7}
    stats = paired_difference(values, dict(values))
    assert stats["mean_difference"] == 0.0 and stats["ci95"] == [0.0, 0.0]
    assert stats["p_t_test"] == 1.0 and stats["p_sign_flip"] == 1.0
    assert "every difference is 0" in stats["note"]


@pytest.mark.parametrize("n", [2, 3, 5, 9, 17])
def test_the_t_interval_and_test_are_scipy_stats_own(n):
    """The report takes Student t from scipy.special (a lighter import): the same numbers
    as scipy.stats' t distribution and paired t-test."""
    from scipy import stats

    rng = np.random.default_rng(n)
    a = dict(enumerate(rng.normal(0.5, 0.1, n)))
    b = {seed: value + rng.normal(0.02, 0.05) for seed, value in a.items()}
    d = np.array([b[s] - a[s] for s in range(n)])
    got = paired_difference(a, b)
    half = stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / math.sqrt(n)
    assert got["ci95"] == pytest.approx([d.mean() - half, d.mean() + half], rel=1e-12)
    expected_p = stats.ttest_rel(list(b.values()), list(a.values())).pvalue
    assert got["p_t_test"] == pytest.approx(expected_p, rel=1e-9)
