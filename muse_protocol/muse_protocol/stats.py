"""Rolling statistics the bridge reports in its diagnostics: written on its asyncio thread, read
from the ROS executor, hence the locks."""

from __future__ import annotations

import collections
import threading
import time

import numpy as np


class RollingStats:
    """The last ``size`` samples of a quantity, for medians and percentiles."""

    def __init__(self, size: int = 200):
        self._values = collections.deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, value: float):
        with self._lock:
            self._values.append(float(value))

    def __len__(self):
        return len(self._values)

    def percentile(self, q: float) -> float:
        """The q-th percentile (0-100); NaN when empty."""
        with self._lock:
            values = list(self._values)
        return float(np.percentile(values, q)) if values else float('nan')

    @property
    def last(self) -> float:
        with self._lock:
            return self._values[-1] if self._values else float('nan')


class RateMeter:
    """Events per second over a sliding window."""

    def __init__(self, window_s: float = 5.0, clock=time.monotonic):
        self.window_s = window_s
        self._clock = clock
        self._times = collections.deque()
        self._lock = threading.Lock()

    def tick(self):
        with self._lock:
            self._times.append(self._clock())
            self._trim()

    def rate(self) -> float:
        with self._lock:
            self._trim()
            return len(self._times) / self.window_s

    def _trim(self):
        cutoff = self._clock() - self.window_s
        while self._times and self._times[0] < cutoff:
            self._times.popleft()
