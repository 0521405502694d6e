"""Admission by real-time capacity: how many streams the backend can carry in real time, from
the decoder step times it measured, and whether one more session fits.

A backend that measures itself implements ``load() -> BackendLoad`` (the musicgen backend
does); any other (synth: far faster than real time) is never refused here, only by the
server's ``max_sessions``. The server consults :meth:`Capacity.refusal` before it accepts a
session and reports :meth:`Capacity.snapshot` on ``/healthz``.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class BackendLoad:
    """What a backend knows about its own speed.

    ``realtime_streams``: how many streams it can step at ``margin`` times real time (None until
    it has measured a step); ``streams``: streams open now; ``step_rate_hz``: decoder steps per
    second each stream gets at the current load (None until measured); ``steps_per_second_needed``:
    the steps one stream needs per second of audio.
    """

    streams: int
    realtime_streams: int | None
    step_rate_hz: float | None
    steps_per_second_needed: float
    margin: float
    detail: str = ''


def realtime_streams(step_seconds_of, steps_per_second: float, margin: float,
                     most: int = 4096) -> int:
    """The largest n with ``step_seconds_of(n) * steps_per_second * margin <= 1`` (0 if not
    even one stream), ``step_seconds_of`` being non-decreasing in n."""
    budget = 1.0 / (steps_per_second * margin)
    if step_seconds_of(1) > budget:
        return 0
    low, high = 1, 2
    while high <= most and step_seconds_of(high) <= budget:
        low, high = high, high * 2
    high = min(high, most + 1)
    while high - low > 1:
        middle = (low + high) // 2
        if step_seconds_of(middle) <= budget:
            low = middle
        else:
            high = middle
    return low


def step_time_model(samples):
    """A step-time model ``n -> seconds`` fitted to ``(batch size, seconds)`` samples of
    batched steps, or None without samples.

    Several batch sizes: least squares ``a + b * n`` over the median time of each size (a, b
    clamped at >= 0). One size n0 only: its median t0 for up to n0 streams, growing in
    proportion beyond (pessimistic: batching is cheaper than that, so admission errs on the
    safe side until larger batches have been measured).
    """
    by_size: dict[int, list[float]] = {}
    for size, seconds in samples:
        by_size.setdefault(int(size), []).append(float(seconds))
    if not by_size:
        return None
    points = sorted((size, statistics.median(times)) for size, times in by_size.items())
    if len(points) == 1:
        size, seconds = points[0]
        return lambda n: seconds * max(1.0, n / size)
    mean_n = sum(n for n, _ in points) / len(points)
    mean_t = sum(t for _, t in points) / len(points)
    spread = sum((n - mean_n) ** 2 for n, _ in points)
    slope = max(0.0, sum((n - mean_n) * (t - mean_t) for n, t in points) / spread)
    intercept = max(0.0, mean_t - slope * mean_n)
    if slope == 0.0 and intercept == 0.0:
        intercept = mean_t
    return lambda n: intercept + slope * n


class Capacity:
    """Consulted by the server for every new session."""

    def __init__(self, backend):
        self._backend = backend

    def load(self) -> BackendLoad | None:
        load = getattr(self._backend, 'load', None)
        return load() if callable(load) else None

    def refusal(self, sessions: int) -> str | None:
        """Why a session joining ``sessions`` open ones would not be served in real time, or None
        to admit it (also while the backend has not measured itself yet)."""
        load = self.load()
        if load is None or load.realtime_streams is None:
            return None
        if sessions + 1 <= load.realtime_streams:
            return None
        return (f'the {self._backend.name} backend carries {load.realtime_streams} real-time '
                f'stream(s) at {load.margin:g}x real time (measured: {load.detail}); '
                f'{sessions} session(s) open; retry later')

    def snapshot(self) -> dict | None:
        load = self.load()
        return None if load is None else asdict(load)
