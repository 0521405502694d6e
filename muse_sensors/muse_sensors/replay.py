"""What a replay publishes and when: timelines of plain events, and drift-free pacing.

No rclpy here. A *timeline* is an iterator of events in data-time order; it comes from a
PPG-DaLiA subject (:func:`subject_events`) or from a bag written by the converter
(:func:`muse_sensors.bag.bag_events`), and both produce the same events, so the replay node,
the converter and the tests share one definition of the stream:

* ``ProfileRecord`` once at the start (latched by the node),
* ``ImuSample`` for every 32 Hz accelerometer sample, at ``t = i / 32``,
* ``HeartRateSample`` for label j when its window closes, at ``t = 2 j + 8``,
* ``ActivityLabel`` (ground truth) at the start, on every change of the 4 Hz activity and
  every 2 s of data (``t = 2 k``).

The :class:`TimelinePlayer` walks a timeline on its own thread, publishing event ``e`` at wall time
``anchor + (play_time(e) - anchor_play_time) / rate``: every due time is computed from one
anchor, so sleep errors never accumulate (the anchor moves only when the rate changes).
"""

import heapq
import math
import threading
import time
from dataclasses import dataclass

import numpy as np

from muse_common.profile import Profile
from muse_common.stats import RollingStats
from muse_sensors import dalia

GROUND_TRUTH_PERIOD_S = 2.0   # the encoder's stride: one ground truth per estimate
SOURCE_ECG_REFERENCE = 'ecg_reference'   # = muse_msgs/HeartRate.SOURCE_ECG_REFERENCE


@dataclass(frozen=True, slots=True)
class ProfileRecord:
    t: float
    user_id: str
    profile: Profile


@dataclass(frozen=True, slots=True)
class ImuSample:
    t: float
    accel_mps2: tuple          # (x, y, z) [m/s^2]


@dataclass(frozen=True, slots=True)
class HeartRateSample:
    t: float                   # when the value becomes known (its window closes)
    bpm: float
    confidence: float
    source: str
    window_centre_t: float     # data time of the window's centre (the message stamp)


@dataclass(frozen=True, slots=True)
class ActivityLabel:
    t: float
    class_id: int
    heart_rate_bpm: float      # reference heart rate known at t (NaN before the first)


# Events at the same data time come out in this order: the profile before anything that
# might be interpreted with it, and an activity label before the samples it labels.
_ORDER = {ProfileRecord: 0, ActivityLabel: 1, ImuSample: 2, HeartRateSample: 3}


def event_key(event):
    return (event.t, _ORDER[type(event)])


def merge_events(*streams):
    """Merge time-ordered event streams into one, stable by :data:`_ORDER` at equal times."""
    return heapq.merge(*streams, key=event_key)


def replay_span(duration_s, start_offset_s=0.0, length_s=0.0, what='source'):
    """``(t_start, t_end)`` of the data to replay; ``length_s = 0`` means up to the end."""
    if not 0 <= start_offset_s < duration_s:
        raise ValueError(f'start_offset_s={start_offset_s} is outside the {duration_s:.2f} s '
                         f'of data in {what}')
    if length_s < 0:
        raise ValueError(f'duration_s={length_s} must be >= 0 (0 = all)')
    t_end = duration_s if length_s == 0 else min(duration_s, start_offset_s + length_s)
    return float(start_offset_s), float(t_end)


def subject_events(subject, start_offset_s=0.0, duration_s=0.0):
    """The replay timeline of a :class:`dalia.Subject` over ``[start, start + duration]``.

    Accelerometer samples with ``start <= t < end``; heart-rate labels and activity labels
    whose time falls in ``[start, end]`` (a window closing exactly at the end still counts).
    """
    t_start, t_end = replay_span(subject.duration_s, start_offset_s, duration_s, subject.path)
    return merge_events(
        iter([ProfileRecord(t_start, subject.name, subject.profile)]),
        _imu_events(subject, t_start, t_end),
        _heart_rate_events(subject, t_start, t_end),
        _activity_events(subject, t_start, t_end))


def _imu_events(subject, t_start, t_end):
    first = math.ceil(t_start * dalia.ACC_HZ - 1e-9)
    last = min(len(subject.acc_g), math.ceil(t_end * dalia.ACC_HZ - 1e-9))
    acc = subject.acc_g[first:last].astype(np.float64) * dalia.G
    for i, row in enumerate(acc.tolist(), start=first):
        yield ImuSample(i / dalia.ACC_HZ, tuple(row))


def _heart_rate_events(subject, t_start, t_end):
    for j, bpm in enumerate(subject.hr_bpm.tolist()):
        t = subject.hr_window_end_s(j)
        if t_start <= t <= t_end + 1e-9:
            yield HeartRateSample(float(t), bpm, 1.0, SOURCE_ECG_REFERENCE,
                                  t - dalia.HR_WINDOW_S / 2)


def _activity_events(subject, t_start, t_end):
    activity = subject.activity
    k_first = math.floor(t_start * dalia.ACTIVITY_HZ + 1e-9)
    k_last = min(len(activity) - 1, math.floor(t_end * dalia.ACTIVITY_HZ + 1e-9))
    # Label indices where a label is due: changes, and multiples of the period.
    period = int(GROUND_TRUTH_PERIOD_S * dalia.ACTIVITY_HZ)
    ks = np.arange(k_first + 1, k_last + 1)
    changed = ks[activity[ks] != activity[ks - 1]]
    periodic = ks[ks % period == 0]
    due = np.union1d(changed, periodic)
    yield ActivityLabel(t_start, subject.activity_at(t_start), subject.heart_rate_at(t_start))
    for k in due.tolist():
        t = k / dalia.ACTIVITY_HZ
        if t <= t_end:
            yield ActivityLabel(t, int(activity[k]), subject.heart_rate_at(t))


class Pacer:
    """Maps play time (data seconds since the replay began, growing across loops) to due
    times on a monotonic clock, from a single anchor; a rate change re-anchors at 'now'
    so the data already played keeps its place."""

    def __init__(self, rate, clock=time.monotonic):
        self._check(rate)
        self.rate = float(rate)
        self._clock = clock
        self._anchor_wall = clock()
        self._anchor_play = 0.0
        self._lock = threading.Lock()

    @staticmethod
    def _check(rate):
        if not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0):
            raise ValueError(f'rate must be a finite number > 0, got {rate!r}')

    def due(self, play_t):
        with self._lock:
            return self._anchor_wall + (play_t - self._anchor_play) / self.rate

    def play_time_now(self):
        with self._lock:
            return self._anchor_play + (self._clock() - self._anchor_wall) * self.rate

    def set_rate(self, rate):
        self._check(rate)
        now = self._clock()
        with self._lock:
            self._anchor_play += (now - self._anchor_wall) * self.rate
            self._anchor_wall = now
            self.rate = float(rate)


class TimelinePlayer:
    """Plays a timeline on a thread, calling ``emit(event, play_t, lateness_s)`` for each
    event when it is due; loops if asked. ``timeline()`` must return a fresh iterator over
    ``[t_start, t_end]`` each time it is called (once per loop).

    ``on_end()`` is called once when the data ends without looping. Exceptions raised by
    ``emit`` end the playback and are kept in :attr:`error`.
    """

    def __init__(self, timeline, t_start, t_end, emit, *, rate=1.0, loop=False, on_end=None,
                 clock=time.monotonic):
        if not t_end > t_start:
            raise ValueError(f'empty replay span [{t_start}, {t_end}]')
        self._timeline = timeline
        self.t_start = t_start
        self.span_s = t_end - t_start
        self._emit = emit
        self._on_end = on_end
        self._clock = clock
        self.loop = loop
        self.pacer = Pacer(rate, clock)
        # Publication lateness against the schedule [s]: mean and max over everything,
        # percentiles over the latest 4096 events.
        self.lateness = RollingStats(window=4096, empty=0.0)
        self.published = 0
        self.loops_done = 0
        self.data_t = t_start
        self.finished = False
        self.error = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name='replay', daemon=True)

    def start(self):
        self.pacer = Pacer(self.pacer.rate, self._clock)
        self._thread.start()

    def stop(self, timeout=5.0):
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def set_rate(self, rate):
        self.pacer.set_rate(rate)
        self._wake.set()   # a sleeping playback recomputes its due time

    def _wait_until(self, play_t):
        """Sleep until ``play_t`` is due; False if stopped. Woken early by rate changes."""
        while not self._stop.is_set():
            remaining = self.pacer.due(play_t) - self._clock()
            if remaining <= 0:
                return True
            self._wake.wait(remaining)
            self._wake.clear()
        return False

    def _run(self):
        try:
            offset = 0.0
            while True:
                for event in self._timeline():
                    play_t = offset + event.t - self.t_start
                    if not self._wait_until(play_t):
                        return
                    lateness = max(0.0, self._clock() - self.pacer.due(play_t))
                    self._emit(event, play_t, lateness)
                    self.lateness.add(lateness)
                    self.published += 1
                    self.data_t = event.t
                if not self.loop or self._stop.is_set():
                    break
                self.loops_done += 1
                offset += self.span_s
            self.finished = True
        except Exception as exc:   # reported by the owner (node diagnostics, exit code)
            self.error = exc
            self.finished = True
        if self._on_end is not None and not self._stop.is_set():
            self._on_end()
