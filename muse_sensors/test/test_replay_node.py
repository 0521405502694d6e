"""The sensor_replay node, run as its own process, heard by a subscriber in this process."""

import statistics
import sys

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Imu

from muse_common import activities, qos, stamps
from muse_msgs.msg import ActivityEstimate, HeartRate, UserProfile
from muse_sensors import bag, dalia, synthetic
from muse_sensors.replay import ActivityLabel, HeartRateSample, ImuSample, subject_events

START = 1_700_000_000.0
NS = '/muse'
TOPICS = {'imu': f'{NS}/imu', 'hr': f'{NS}/heart_rate', 'profile': f'{NS}/user_profile',
          'truth': f'{NS}/activity/ground_truth'}
# Everything must arrive to be counted: the node's QoS override parameters (tested here too)
# make the sensor topics reliable with a history deep enough that a subscriber slowed by a
# busy machine loses nothing at 100x, the subscribers keep everything, and the test activates
# the node (a managed node) only once this process has discovered its publishers.
RELIABLE_ALL = QoSProfile(depth=10000, reliability=ReliabilityPolicy.RELIABLE)
OVERRIDES = [f'qos_overrides.{TOPICS[k]}.publisher.{policy}' for k in ('imu', 'hr')
             for policy in ('reliability:=reliable', 'depth:=10000')]
NODE = f'{NS}/sensor_replay'


@pytest.fixture(scope='module')
def subject_path(tmp_path_factory):
    return synthetic.write_subject(tmp_path_factory.mktemp('node'), 5, 1, seed=21, chest=False)


@pytest.fixture(scope='module')
def subject(subject_path):
    return dalia.load_subject(subject_path)


@pytest.fixture(scope='module')
def bag_path(tmp_path_factory, subject):
    path = tmp_path_factory.mktemp('nodebag') / 'bag'
    bag.write_bag(subject, path, 'mcap', namespace=NS, start_time_s=START)
    return path


def replay(spawn, *params, name='sensor_replay'):
    args = [sys.executable, '-m', 'muse_sensors.sensor_replay_node', '--ros-args',
            '-r', f'__ns:={NS}']
    for p in params:
        args += ['-p', p]
    return spawn(args, name=name)


def listen(collector):
    collector.subscribe(Imu, TOPICS['imu'], RELIABLE_ALL)
    collector.subscribe(HeartRate, TOPICS['hr'], RELIABLE_ALL)
    collector.subscribe(ActivityEstimate, TOPICS['truth'], RELIABLE_ALL)
    collector.subscribe(UserProfile, TOPICS['profile'], qos.LATCHED)


def wait_exit(proc, timeout=120):
    code = proc.wait(timeout=timeout)
    return code, proc.output()


def start(lifecycle, ros_node, proc, wait_until, topics=('imu', 'hr', 'truth', 'profile')):
    """Configure the replay, wait until this process has discovered its publishers (what a
    start delay used to guess at), activate it; returns its lifecycle client."""
    client = lifecycle(NODE, 'configure', process=proc)
    wait_until(lambda: all(ros_node.count_publishers(TOPICS[k]) for k in topics), 30,
               'the replay\'s publishers', proc)
    assert client.change_state('activate'), proc.output()
    return client


def run_to_end(client, proc, wait_until, timeout=120):
    """Wait until the replay deactivates itself at the end of its data, then stop it (Ctrl-C);
    returns (exit code, output)."""
    wait_until(lambda: client.get_state() == 'inactive', timeout,
               'the replay to deactivate at the end of its data', proc)
    code = proc.stop()
    return code, proc.output()


def check_against_timeline(collector, subject, expected_events):
    """Counts, order and values of what arrived equal the replay timeline."""
    expected_imu = [e for e in expected_events if isinstance(e, ImuSample)]
    expected_hr = [e for e in expected_events if isinstance(e, HeartRateSample)]
    expected_truth = [e for e in expected_events if isinstance(e, ActivityLabel)]
    imu = collector.wait_for(TOPICS['imu'], len(expected_imu), timeout=30)
    hr = collector.wait_for(TOPICS['hr'], len(expected_hr), timeout=30)
    truth = collector.wait_for(TOPICS['truth'], len(expected_truth), timeout=30)
    assert len(imu) == len(expected_imu)
    assert len(hr) == len(expected_hr)
    assert len(truth) == len(expected_truth)
    for msg, e in zip(imu, expected_imu):
        assert (msg.linear_acceleration.x, msg.linear_acceleration.y, msg.linear_acceleration.z) \
            == pytest.approx(e.accel_mps2, rel=1e-9)
    assert imu[0].header.frame_id == 'wrist'
    assert imu[0].orientation_covariance[0] == -1 and imu[0].angular_velocity_covariance[0] == -1
    assert [m.bpm for m in hr] == pytest.approx([e.bpm for e in expected_hr], rel=1e-6)
    assert {m.source for m in hr} == {HeartRate.SOURCE_ECG_REFERENCE}
    assert [m.class_id for m in truth] == [e.class_id for e in expected_truth]
    assert all(list(m.probabilities) == [float(k == m.class_id) for k in range(9)] for m in truth)
    assert [m.label for m in truth] == [activities.ACTIVITY_NAMES[e.class_id] for e in expected_truth]
    profile = collector.wait_for(TOPICS['profile'], 1, timeout=10)
    assert len(profile) == 1
    p = subject.profile
    assert (profile[0].user_id, profile[0].age, profile[0].sex, profile[0].sport) == \
        (subject.name, p.age, p.sex_code, p.sport)
    return imu, hr, truth


def imu_stamps(imu):
    return [stamps.to_sec(m.header.stamp) for m in imu]


def test_replay_at_10x_delivers_every_message_with_monotonic_stamps(
        spawn, collector, ros_node, lifecycle, wait_until, subject, subject_path):
    listen(collector)
    proc = replay(spawn, f'source:={subject_path}', 'rate:=10.0', *OVERRIDES)
    client = start(lifecycle, ros_node, proc, wait_until)
    code, output = run_to_end(client, proc, wait_until)
    assert code == 0, output
    assert 'end of data' in output and 'lateness mean' in output
    imu, hr, truth = check_against_timeline(collector, subject, list(subject_events(subject)))
    assert len(imu) == 60 * 32
    t = imu_stamps(imu)
    steps = [b - a for a, b in zip(t, t[1:])]
    assert min(steps) > 0                                    # strictly monotonic
    # Stamps are the schedule (1 / (32 Hz * 10)) in the node's clock, whatever the jitter.
    assert statistics.median(steps) == pytest.approx(1 / 320, rel=0.05)
    assert t[-1] - t[0] == pytest.approx((len(t) - 1) / 320, rel=0.05)
    # Heart rate j is stamped at its window centre: 4 s of data (0.4 s here) before it is
    # published at 2j + 8 s, i.e. at the stamp of IMU sample (2j + 4) * 32.
    for j in (0, 10):
        assert stamps.to_sec(hr[j].header.stamp) == pytest.approx(t[(2 * j + 4) * 32], abs=0.02)
    truth_t = [stamps.to_sec(m.header.stamp) for m in truth]
    assert all(b >= a for a, b in zip(truth_t, truth_t[1:]))


def test_replay_from_a_bag(spawn, collector, ros_node, lifecycle, wait_until, subject, bag_path):
    listen(collector)
    proc = replay(spawn, f'source:={bag_path}', 'rate:=20.0', *OVERRIDES)
    client = start(lifecycle, ros_node, proc, wait_until)
    code, output = run_to_end(client, proc, wait_until)
    assert code == 0, output
    imu, _, _ = check_against_timeline(collector, subject, list(subject_events(subject)))
    t = imu_stamps(imu)
    assert min(b - a for a, b in zip(t, t[1:])) > 0


def test_sim_time_and_clock_follow_the_bag(spawn, collector, ros_node, lifecycle, wait_until,
                                           subject, bag_path):
    listen(collector)
    collector.subscribe(Clock, '/clock', QoSProfile(depth=10000,
                                                     reliability=ReliabilityPolicy.BEST_EFFORT))
    proc = replay(spawn, f'source:={bag_path}', 'rate:=10.0', 'start_offset_s:=20.0',
                  'duration_s:=10.0', 'publish_clock:=true', 'use_sim_time:=true', *OVERRIDES)
    client = start(lifecycle, ros_node, proc, wait_until)
    code, output = run_to_end(client, proc, wait_until)
    assert code == 0, output
    expected = list(subject_events(subject, 20.0, 10.0))
    imu, hr, _ = check_against_timeline(collector, subject, expected)
    # In sim time the stamps are the bag's recorded times, exactly as `ros2 bag play --clock`.
    assert imu_stamps(imu) == pytest.approx([START + e.t for e in expected
                                             if isinstance(e, ImuSample)], abs=1e-6)
    # The first window closing in the span closes at 20 s; its centre is 4 s earlier.
    assert stamps.to_sec(hr[0].header.stamp) == pytest.approx(START + 20.0 - 4.0, abs=1e-6)
    clock = [stamps.to_sec(m.clock) for m in collector.messages('/clock')]
    assert clock and all(b >= a for a, b in zip(clock, clock[1:]))
    assert clock[0] >= START + 20.0 - 1e-6 and clock[-1] == pytest.approx(START + 30.0, abs=1e-6)


def test_loop_keeps_stamps_running_and_stays_until_stopped(spawn, collector, ros_node, lifecycle,
                                                           wait_until, subject_path):
    listen(collector)
    proc = replay(spawn, f'source:={subject_path}', 'rate:=20.0', 'duration_s:=2.0',
                  'loop:=true', *OVERRIDES)
    client = start(lifecycle, ros_node, proc, wait_until)
    imu = collector.wait_for(TOPICS['imu'], 4 * 64, timeout=60)
    assert len(imu) >= 4 * 64                                # four passes over 2 s of data
    assert client.get_state() == 'active'
    assert proc.stop() == 0
    t = imu_stamps(collector.messages(TOPICS['imu']))
    assert min(b - a for a, b in zip(t, t[1:])) > 0
    first = collector.messages(TOPICS['imu'])[:64]
    again = collector.messages(TOPICS['imu'])[64:128]
    assert [m.linear_acceleration.x for m in again] == [m.linear_acceleration.x for m in first]


def replay_status(collector):
    for array in reversed(collector.messages('/diagnostics')):
        for status in array.status:
            if status.name == 'sensor_replay: replay':
                return status.message, {kv.key: kv.value for kv in status.values}
    return None, {}


def test_at_the_end_it_deactivates_itself_and_reports_end_of_data(spawn, collector, ros_node,
                                                                  lifecycle, wait_until,
                                                                  subject_path):
    collector.subscribe(DiagnosticArray, '/diagnostics', 50)
    proc = replay(spawn, f'source:={subject_path}', 'rate:=50.0', 'duration_s:=5.0')
    client = lifecycle(NODE, 'configure', 'activate', process=proc)
    wait_until(lambda: replay_status(collector)[0] == 'end of data', 60,
               'diagnostics reporting the end of the data', proc)
    message, values = replay_status(collector)
    assert values['end_of_data'] == 'True' and values['published_imu'] == str(5 * 32)
    assert float(values['lateness_max_ms']) >= float(values['lateness_mean_ms']) >= 0
    assert float(values['data_time_s']) == pytest.approx(5.0, abs=0.05)
    assert client.get_state() == 'inactive'                  # alive, publishing nothing
    # Activated again, it replays from the start; cleaned up, it lets the source go.
    assert client.change_state('activate')
    wait_until(lambda: client.get_state() == 'inactive', 60, 'the second pass to end', proc)
    assert client.change_state('cleanup') and client.get_state() == 'unconfigured'
    assert proc.stop() == 0
    assert proc.output().count('end of data') == 2


def test_rate_can_change_while_playing(spawn, collector, ros_node, lifecycle, wait_until,
                                       subject_path):
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    listen(collector)
    proc = replay(spawn, f'source:={subject_path}', 'rate:=0.2', *OVERRIDES)
    replay_client = start(lifecycle, ros_node, proc, wait_until)
    client = ros_node.create_client(SetParameters, f'{NS}/sensor_replay/set_parameters')
    assert client.wait_for_service(timeout_sec=30)

    def set_param(name, value):
        # A request sent before the reply path is discovered can go unanswered (a DDS race
        # wait_for_service does not cover); setting a parameter twice is harmless, so retry.
        request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
        for _ in range(3):
            future = client.call_async(request)
            for _ in range(75):
                if future.done():
                    return future.result().results[0]
                collector.wait_for('never', 1, timeout=0.2)
        pytest.fail(f'no reply to setting {name}')

    assert not set_param('rate', -1.0).successful
    assert not set_param('source', '/elsewhere.pkl').successful   # read-only
    assert not set_param('loop', 'yes').successful
    # At 0.2x a minute of data takes 5 minutes; at 100x the rest is over in a moment.
    assert set_param('rate', 100.0).successful
    code, output = run_to_end(replay_client, proc, wait_until, timeout=60)
    assert code == 0, output
    assert len(collector.wait_for(TOPICS['imu'], 60 * 32, timeout=10)) == 60 * 32


def bad_source(tmp_path, kind):
    if kind == 'missing':
        return str(tmp_path / 'missing.pkl')
    if kind == 'garbage':
        (tmp_path / 'S1.pkl').write_bytes(b'garbage')
        return str(tmp_path / 'S1.pkl')
    if kind == 'folder':
        (tmp_path / 'folder').mkdir()
        return str(tmp_path / 'folder')
    return ''


@pytest.mark.parametrize('kind, words', [
    ('missing', 'no such PPG-DaLiA subject file'), ('garbage', 'is not a pickle'),
    ('folder', 'not a rosbag2 folder'), ('empty', "parameter 'source' is empty"),
])
def test_bad_source_exits_non_zero_with_a_clear_error(spawn, tmp_path, kind, words):
    source = bad_source(tmp_path, kind)
    proc = replay(spawn, f"source:='{source}'", 'autostart:=true')
    code, output = wait_exit(proc, timeout=60)
    assert code == 1, output
    assert words in output and 'cannot replay' in output
    assert source in output
    assert 'Traceback' not in output


def test_under_a_manager_a_bad_source_fails_configure_and_the_node_stays(spawn, lifecycle,
                                                                         tmp_path):
    source = bad_source(tmp_path, 'missing')
    proc = replay(spawn, f"source:='{source}'")
    client = lifecycle(NODE, process=proc)
    assert not client.change_state('configure')
    assert client.get_state() == 'unconfigured'
    assert proc.stop() == 0
    assert 'no such PPG-DaLiA subject file' in proc.output()


def test_offset_beyond_the_data_is_refused(spawn, subject_path):
    proc = replay(spawn, f'source:={subject_path}', 'start_offset_s:=600.0', 'autostart:=true')
    code, output = wait_exit(proc, timeout=60)
    assert code == 1 and 'start_offset_s=600.0 is outside the 60.00 s' in output, output


def test_installed_parameter_file_is_valid(spawn, lifecycle, wait_until, subject_path):
    from ament_index_python.packages import get_package_share_directory
    from pathlib import Path

    params_file = Path(get_package_share_directory('muse_sensors')) / 'config' / 'sensor_replay.yaml'
    assert params_file.is_file()
    proc = spawn([sys.executable, '-m', 'muse_sensors.sensor_replay_node', '--ros-args',
                  '-r', f'__ns:={NS}', '--params-file', str(params_file),
                  '-p', f'source:={subject_path}', '-p', 'rate:=50.0', '-p', 'duration_s:=5.0',
                  '-p', 'autostart:=true'])
    code, output = run_to_end(lifecycle(NODE, process=proc), proc, wait_until, timeout=60)
    assert code == 0, output
    assert "'imu': 160" in output and 'end of data' in output
