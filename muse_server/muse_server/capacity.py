"""Admission by real-time capacity: how many streams the backend can carry in real time, from
the decoder step times it measured, and whether one more session fits.

A backend that measures itself implements ``load() -> BackendLoad`` (the musicgen backend
does); any other (synth: far faster than real time) is never refused here, only by the
server's ``max_sessions``. The server consults :meth:`Capacity.refusal` before it accepts a
session and reports :meth:`Capacity.snapshot` on ``/healthz``.

Past its real-time capacity a backend may also grow its fragments (:class:`PlayStepsGovernor`):
every fragment carries fixed work besides its decoder steps (the codec re-runs its left
context, each stream's reader wakes up, ...), so bigger fragments make each second of audio
cheaper, at the price of latency. The governor grows ``play_steps`` for every stream while
fragments come slower than real time and shrinks it back when they come fast again.
"""

from __future__ import annotations

import collections
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
    play_steps: int | None = None           # decoder steps per fragment now (None: fixed size)
    play_steps_base: int | None = None      # ... when not under load
    play_steps_max: int | None = None       # ... at most
    fragment_rtf: float | None = None       # median real-time factor of recent fragments


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


class PlayStepsGovernor:
    """Decides the fragment size (decoder steps per fragment) every stream uses, from how fast
    recent fragments were made.

    :meth:`observe` takes each fragment made at the current size (its steps and the seconds
    it took). Once ``window`` of them are in, their median real-time factor (audio seconds per
    second of making it) decides: below ``grow_below`` the size doubles (up to ``most``);
    above ``shrink_above`` it halves (down to ``base``); in between it stays. The gap between
    the two thresholds is the hysteresis: halving the size raises each second's fixed cost,
    so a size is only given back when the fragments come with room to spare, and after every
    change the window refills with fragments of the new size before the next decision.
    """

    def __init__(self, base: int, most: int, frame_rate: float, grow_below: float = 1.2,
                 shrink_above: float = 2.4, window: int = 8):
        if not 1 <= base <= most:
            raise ValueError(f'play steps: need 1 <= base <= most, got base {base}, most {most}')
        if not 0 < grow_below < shrink_above:
            raise ValueError(f'need 0 < grow_below < shrink_above, got {grow_below}, '
                             f'{shrink_above}')
        self.base, self.most = base, most
        self.frame_rate = frame_rate
        self.grow_below, self.shrink_above = grow_below, shrink_above
        self.play_steps = base
        self.changes = 0
        self._recent = collections.deque(maxlen=window)

    @property
    def fragment_rtf(self) -> float | None:
        return statistics.median(self._recent) if self._recent else None

    def observe(self, steps: int, seconds: float) -> int | None:
        """A fragment of ``steps`` decoder steps took ``seconds``; return the new size when this
        changed it, else None. Fragments of another size (made before the last change) do not
        count."""
        if steps != self.play_steps or seconds <= 0:
            return None
        self._recent.append(steps / self.frame_rate / seconds)
        if len(self._recent) < self._recent.maxlen:
            return None
        rtf = self.fragment_rtf
        if rtf < self.grow_below and self.play_steps < self.most:
            size = min(self.most, 2 * self.play_steps)
        elif rtf > self.shrink_above and self.play_steps > self.base:
            size = max(self.base, self.play_steps // 2)
        else:
            return None
        self.play_steps = size
        self.changes += 1
        self._recent.clear()
        return size


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
