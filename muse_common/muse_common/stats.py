"""Percentiles and rolling statistics, the one copy every MUSE package uses (plain Python).

(muse_protocol keeps its own small RollingStats: it installs without ROS and must not depend
on this ROS package.)
"""

import math
import threading
from collections import deque

import numpy as np


def percentile(values, q, empty=math.nan):
    """The q-th percentile (0-100) of ``values``; ``empty`` when there are none."""
    values = np.asarray(values, dtype=float)
    return float(np.percentile(values, q)) if values.size else empty


def summarize(values, digits=4):
    """``{'n', 'p50', 'p95', 'max'}`` of the finite ``values`` (None where there are none),
    rounded to ``digits`` decimals: the shape metrics.json reports latencies in."""
    values = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if not values.size:
        return {'n': 0, 'p50': None, 'p95': None, 'max': None}
    return {'n': int(values.size), 'p50': round(percentile(values, 50), digits),
            'p95': round(percentile(values, 95), digits), 'max': round(float(values.max()), digits)}


class RollingStats:
    """Count, mean and max over every sample, percentiles over the latest ``window``.

    Thread-safe: producers (a replay or inference thread) add while diagnostics read.
    ``empty`` is what the mean, max and percentiles read before the first sample.
    """

    def __init__(self, window=200, empty=math.nan):
        self.count = 0
        self.total = 0.0
        self._max = -math.inf
        self._recent = deque(maxlen=window)
        self._empty = empty
        self._lock = threading.Lock()

    def add(self, value):
        value = float(value)
        with self._lock:
            self.count += 1
            self.total += value
            self._max = max(self._max, value)
            self._recent.append(value)

    def __len__(self):
        return len(self._recent)

    @property
    def mean(self):
        return self.total / self.count if self.count else self._empty

    @property
    def max(self):
        return self._max if self.count else self._empty

    @property
    def last(self):
        with self._lock:
            return self._recent[-1] if self._recent else self._empty

    def recent(self):
        """The latest ``window`` samples, oldest first."""
        with self._lock:
            return list(self._recent)

    def percentile(self, q):
        return percentile(self.recent(), q, self._empty)
