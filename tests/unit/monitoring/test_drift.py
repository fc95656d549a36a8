"""Drift metrics against textbook computations written out here with plain loops, to 1e-9."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from finalmile.monitoring import drift

rng = np.random.default_rng(7)
BASE = rng.normal(0, 1, 3000)
WINDOW = rng.normal(0.4, 1.3, 2000)


def textbook_counts(values: np.ndarray, edges: list[float]) -> list[int]:
    """Bins: (-inf, e0), [e0, e1), ..., [e(k-1), ek], (ek, inf), counted one value at a time."""
    counts = [0] * (len(edges) + 1)
    for v in values:
        if v < edges[0]:
            counts[0] += 1
        elif v > edges[-1]:
            counts[-1] += 1
        else:
            for i in range(len(edges) - 1):
                if edges[i] <= v < edges[i + 1] or (i == len(edges) - 2 and v == edges[-1]):
                    counts[i + 1] += 1
                    break
    return counts


def textbook_quantile_edges(values: np.ndarray, bins: int) -> list[float]:
    ordered = sorted(values)
    n = len(ordered)
    edges = []
    for j in range(bins + 1):
        position = j / bins * (n - 1)  # linear interpolation between closest ranks
        lo = math.floor(position)
        hi = min(lo + 1, n - 1)
        edges.append(ordered[lo] + (ordered[hi] - ordered[lo]) * (position - lo))
    return edges


def test_quantile_edges_and_histograms_match_counting_by_hand() -> None:
    edges = drift.bin_edges(BASE, "quantile", 5)
    np.testing.assert_allclose(edges, textbook_quantile_edges(BASE, 5), rtol=0, atol=1e-12)
    assert drift.histogram(WINDOW, edges).tolist() == textbook_counts(WINDOW, list(edges))
    assert drift.histogram(BASE, edges).tolist() == textbook_counts(BASE, list(edges))
    assert drift.histogram(BASE, edges)[[0, -1]].tolist() == [0, 0]  # the baseline's own tails are empty
    equal = drift.bin_edges(BASE, "equal", 4)
    width = (BASE.max() - BASE.min()) / 4
    np.testing.assert_allclose(equal, [BASE.min() + i * width for i in range(5)], atol=1e-12)
    assert drift.bin_edges(BASE, "edges", edges=[1.0, -1.0, 0.0]).tolist() == [-1.0, 0.0, 1.0]


def test_binned_metrics_match_the_formulas() -> None:
    edges = list(drift.bin_edges(BASE, "quantile", 5))
    p = [c / len(BASE) for c in textbook_counts(BASE, edges)]
    q = [c / len(WINDOW) for c in textbook_counts(WINDOW, edges)]
    floor = 1e-4
    expected_psi = sum(
        (max(b, floor) - max(a, floor)) * math.log(max(b, floor) / max(a, floor)) for a, b in zip(p, q, strict=True)
    )
    pa_, qa_ = np.array(p), np.array(q)
    assert drift.psi(pa_, qa_) == pytest.approx(expected_psi, abs=1e-9)
    assert drift.max_diff(pa_, qa_) == pytest.approx(max(abs(a - b) for a, b in zip(p, q, strict=True)), abs=1e-12)
    assert drift.sum_diff(pa_, qa_) == pytest.approx(sum(abs(a - b) for a, b in zip(p, q, strict=True)), abs=1e-12)
    m = [(a + b) / 2 for a, b in zip(p, q, strict=True)]
    kl = lambda x, y: sum(a * math.log2(a / b) for a, b in zip(x, y, strict=True) if a > 0)  # noqa: E731
    assert drift.jensen_shannon(pa_, qa_) == pytest.approx(math.sqrt((kl(p, m) + kl(q, m)) / 2), abs=1e-9)


def test_a_hand_computed_psi() -> None:
    # Baseline shares 0.5/0.5, window 0.9/0.1: PSI = (0.9-0.5)ln(0.9/0.5) + (0.1-0.5)ln(0.1/0.5)
    p, q = np.array([0.0, 0.5, 0.5, 0.0]), np.array([0.0, 0.9, 0.1, 0.0])
    assert drift.psi(p, q) == pytest.approx(0.4 * math.log(1.8) - 0.4 * math.log(0.2), abs=1e-12)


def test_empty_bins_give_finite_scores() -> None:
    p, q = np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0])
    for metric in (drift.psi, drift.max_diff, drift.sum_diff, drift.jensen_shannon):
        assert math.isfinite(metric(p, q))
    assert drift.jensen_shannon(p, q) == pytest.approx(1.0)  # disjoint: the maximum in base 2
    assert drift.psi(p, p) == 0.0


def test_ks_and_wasserstein_match_the_definitions() -> None:
    a, b = BASE[:400], WINDOW[:300]
    points = sorted(set(a) | set(b))
    cdf = lambda xs, t: sum(1 for x in xs if x <= t) / len(xs)  # noqa: E731
    statistic = max(abs(cdf(a, t) - cdf(b, t)) for t in points)
    got, pvalue = drift.ks(a, b)
    assert got == pytest.approx(statistic, abs=1e-12)
    assert pvalue == pytest.approx(stats.ks_2samp(a, b).pvalue, abs=1e-12)
    area = sum(abs(cdf(a, t0) - cdf(b, t0)) * (t1 - t0) for t0, t1 in zip(points, points[1:], strict=False))
    assert drift.wasserstein(a, b) == pytest.approx(area, abs=1e-9)
    assert drift.wasserstein(BASE, WINDOW) == pytest.approx(stats.wasserstein_distance(BASE, WINDOW), abs=1e-12)
    assert drift.wasserstein(a, a) == 0.0


def test_chi_squared_matches_the_contingency_formula() -> None:
    base = np.array(["a"] * 50 + ["b"] * 30 + ["c"] * 20, dtype=object)
    window = np.array(["a"] * 20 + ["b"] * 20 + ["c"] * 40 + ["d"] * 5, dtype=object)
    statistic, pvalue, categories, base_counts, window_counts = drift.chi_squared(base, window)
    assert categories == ["a", "b", "c", "d"] and base_counts.tolist() == [50, 30, 20, 0]
    table = [base_counts.tolist(), window_counts.tolist()]
    total = sum(map(sum, table))
    expected = 0.0
    for i in range(2):
        for j in range(4):
            e = sum(table[i]) * (table[0][j] + table[1][j]) / total
            expected += (table[i][j] - e) ** 2 / e
    assert statistic == pytest.approx(expected, abs=1e-9)
    assert pvalue == pytest.approx(stats.chi2.sf(expected, 3), abs=1e-12)
