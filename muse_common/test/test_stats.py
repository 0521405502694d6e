"""The shared percentile and rolling statistics."""

import math
import threading

import numpy as np
import pytest

from muse_common.stats import RollingStats, percentile, summarize


def test_percentile_matches_numpy_and_names_the_empty_value():
    values = [3.0, 1.0, 2.0, 10.0]
    assert percentile(values, 50) == pytest.approx(np.percentile(values, 50))
    assert percentile(values, 95) == pytest.approx(np.percentile(values, 95))
    assert math.isnan(percentile([], 50))
    assert percentile([], 50, empty=0.0) == 0.0


def test_summarize_ignores_non_finite_values_and_rounds():
    assert summarize([1.0, float('nan'), 2.0, None, 3.0, float('inf')]) == {
        'n': 3, 'p50': 2.0, 'p95': 2.9, 'max': 3.0}
    assert summarize([1 / 3]) == {'n': 1, 'p50': 0.3333, 'p95': 0.3333, 'max': 0.3333}
    assert summarize([]) == {'n': 0, 'p50': None, 'p95': None, 'max': None}


def test_rolling_stats_keep_all_time_mean_and_max_and_recent_percentiles():
    stats = RollingStats(window=3, empty=0.0)
    assert (stats.mean, stats.max, stats.last, stats.percentile(95), len(stats)) == (0, 0, 0, 0, 0)
    for value in (10.0, 1.0, 2.0, 3.0):
        stats.add(value)
    assert stats.count == 4 and stats.mean == pytest.approx(4.0) and stats.max == 10.0
    assert stats.recent() == [1.0, 2.0, 3.0] and stats.last == 3.0
    assert stats.percentile(50) == 2.0      # over the window only: 10 has left it


def test_rolling_stats_are_safe_across_threads():
    stats = RollingStats(window=100)

    def add():
        for k in range(2000):
            stats.add(k)

    threads = [threading.Thread(target=add) for _ in range(4)]
    for thread in threads:
        thread.start()
    for _ in range(200):
        stats.percentile(95)
    for thread in threads:
        thread.join()
    assert stats.count == 8000 and len(stats) == 100
