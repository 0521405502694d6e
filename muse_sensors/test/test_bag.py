"""PPG-DaLiA -> rosbag2 -> replay timeline, for both storage plugins."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from muse_common.stamps import to_sec
from muse_common import activities
from muse_sensors import bag, dalia, synthetic
from muse_sensors.replay import ActivityLabel, HeartRateSample, ImuSample, subject_events

START = 1_700_000_000.25


@pytest.fixture(scope='module')
def subject_path(tmp_path_factory):
    return synthetic.write_subject(tmp_path_factory.mktemp('bag'), 3, 1.5, seed=8, chest=False)


@pytest.fixture(scope='module')
def subject(subject_path):
    return dalia.load_subject(subject_path)


def read_raw(path):
    """Everything in a bag, read independently of muse_sensors.bag: {topic: [(t_ns, msg)]}."""
    from muse_common.rosbag_types import muse_typestore
    from rosbags.highlevel import AnyReader

    out = {}
    with AnyReader([Path(path)], default_typestore=muse_typestore()) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        qos = {c.topic: c.ext.offered_qos_profiles for c in reader.connections}
        for connection, t_ns, raw in reader.messages():
            out.setdefault(connection.topic, []).append(
                (t_ns, reader.deserialize(raw, connection.msgtype)))
    return out, types, qos


@pytest.mark.parametrize('storage', bag.STORAGES)
def test_round_trip(tmp_path, subject, storage):
    out = tmp_path / f'bag_{storage}'
    result = bag.write_bag(subject, out, storage, namespace='/muse', start_time_s=START)
    expected = list(subject_events(subject))
    n_imu = sum(isinstance(e, ImuSample) for e in expected)
    n_hr = sum(isinstance(e, HeartRateSample) for e in expected)
    n_truth = sum(isinstance(e, ActivityLabel) for e in expected)
    counts = {'/muse/imu': n_imu, '/muse/heart_rate': n_hr, '/muse/user_profile': 1,
              '/muse/activity/ground_truth': n_truth}
    assert result.counts == counts and n_imu == 90 * 32 and n_hr == len(subject.hr_bpm)
    assert any(out.glob('*.mcap' if storage == 'mcap' else '*.db3'))

    msgs, types, qos = read_raw(out)
    assert types == {'/muse/imu': 'sensor_msgs/msg/Imu', '/muse/heart_rate': 'muse_msgs/msg/HeartRate',
                     '/muse/user_profile': 'muse_msgs/msg/UserProfile',
                     '/muse/activity/ground_truth': 'muse_msgs/msg/ActivityEstimate'}
    assert {t: len(m) for t, m in msgs.items()} == counts
    # The profile is offered latched, so `ros2 bag play` republishes it transient-local.
    assert qos['/muse/user_profile'][0].durability.name == 'TRANSIENT_LOCAL'
    assert qos['/muse/imu'][0].reliability.name == 'BEST_EFFORT'

    imu = msgs['/muse/imu']
    for i in (0, 1, 1000, n_imu - 1):
        t_ns, msg = imu[i]
        assert t_ns == round((START + i / 32) * 1e9)
        assert to_sec(msg.header.stamp) == pytest.approx(START + i / 32, abs=1e-6)
        assert msg.header.frame_id == 'wrist'
        np.testing.assert_allclose([msg.linear_acceleration.x, msg.linear_acceleration.y,
                                    msg.linear_acceleration.z], subject.acc_g[i] * dalia.G, rtol=1e-6)
        assert msg.orientation_covariance[0] == -1 and msg.angular_velocity_covariance[0] == -1
        assert not np.any(msg.linear_acceleration_covariance)
    log_times = [t for t, _ in imu]
    assert all(b > a for a, b in zip(log_times, log_times[1:]))

    hr = msgs['/muse/heart_rate']
    for j, (t_ns, msg) in enumerate(hr):
        assert t_ns == round((START + 2 * j + 8) * 1e9)              # published at window end
        assert to_sec(msg.header.stamp) == pytest.approx(START + 2 * j + 4, abs=1e-6)  # centre
        assert msg.bpm == pytest.approx(subject.hr_bpm[j], rel=1e-6)
        assert msg.source == 'ecg_reference' and msg.confidence == 1.0

    (_, profile), = msgs['/muse/user_profile']
    p = subject.profile
    assert (profile.user_id, profile.age, profile.sex, profile.skin_type, profile.sport) == \
        ('S3', p.age, p.sex_code, p.skin_type, p.sport)
    assert profile.height_cm == pytest.approx(p.height_cm, rel=1e-6)

    truth = msgs['/muse/activity/ground_truth']
    for (t_ns, msg), e in zip(truth, (e for e in expected if isinstance(e, ActivityLabel))):
        assert t_ns == round((START + e.t) * 1e9)
        assert msg.class_id == e.class_id == subject.activity_at(e.t)
        assert msg.label == activities.ACTIVITY_NAMES[e.class_id]
        assert list(msg.probabilities) == [1.0 if k == e.class_id else 0.0 for k in range(9)]
        assert msg.confidence == 1.0 and len(msg.embedding) == 0


@pytest.mark.parametrize('storage', bag.STORAGES)
def test_bag_events_equal_the_subject_timeline(tmp_path, subject, storage):
    out = tmp_path / 'bag'
    bag.write_bag(subject, out, storage, start_time_s=START)
    info = bag.bag_info(out)
    assert info.start_ns == round(START * 1e9)
    assert info.connections['imu'] == '/muse/imu'
    for offset, length in ((0.0, 0.0), (20.0, 10.0)):
        expected = list(subject_events(subject, offset, length))
        got = list(bag.bag_events(info, offset, length))
        assert [type(e) for e in got] == [type(e) for e in expected]
        for a, b in zip(got, expected):
            assert a.t == pytest.approx(b.t, abs=1e-6)
            if isinstance(a, ImuSample):
                assert a.accel_mps2 == pytest.approx(b.accel_mps2, rel=1e-9)
            elif isinstance(a, HeartRateSample):
                assert (a.bpm, a.window_centre_t) == pytest.approx((b.bpm, b.window_centre_t), rel=1e-6)
                assert a.source == b.source
            elif isinstance(a, ActivityLabel):
                assert a.class_id == b.class_id
                assert (math.isnan(a.heart_rate_bpm) and math.isnan(b.heart_rate_bpm)) or \
                    a.heart_rate_bpm == pytest.approx(b.heart_rate_bpm, rel=1e-6)
            else:
                assert a.user_id == b.user_id and a.profile.age == b.profile.age


def test_other_namespace(tmp_path, subject):
    out = tmp_path / 'bag'
    result = bag.write_bag(subject, out, 'mcap', namespace='/lab/wrist2', start_time_s=START)
    assert '/lab/wrist2/imu' in result.counts
    assert bag.bag_info(out).connections['ground_truth'] == '/lab/wrist2/activity/ground_truth'


def test_write_errors(tmp_path, subject):
    (tmp_path / 'exists').mkdir()
    with pytest.raises(FileExistsError, match='exists already'):
        bag.write_bag(subject, tmp_path / 'exists', 'mcap')
    with pytest.raises(ValueError, match="storage 'zip'"):
        bag.write_bag(subject, tmp_path / 'new', 'zip')
    with pytest.raises(ValueError, match='epoch'):
        bag.write_bag(subject, tmp_path / 'new', 'mcap', start_time_s=-1)


def test_reading_something_that_is_not_a_replay_bag(tmp_path, subject):
    with pytest.raises(FileNotFoundError, match='no such bag'):
        bag.bag_info(tmp_path / 'none')
    (tmp_path / 'folder').mkdir()
    with pytest.raises(bag.BagFormatError, match='no metadata.yaml'):
        bag.bag_info(tmp_path / 'folder')
    (tmp_path / 'broken').mkdir()
    (tmp_path / 'broken' / 'metadata.yaml').write_text('rosbag2_bagfile_information: [')
    with pytest.raises(bag.BagFormatError, match='not a readable rosbag2'):
        bag.bag_info(tmp_path / 'broken')
    # A valid bag without the imu topic: say what it holds and what was expected.
    from muse_common.rosbag_types import muse_typestore
    from rosbags.rosbag2 import Writer
    store = muse_typestore()
    with Writer(tmp_path / 'other', version=9) as writer:
        conn = writer.add_connection('/chatter', 'std_msgs/msg/String', typestore=store)
        writer.write(conn, 1, store.serialize_cdr(store.types['std_msgs/msg/String'](data='hi'),
                                                  'std_msgs/msg/String'))
    with pytest.raises(bag.BagFormatError, match=r"no 'imu' topic.*/chatter \[std_msgs/msg/String\]"):
        bag.bag_info(tmp_path / 'other')


def run_cli(*args):
    return subprocess.run([sys.executable, '-m', 'muse_sensors.bag', *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_cli_converts_with_progress(tmp_path, subject_path):
    result = run_cli(subject_path, tmp_path / 'out', '--storage', 'sqlite3', '--namespace', 'muse',
                     '--start-time', START)
    assert result.returncode == 0, result.stderr
    assert '100%' in result.stderr                       # the tqdm bar
    assert 'x real time' in result.stdout
    info = bag.bag_info(tmp_path / 'out')
    assert info.counts['/muse/imu'] == 90 * 32 and info.start_ns == round(START * 1e9)


def test_cli_errors_name_the_input(tmp_path, subject_path):
    bad = tmp_path / 'S9.pkl'
    bad.write_bytes(b'\x80\x02not really')
    result = run_cli(bad, tmp_path / 'out')
    assert result.returncode == 1 and str(bad) in result.stderr and 'error' in result.stderr
    assert not (tmp_path / 'out').exists()
    (tmp_path / 'taken').mkdir()
    result = run_cli(subject_path, tmp_path / 'taken')
    assert result.returncode == 1 and 'exists already' in result.stderr
    result = run_cli(subject_path, tmp_path / 'x', '--storage', 'zip')
    assert result.returncode == 2 and 'invalid choice' in result.stderr
