"""The cloud_bridge node as its own process against a real server process: prompts in, ordered
AudioFragments out, a prompt switch, the server killed and restarted mid-session, diagnostics,
runtime parameter validation."""

import os
import signal
import sys
import time

from diagnostic_msgs.msg import DiagnosticArray
from muse_msgs.msg import AudioFragment, MusicPrompt
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters

from server_test_support import TOKEN, free_port, server_command, server_env, wait_for_health
from muse_common import qos, stamps

BRIDGE_PARAMETERS = ['-p', 'reconnect_min_s:=0.1', '-p', 'reconnect_max_s:=0.5',
                     '-p', 'ping_period_s:=0.5']


def _bridge_command(port, *extra):
    return [sys.executable, '-m', 'muse_cloud_bridge.cloud_bridge_node', '--ros-args',
            '-r', '__ns:=/muse', '-p', 'autostart:=true', '-p', f'server_url:=ws://127.0.0.1:{port}',
            *BRIDGE_PARAMETERS, *extra]


# The token reaches the bridge through the environment only (never a parameter).
BRIDGE_ENV = {'MUSE_SERVER_TOKEN': TOKEN}


def _prompt(node, prompt_id, style, bpm):
    msg = MusicPrompt(prompt_id=prompt_id, text=f'{style} for walking', activity='walking',
                      activity_class_id=7, heart_rate_bpm=95.0, target_bpm=bpm, energy=0.6,
                      style=style, reason=MusicPrompt.REASON_ACTIVITY_CHANGE)
    msg.header.stamp = node.get_clock().now().to_msg()
    return msg


def _wait(condition, timeout=60.0, what='condition'):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f'timed out waiting for {what}')


def _statuses(collector, name):
    found = []
    for array in collector.messages('/diagnostics'):
        for status in array.status:
            if status.name == f'cloud_bridge: {name}':
                found.append({kv.key: kv.value for kv in status.values} | {
                    '_level': status.level, '_message': status.message})
    return found


def test_bridge_streams_ordered_fragments_across_a_server_kill_and_restart(spawn, collector,
                                                                           ros_node):
    port = free_port()
    collector.subscribe(AudioFragment, '/muse/audio', qos.AUDIO)
    collector.subscribe(DiagnosticArray, '/diagnostics', 50)
    prompts = ros_node.create_publisher(MusicPrompt, '/muse/prompt', qos.LATCHED)
    audio = lambda: collector.messages('/muse/audio')  # noqa: E731

    # the bridge comes up first and waits for a server that is not there yet
    bridge = spawn(_bridge_command(port), name='cloud_bridge', env=BRIDGE_ENV)
    first = _prompt(ros_node, 1, 'ambient', 72.0)
    prompts.publish(first)
    _wait(lambda: any(s['state'] != 'connected' for s in _statuses(collector, 'server connection')),
          what='a disconnected diagnostics status')
    server = spawn(server_command(port, 'synth'), name='server_a',
                   env=server_env())
    wait_for_health(port, server)
    _wait(lambda: len(audio()) >= 6, what='fragments of prompt 1')

    second = _prompt(ros_node, 2, 'upbeat_pop', 126.0)
    prompts.publish(second)
    _wait(lambda: sum(m.prompt_id == 2 for m in audio()) >= 4, what='fragments of prompt 2')

    # Diagnostics are sampled once a second: let them name this server's session before it dies.
    _wait(lambda: any(s['state'] == 'connected' and s['session_id']
                      for s in _statuses(collector, 'server connection')),
          what='diagnostics reporting the first session')
    os.killpg(server.proc.pid, signal.SIGKILL)  # no goodbye: like a crashed GPU box
    server.wait(timeout=10)
    before_restart = len(audio())
    last = audio()[-1]
    restarted = spawn(server_command(port, 'synth'), name='server_b',
                      env=server_env())
    wait_for_health(port, restarted)
    _wait(lambda: len(audio()) >= before_restart + 6, what='fragments after the restart')

    fragments = audio()
    keys = [(m.prompt_id, m.seq) for m in fragments]
    assert keys == sorted(keys) and len(set(keys)) == len(keys), 'reordered or duplicated'
    ones = [m for m in fragments if m.prompt_id == 1]
    twos = [m for m in fragments if m.prompt_id == 2]
    assert [m.seq for m in ones] == list(range(len(ones)))
    assert [m.seq for m in twos] == list(range(len(twos)))  # numbering resumed, no gap
    # the bridge splices forks (hello replace) and the synth forks: prompt 2 continues the
    # stream from just ahead of the listener, replacing audio sent beyond it
    assert ones[0].is_first and ones[-1].is_last and not twos[0].is_first
    assert twos[0].replaces > 0
    resumed = next(m for m in fragments if (m.prompt_id, m.seq) > (last.prompt_id, last.seq))
    assert (resumed.prompt_id, resumed.seq) == (2, last.seq + 1)
    assert resumed.is_first  # a fresh stream from the new server: the player crossfades
    assert sum(m.is_first for m in twos) == 1
    for message, prompt in ((ones[0], first), (twos[-1], second)):
        assert message.prompt_stamp == prompt.header.stamp
    for m in fragments:
        assert (m.sample_rate, m.channels, m.encoding) == (32000, 1,
                                                           AudioFragment.ENCODING_PCM_S16LE)
        assert len(m.data) > 0 and len(m.data) % 2 == 0
        assert 0 < stamps.to_sec(m.generation_started) <= stamps.to_sec(m.generation_finished)

    _wait(lambda: any(s['state'] == 'connected' and int(s['connects']) >= 2
                      for s in _statuses(collector, 'server connection')),
          what='diagnostics reporting the reconnect')
    sessions = {s['session_id'] for s in _statuses(collector, 'server connection')} - {''}
    assert len(sessions) == 2, sessions  # one per server process
    connection = _statuses(collector, 'server connection')[-1]
    assert float(connection['rtt_ms_p50']) >= 0.0 and connection['_level'] == b'\x00'
    # Diagnostics are sampled once a second: wait for a report that has counted what arrived.
    stream = _wait(lambda: next((s for s in reversed(_statuses(collector, 'stream'))
                                 if int(s['fragments']) >= len(fragments) - 2), None),
                   what='stream diagnostics counting the fragments that arrived')
    assert float(stream['first_fragment_ms_p95']) >= float(stream['first_fragment_ms_p50']) > 0
    assert stream['dropped_out_of_order'] == '0'
    assert bridge.stop() == 0, bridge.log_path.read_text()
    assert 'Traceback' not in bridge.log_path.read_text()


def test_bridge_rejects_invalid_parameter_changes_and_prompts(spawn, ros_node):
    port = free_port()
    bridge = spawn(_bridge_command(port), name='cloud_bridge', env=BRIDGE_ENV)
    client = ros_node.create_client(SetParameters, '/muse/cloud_bridge/set_parameters')
    assert client.wait_for_service(timeout_sec=60.0), bridge.output()

    prompts = ros_node.create_publisher(MusicPrompt, '/muse/prompt', qos.LATCHED)
    bad = _prompt(ros_node, 3, 'jazz', 0.0)  # no tempo: the server would refuse it
    prompts.publish(bad)
    _wait(lambda: 'prompt 3 not forwarded' in bridge.output(), what='the rejection in the log')
    assert "field 'target_bpm' is 0.0" in bridge.output()

    def set_values(**values):
        request = SetParameters.Request()
        for name, value in values.items():
            if isinstance(value, str):
                parameter_value = ParameterValue(type=ParameterType.PARAMETER_STRING,
                                                 string_value=value)
            else:
                parameter_value = ParameterValue(type=ParameterType.PARAMETER_DOUBLE,
                                                 double_value=value)
            request.parameters.append(Parameter(name=name, value=parameter_value))
        future = client.call_async(request)
        _wait(future.done, what='set_parameters')
        return future.result().results

    result, = set_values(reconnect_min_s=5.0)  # above reconnect_max_s (0.5)
    assert not result.successful and 'reconnect_min_s' in result.reason
    result, = set_values(server_url='http://127.0.0.1:1')
    assert not result.successful and 'ws://' in result.reason
    result, = set_values(reconnect_max_s=20.0)
    assert result.successful
    result, = set_values(server_url=f'ws://127.0.0.1:{port}')
    assert result.successful
    assert bridge.stop() == 0, bridge.log_path.read_text()


def test_bridge_token_is_in_no_parameter_and_no_log_line(spawn, ros_node, tmp_path):
    from rcl_interfaces.srv import GetParameters, ListParameters
    port = free_port()
    token_file = tmp_path / 'token'
    token_file.write_text(TOKEN + '\n')
    token_file.chmod(0o600)
    bridge = spawn(_bridge_command(port, '-p', f'token_file:={token_file}'),
                   name='cloud_bridge', env={'MUSE_SERVER_TOKEN': ''})
    lister = ros_node.create_client(ListParameters, '/muse/cloud_bridge/list_parameters')
    getter = ros_node.create_client(GetParameters, '/muse/cloud_bridge/get_parameters')
    assert lister.wait_for_service(timeout_sec=60.0), bridge.output()
    assert getter.wait_for_service(timeout_sec=60.0), bridge.output()
    listed = lister.call_async(ListParameters.Request())
    _wait(listed.done, what='list_parameters')
    names = list(listed.result().result.names)
    assert 'token_file' in names and 'token' not in names, names
    got = getter.call_async(GetParameters.Request(names=names))
    _wait(got.done, what='get_parameters')
    rendered = ' '.join(str(value) for value in got.result().values)
    assert TOKEN not in rendered
    assert bridge.stop() == 0, bridge.output()
    assert TOKEN not in bridge.output()


def test_bridge_refuses_a_token_file_others_can_read(spawn, tmp_path):
    token_file = tmp_path / 'token'
    token_file.write_text(TOKEN + '\n')
    token_file.chmod(0o644)
    bridge = spawn(_bridge_command(free_port(), '-p', f'token_file:={token_file}'),
                   name='cloud_bridge')
    assert bridge.wait(timeout=60) != 0
    assert 'readable by others' in bridge.output() and 'chmod 600' in bridge.output()
    assert TOKEN not in bridge.output()
