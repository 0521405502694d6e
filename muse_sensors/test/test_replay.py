"""The replay timeline and its pacing, without ROS."""

import math
import threading

import numpy as np
import pytest

from muse_sensors import dalia, synthetic
from muse_sensors.replay import (ActivityLabel, HeartRateSample, ImuSample, Pacer, TimelinePlayer,
                                  ProfileRecord, replay_span, subject_events)


@pytest.fixture(scope='module')
def subject():
    return dalia.subject_from_dict(synthetic.generate_subject(2, 2, seed=3, chest=False), 'S2.pkl')


def by_kind(events):
    out = {ImuSample: [], HeartRateSample: [], ActivityLabel: [], ProfileRecord: []}
    for e in events:
        out[type(e)].append(e)
    return out


def test_full_timeline(subject):
    events = list(subject_events(subject))
    kinds = by_kind(events)
    assert len(kinds[ImuSample]) == len(subject.acc_g) == 120 * 32
    assert [e.t for e in kinds[ImuSample][:3]] == [0.0, 1 / 32, 2 / 32]
    np.testing.assert_allclose([kinds[ImuSample][5].accel_mps2], [subject.acc_g[5] * dalia.G],
                               rtol=1e-6)
    # Heart rate j is published when its window closes (2j + 8), stamped at its centre.
    hr = kinds[HeartRateSample]
    assert len(hr) == len(subject.hr_bpm)
    assert [e.t for e in hr[:3]] == [8.0, 10.0, 12.0]
    assert [e.window_centre_t for e in hr[:2]] == [4.0, 6.0]
    assert [e.bpm for e in hr] == subject.hr_bpm.tolist()
    assert {e.source for e in hr} == {'ecg_reference'}
    # Ground truth at the start, every 2 s and at every change.
    truth = kinds[ActivityLabel]
    times = [e.t for e in truth]
    assert times[0] == 0.0 and times == sorted(times)
    assert set(np.arange(0, 120, 2.0)) <= set(times)   # no activity sample exists at 120 s
    changes = [k / 4 for k in range(1, len(subject.activity))
               if subject.activity[k] != subject.activity[k - 1]]
    assert changes and set(changes) <= set(times)
    for e in truth:
        assert e.class_id == subject.activity_at(e.t)
        assert (math.isnan(e.heart_rate_bpm) and math.isnan(subject.heart_rate_at(e.t))) or \
            e.heart_rate_bpm == subject.heart_rate_at(e.t)
    assert kinds[ProfileRecord] == [ProfileRecord(0.0, 'S2', subject.profile)]
    # One time order; at equal times profile, then label, then IMU, then heart rate.
    assert [type(e) for e in events[:3]] == [ProfileRecord, ActivityLabel, ImuSample]
    assert all(a.t <= b.t for a, b in zip(events, events[1:]))
    at_8 = [type(e) for e in events if e.t == 8.0]
    assert at_8 == [ActivityLabel, ImuSample, HeartRateSample]


def test_offset_and_duration(subject):
    kinds = by_kind(subject_events(subject, start_offset_s=10.0, duration_s=20.0))
    imu_t = [e.t for e in kinds[ImuSample]]
    assert imu_t[0] == 10.0 and imu_t[-1] == 30.0 - 1 / 32 and len(imu_t) == 20 * 32
    assert [e.t for e in kinds[HeartRateSample]] == list(np.arange(10.0, 30.01, 2.0))
    assert kinds[ProfileRecord][0].t == 10.0
    assert kinds[ActivityLabel][0].t == 10.0


@pytest.mark.parametrize('offset, length, words', [
    (120.0, 0.0, 'start_offset_s=120.0 is outside'), (-1.0, 0.0, 'outside'),
    (0.0, -5.0, 'duration_s=-5.0'),
])
def test_span_errors(subject, offset, length, words):
    with pytest.raises(ValueError, match=words):
        list(subject_events(subject, offset, length))


def test_span_clamps_to_the_data():
    assert replay_span(100.0, 90.0, 50.0) == (90.0, 100.0)
    assert replay_span(100.0, 0.0, 0.0) == (0.0, 100.0)


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_pacer_due_times_come_from_one_anchor():
    clock = FakeClock()
    pacer = Pacer(2.0, clock)
    assert pacer.due(0.0) == 100.0
    # However late anything ran, the due time of sample n depends on n alone (no drift).
    clock.now = 250.0
    assert pacer.due(10.0) == 105.0
    assert pacer.due(3600.0) == 100.0 + 1800.0


def test_pacer_rate_change_keeps_the_played_data_in_place():
    clock = FakeClock()
    pacer = Pacer(1.0, clock)
    clock.now = 110.0                          # 10 s of data played
    pacer.set_rate(10.0)
    assert pacer.play_time_now() == pytest.approx(10.0)
    assert pacer.due(10.0) == pytest.approx(110.0)
    assert pacer.due(20.0) == pytest.approx(111.0)
    with pytest.raises(ValueError, match='rate must be'):
        pacer.set_rate(0.0)
    with pytest.raises(ValueError, match='rate must be'):
        Pacer(float('nan'))


def test_player_publishes_everything_in_order_then_ends(subject):
    got, ended = [], threading.Event()
    player = TimelinePlayer(lambda: subject_events(subject, 0, 4.0), 0.0, 4.0,
                    lambda e, play_t, late: got.append((e, play_t, late)), rate=400.0,
                    on_end=ended.set)
    player.start()
    assert ended.wait(30)
    expected = list(subject_events(subject, 0, 4.0))
    assert [e for e, _, _ in got] == expected
    assert [p for _, p, _ in got] == [e.t for e in expected]
    assert all(late >= 0 for _, _, late in got)
    assert player.finished and player.error is None and player.published == len(expected)
    assert player.lateness.count == len(expected)


def test_player_loops_with_play_time_running_on(subject):
    got = []
    two_loops = threading.Event()

    def emit(event, play_t, late):
        got.append((event, play_t))
        if play_t >= 5.0:
            two_loops.set()

    player = TimelinePlayer(lambda: subject_events(subject, 10.0, 2.0), 10.0, 12.0, emit, rate=100.0,
                    loop=True)
    player.start()
    assert two_loops.wait(30)
    player.stop()
    imu = [(e.t, p) for e, p in got if isinstance(e, ImuSample)]
    assert imu[0] == (10.0, 0.0)
    # The second loop replays data time 10 s at play time 2 s; play time never goes back.
    assert (10.0, 2.0) in imu
    plays = [p for _, p in imu]
    assert all(b > a for a, b in zip(plays, plays[1:]))
    assert player.loops_done >= 2


def test_player_reports_emit_errors_and_ends(subject):
    ended = threading.Event()

    def emit(event, play_t, late):
        if play_t > 1.0:
            raise RuntimeError('publisher gone')

    player = TimelinePlayer(lambda: subject_events(subject), 0.0, subject.duration_s, emit, rate=200.0,
                    on_end=ended.set)
    player.start()
    assert ended.wait(30)
    assert isinstance(player.error, RuntimeError) and player.finished


def test_player_stop_interrupts_a_long_wait(subject):
    player = TimelinePlayer(lambda: subject_events(subject), 0.0, subject.duration_s,
                    lambda *a: None, rate=0.001)      # the second event is ~30 s away
    player.start()
    player.stop(timeout=10)
    assert not player._thread.is_alive()
    assert player.published <= 3
