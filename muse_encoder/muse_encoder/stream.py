"""From a stream of IMU samples to the encoder's windows (no ROS).

:class:`WindowStream` keeps the last window of acceleration in a ring buffer and hands out one
window every ``stride`` samples (data time counted in samples, so an accelerated or slowed
replay gives the same windows), restarts when the stamps jump back, and ages the last heart rate
out after ``hr_timeout`` samples. :class:`LatestQueue` carries windows to the inference thread,
dropping the oldest when inference falls behind. The activity_encoder node is their ROS adapter.
"""

import queue
from dataclasses import dataclass

import numpy as np

STAMP_RESET_S = 1.0           # a stamp this far behind the last one restarts the window


@dataclass(frozen=True)
class Window:
    """One window of acceleration [g], oldest first, and the stamps of its first and last
    samples [s]."""

    samples_g: np.ndarray
    start_s: float
    end_s: float


class WindowStream:
    """Ring buffer of the last ``window`` samples, cut every ``stride`` samples. Not
    thread-safe: the owner serialises calls."""

    RESET = 'reset'                  # push(): stamps jumped back, the window restarted
    OUT_OF_ORDER = 'out_of_order'    # push(): a stamp slightly behind the last one, kept

    def __init__(self, window, stride, hr_timeout):
        self.window = int(window)
        self._acc = np.zeros((self.window, 3), np.float32)
        self._stamps = np.zeros(self.window, np.float64)
        self.configure(stride, hr_timeout)
        self.resets = 0
        self.stamp_regressions = 0
        self._last_stamp = None
        self.reset()

    def configure(self, stride, hr_timeout):
        """Change the stride and the heart-rate timeout [samples] while running."""
        self.stride = int(stride)
        self.hr_timeout = int(hr_timeout)

    def reset(self):
        self._head = 0                # next write position in the ring
        self.filled = 0
        self.samples = 0              # samples since (re)start
        self._since_window = 0
        self._heart_rate = None       # (bpm, sample count at arrival)

    def set_heart_rate(self, bpm):
        self._heart_rate = (float(bpm), self.samples)

    def heart_rate(self):
        """The last heart rate [bpm], or None if there is none or it is older than
        ``hr_timeout`` samples."""
        if self._heart_rate is None or self.samples - self._heart_rate[1] > self.hr_timeout:
            return None
        return self._heart_rate[0]

    def push(self, sample_g, stamp_s):
        """Add one sample; returns ``(window or None, RESET / OUT_OF_ORDER / None)``."""
        event = None
        if self._last_stamp is not None and stamp_s < self._last_stamp:
            if self._last_stamp - stamp_s > STAMP_RESET_S:
                # Time jumped back (clock or sim time reset, a bag played again): the buffer no
                # longer holds one stretch of motion.
                self.reset()
                self.resets += 1
                event = self.RESET
            else:
                # A sample delivered out of order, or a clock correction: keep it, the window is
                # still the last stretch of data in arrival order.
                self.stamp_regressions += 1
                event = self.OUT_OF_ORDER
        self._last_stamp = stamp_s
        self._acc[self._head] = sample_g
        self._stamps[self._head] = stamp_s
        self._head = (self._head + 1) % self.window
        self.filled = min(self.filled + 1, self.window)
        self.samples += 1
        self._since_window += 1
        if self.filled < self.window or self._since_window < self.stride:
            return None, event
        self._since_window = 0
        order = np.r_[self._head:self.window, 0:self._head]
        return Window(self._acc[order], float(self._stamps[order[0]]),
                      float(self._stamps[order[-1]])), event


class LatestQueue:
    """A bounded queue that, when full, drops its oldest item for the newest: the newest window
    matters most."""

    def __init__(self, maxsize):
        self.maxsize = maxsize
        self._queue = queue.Queue(maxsize=maxsize)

    def put(self, item):
        """Add ``item``; True when an older item was dropped to make room."""
        try:
            self._queue.put_nowait(item)
            return False
        except queue.Full:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                pass
            self._queue.put_nowait(item)
            return True

    def get(self, timeout):
        """The oldest item, or None after ``timeout`` s without one."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def qsize(self):
        return self._queue.qsize()
