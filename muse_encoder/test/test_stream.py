"""IMU samples to windows: ring buffer, stride, stamps and the drop-oldest queue."""

import numpy as np
import pytest

from muse_encoder.stream import LatestQueue, WindowStream


def feed(stream, n, first=0, rate=32.0, t0=100.0):
    out = []
    for i in range(first, first + n):
        window, event = stream.push(np.array([i, 0.0, 0.0]), t0 + i / rate)
        out.append((window, event))
    return out


def test_first_window_when_full_then_one_per_stride_holding_the_latest_samples():
    stream = WindowStream(window=8, stride=4, hr_timeout=100)
    results = feed(stream, 16)
    cut = [i for i, (w, _) in enumerate(results) if w is not None]
    assert cut == [7, 11, 15]
    last = results[15][0]
    assert last.samples_g[:, 0].tolist() == list(range(8, 16))     # oldest first
    assert last.start_s == pytest.approx(100 + 8 / 32) and last.end_s == pytest.approx(100 + 15 / 32)


def test_a_stamp_far_behind_restarts_the_window_and_a_small_one_is_kept():
    stream = WindowStream(window=8, stride=4, hr_timeout=100)
    feed(stream, 10)
    assert stream.push(np.zeros(3), 100 + 9 / 32 - 0.01)[1] == WindowStream.OUT_OF_ORDER
    assert stream.stamp_regressions == 1 and stream.filled == 8
    window, event = stream.push(np.zeros(3), 50.0)
    assert event == WindowStream.RESET and window is None
    assert stream.resets == 1 and stream.filled == 1 and stream.samples == 1


def test_heart_rate_ages_out_in_samples_and_a_reset_forgets_it():
    stream = WindowStream(window=8, stride=4, hr_timeout=5)
    assert stream.heart_rate() is None
    stream.set_heart_rate(90.0)
    feed(stream, 5)
    assert stream.heart_rate() == 90.0
    feed(stream, 1, first=5)
    assert stream.heart_rate() is None
    stream.set_heart_rate(80.0)
    stream.reset()
    assert stream.heart_rate() is None


def test_stride_changes_while_running():
    stream = WindowStream(window=8, stride=4, hr_timeout=100)
    feed(stream, 8)
    stream.configure(stride=2, hr_timeout=100)
    cut = [i for i, (w, _) in enumerate(feed(stream, 6, first=8)) if w is not None]
    assert cut == [1, 3, 5]


def test_latest_queue_drops_the_oldest_when_full():
    q = LatestQueue(2)
    assert [q.put(k) for k in (1, 2, 3)] == [False, False, True]
    assert q.qsize() == 2
    assert [q.get(0.1), q.get(0.1), q.get(0.01)] == [2, 3, None]
