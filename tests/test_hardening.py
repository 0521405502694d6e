"""The whole graph through the runner, hardened: graphs on one host stay apart, a foreign
publisher is flagged, the token shows nowhere, a crashed player is restarted, and a failed or
bad replay fails the session.

Each session is short (a 1.5-2 minute synthetic subject at a high rate); every wait is on a
condition (a log line, a file, a process), never a fixed sleep.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from graph_session import REPO_ROOT, runner_command, runner_env, session_logs, session_of
from muse_common.domain import claim_domain

pytestmark = pytest.mark.slow

TOKEN = 'hardening-test-token-4d1f2a9c'


def start_runner(out_dir, *args, env=None):
    return subprocess.Popen(runner_command(out_dir, *args), env=env or runner_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=REPO_ROOT, start_new_session=True)


def finish(runner, out_dir, timeout=600):
    try:
        output, _ = runner.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(runner.pid, signal.SIGINT)
        output, _ = runner.communicate(timeout=180)
    session = session_of(out_dir)
    return runner.returncode, session, output + session_logs(session)


def metrics_of(session):
    return json.loads((session / 'metrics.json').read_text())


def descendants(pid):
    """{pid: argv} of every process below ``pid`` (from /proc)."""
    children = {}
    for stat in Path('/proc').glob('[0-9]*/stat'):
        try:
            fields = stat.read_text().rsplit(')', 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    found, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            try:
                argv = (Path('/proc') / str(child) / 'cmdline').read_bytes().split(b'\0')
            except OSError:
                continue
            found[child] = [a.decode(errors='replace') for a in argv if a]
            todo.append(child)
    return found


def wait_for_log(session_dir_of, name, text, runner, timeout=300):
    """Wait until logs/<name>.log of the (first) session contains ``text``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        session = session_dir_of()
        log = session / 'logs' / f'{name}.log' if session else None
        if log is not None and log.exists() and text in log.read_text(errors='replace'):
            return session
        assert runner.poll() is None, f'the runner ended early:\n{runner.stdout.read()}'
        time.sleep(0.1)
    raise AssertionError(f'{name} never logged {text!r}')


def check_clean(metrics, output, minutes):
    talk = metrics['cross_talk']
    assert talk['foreign_traffic'] is False, (talk, output)
    assert talk['imu_published_by_replay'] == minutes * 60 * 32
    assert 0.8 * talk['imu_published_by_replay'] <= talk['imu_recorded'] \
        <= talk['imu_published_by_replay'], talk
    assert talk['listeners'] == ['S1'] and talk['user_profiles'] == 1
    assert talk['prompt_id_regressions'] == 0 and talk['fragment_repeats'] == 0
    ids = [p['prompt_id'] for p in metrics['prompts']]
    assert ids == list(range(1, len(ids) + 1)) and len(ids) >= 2, ids
    assert metrics['fragments']['duplicate'] == 0 and metrics['fragments']['count'] > 10


def test_two_graphs_started_at_once_stay_apart(tmp_path):
    minutes = 1.5
    runs = []
    for index in range(2):
        out_dir = tmp_path / f'graph{index}'
        runs.append((start_runner(out_dir, '--synthetic-minutes', minutes, '--rate', 8,
                                  '--seed', 5 + index, '--tail-s', 2), out_dir))
    results = [finish(runner, out_dir) for runner, out_dir in runs]
    domains = []
    for code, session, output in results:
        assert code == 0, output
        domains.append(next(line for line in output.splitlines() if 'ROS domain' in line))
        check_clean(metrics_of(session), output, minutes)
    assert domains[0] != domains[1], domains


@pytest.fixture(scope='module')
def hardened_session(tmp_path_factory):
    """One session on a domain this test holds and knows, with the token in the environment
    only; while it runs: the command lines and the bridge's parameters are read, a foreign
    publisher joins, and the player is killed."""
    import rclpy
    from muse_msgs.msg import UserProfile
    from rcl_interfaces.srv import GetParameters, ListParameters
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Imu

    from muse_common import qos

    tmp_path = tmp_path_factory.mktemp('hardened')
    out_dir = tmp_path / 'sessions'
    lease = claim_domain(given=None, env={})      # a free domain, shared with the runner only
    env = runner_env(MUSE_SERVER_TOKEN=TOKEN)
    runner = start_runner(out_dir, '--synthetic-minutes', 2.0, '--rate', 4, '--seed', 3,
                          '--tail-s', 3, '--domain-id', lease.domain_id, env=env)
    seen = {}
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=lease.domain_id)
    node = rclpy.create_node('foreign_graph', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        session = wait_for_log(lambda: session_of(out_dir), 'audio_player', 'prompt 1 audible',
                               runner)
        seen['cmdlines'] = descendants(runner.pid)

        def call(client, request):
            assert client.wait_for_service(timeout_sec=60.0)
            future = client.call_async(request)
            executor.spin_until_future_complete(future, timeout_sec=60.0)
            return future.result()

        listed = call(node.create_client(ListParameters, '/muse/cloud_bridge/list_parameters'),
                      ListParameters.Request()).result.names
        values = call(node.create_client(GetParameters, '/muse/cloud_bridge/get_parameters'),
                      GetParameters.Request(names=list(listed))).values
        seen['bridge_parameters'] = (list(listed), ' '.join(map(str, values)))

        # Another graph's sensors on this domain: a second IMU publisher and another listener.
        imu = node.create_publisher(Imu, '/muse/imu', qos.SENSOR)
        profile = node.create_publisher(UserProfile, '/muse/user_profile', qos.LATCHED)
        profile.publish(UserProfile(user_id='S9', age=30, sex=1, height_cm=180.0,
                                    weight_kg=80.0))
        for _ in range(200):
            imu.publish(Imu())
            executor.spin_once(timeout_sec=0.01)

        player = next(pid for pid, argv in descendants(runner.pid).items()
                      if any(a.endswith('audio_player') for a in argv))
        os.kill(player, signal.SIGKILL)
        seen['killed_player'] = player
        wait_for_log(lambda: session, 'audio_player', 'audio player ready: recording to '
                     f'{session / "session_1.wav"}', runner)
        # Keep the foreign publishers until the recorder's 1 Hz check has counted them.
        wait_for_log(lambda: session, 'sensor_replay', 'end of data', runner)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    code, session, output = finish(runner, out_dir)
    lease.release()
    return code, session, output, seen


def test_the_token_is_on_no_command_line_parameter_or_log(hardened_session):
    code, session, output, seen = hardened_session
    assert code == 0, output
    cmdlines = seen['cmdlines']
    assert any(any(a.endswith('cloud_bridge') for a in argv) for argv in cmdlines.values())
    assert any('muse_music_server' in ' '.join(argv) for argv in cmdlines.values())
    for pid, argv in cmdlines.items():
        assert TOKEN not in ' '.join(argv), f'pid {pid}: {argv}'
    names, values = seen['bridge_parameters']
    assert 'token' not in names and 'server_url' in names, names
    assert TOKEN not in values
    assert TOKEN not in output
    for path in session.rglob('*'):
        if path.is_file() and path.suffix != '.wav':
            assert TOKEN.encode() not in path.read_bytes(), f'the token is in {path}'


def test_a_foreign_publisher_on_the_domain_is_flagged(hardened_session):
    code, session, output, _ = hardened_session
    metrics = metrics_of(session)
    talk = metrics['cross_talk']
    assert talk['foreign_traffic'] is True, talk
    assert talk['max_publishers']['/muse/imu'] == 2, talk
    assert talk['listeners'] == ['S1', 'S9'], talk
    assert talk['imu_recorded'] > 0 and talk['imu_published_by_replay'] > 0
    assert any('FOREIGN TRAFFIC' in line for line in metrics['summary'])
    assert 'FOREIGN TRAFFIC' in output


def test_a_killed_player_is_restarted_and_the_session_finishes_with_audio(hardened_session):
    import soundfile
    code, session, output, seen = hardened_session
    assert code == 0, output
    assert 'audio_player exited with code -9; restarting it' in output
    assert 'restarted after a crash: audio_player x1' in output
    first, second = session / 'session.wav', session / 'session_1.wav'
    for wav in (first, second):
        info = soundfile.info(str(wav))
        assert info.frames > info.samplerate, f'{wav.name}: {info.frames} frames'
    assert str(second) in output   # the runner names the second segment
    assert metrics_of(session)['audio']['present']


def test_a_replay_that_dies_fails_the_session(tmp_path):
    out_dir = tmp_path / 'sessions'
    runner = start_runner(out_dir, '--synthetic-minutes', 1.5, '--rate', 2, '--tail-s', 1)
    wait_for_log(lambda: session_of(out_dir), 'sensor_replay', 'replay started', runner)
    replay = next(pid for pid, argv in descendants(runner.pid).items()
                  if any(a.endswith('sensor_replay') for a in argv))
    os.kill(replay, signal.SIGKILL)
    code, session, output = finish(runner, out_dir)
    assert code != 0, output
    assert 'sensor_replay failed with code -9' in output
    assert 'replay finished' not in output


@pytest.mark.parametrize('content', [None, b'not a pickle'], ids=['missing', 'garbage'])
def test_a_bad_subject_fails_before_any_session_folder(tmp_path, content):
    subject = tmp_path / 'S99.pkl'
    if content is not None:
        subject.write_bytes(content)
    out_dir = tmp_path / 'sessions'
    result = subprocess.run(
        [sys.executable, '-m', 'muse_bringup.run', '--subject', str(subject), '--output-dir',
         str(out_dir)], capture_output=True, text=True, timeout=120, env=runner_env(),
        cwd=REPO_ROOT)
    assert result.returncode == 1
    assert 'S99.pkl' in result.stderr and '[muse_run] error' in result.stderr, result.stderr
    assert not out_dir.exists() or not any(out_dir.iterdir())
