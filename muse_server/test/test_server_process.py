"""The server as its own process (`python -m muse_server.server`, as `muse_music_server`
runs it): the real synth backend, token sources, health, SIGTERM, command-line errors, and that
nothing it imports needs ROS or torch."""

import json
import signal
import subprocess
import sys

import numpy as np
import pytest

from server_test_support import (TOKEN, Received, collect, frames_of, free_port, http_get, run,
                                 server_command, server_env, wait_for_health)
from muse_protocol import protocol
from muse_protocol.client import MusicClient, ServerError


def _prompt(prompt_id, style, energy, bpm):
    return protocol.Prompt(prompt_id=prompt_id, text=f'{style} music', style=style,
                           activity='walking', energy=energy, target_bpm=bpm, heart_rate_bpm=96.0)


def test_synth_server_process_streams_music_switches_without_gap_and_stops_on_sigterm(spawn,
                                                                                      tmp_path):
    port = free_port()
    token_file = tmp_path / 'token'
    token_file.write_text(TOKEN + '\n')
    server = spawn(server_command(port, 'synth', '--token-file', token_file,
                                  '--fragment-s', '0.5', '--max-ahead-s', '2.0', '--retarget'),
                   name='muse_music_server', env=server_env())
    health = wait_for_health(port, server)
    assert (health['backend'], health['sample_rate'], health['auth']) == ('synth', 32000, True)

    async def scenario():
        async with MusicClient(f'ws://127.0.0.1:{port}', token=TOKEN,
                               encoding=protocol.Encoding.PCM_F32LE) as client:
            received = Received()
            await client.send_prompt(_prompt(1, 'ambient', 0.2, 70.0))
            await collect(client, received, frames_of(1, 6))
            await client.send_prompt(_prompt(2, 'upbeat_pop', 0.9, 128.0))
            await collect(client, received, frames_of(2, 6))
        with pytest.raises(ServerError):
            await MusicClient(f'ws://127.0.0.1:{port}', token='not it').connect()
        return received

    received = run(scenario())
    frames = [f for _, f in received.frames]
    keys = [f.order_key for f in frames]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    boundary = len(received.of_prompt(1))
    assert frames[0].is_first and frames[boundary - 1].is_last
    # the synth retargets its running stream: prompt 2 continues it (CONTINUES, not FIRST)
    assert frames[boundary].continues and not frames[boundary].is_first
    assert sum(f.is_first for f in frames) == 1
    assert [f.seq for f in received.of_prompt(2)] == list(range(len(received.of_prompt(2))))
    for prompt_id in (1, 2):
        audio = np.concatenate([f.samples() for f in received.of_prompt(prompt_id)])
        assert np.abs(audio).max() <= 1.0
        assert np.sqrt(np.mean(audio ** 2)) > 0.01, f'prompt {prompt_id} is silent'
    start, played = received.frames[0][0], 0.0
    for arrival, frame in received.frames:  # a real-time listener never runs dry
        assert arrival <= start + played + 0.1, frame.order_key
        played += frame.duration_s

    server.proc.send_signal(signal.SIGTERM)
    assert server.wait(timeout=30) == 0
    log = server.output()
    assert 'shutting down (SIGTERM)' in log and 'stopped' in log
    assert 'Traceback' not in log
    assert 'synth backend: seed' in log and 'retargeted the running stream' in log


def test_token_from_the_environment_and_health_without_a_session(spawn):
    port = free_port()
    server = spawn(server_command(port), name='muse_music_server',
                   env=server_env(MUSE_SERVER_TOKEN='env-secret'))
    wait_for_health(port, server)
    status, headers, body = http_get(f'http://127.0.0.1:{port}/healthz')
    assert status == 200 and json.loads(body)['sessions'] == 0

    async def scenario():
        async with MusicClient(f'ws://127.0.0.1:{port}', token='env-secret') as client:
            assert client.welcome.backend == 'sine'
        with pytest.raises(ServerError) as refused:
            await MusicClient(f'ws://127.0.0.1:{port}', token=TOKEN).connect()
        return refused.value.code

    assert run(scenario()) == protocol.ErrorCode.UNAUTHORIZED
    assert server.stop() == 0  # SIGINT: graceful too


@pytest.mark.parametrize('arguments, message', [
    (['--backend', 'no_such_backend'], "unknown backend 'no_such_backend'"),
    (['--backend', 'synth', '--backend-option', 'volume=11'], "rejected options"),
    (['--host', '0.0.0.0'], 'without a token'),
    (['--token-file', '/nonexistent/token'], 'cannot read it'),
    (['--token', 'hunter2-secret'], '--token is not accepted'),
    (['--token=hunter2-secret'], '--token is not accepted'),
    (['--max-ahead-s', '0.1', '--fragment-s', '0.5'], 'max_ahead_s'),
    (['--backend-option', 'not an option'], 'KEY=VALUE'),
])
def test_command_line_errors_exit_with_a_clear_message(arguments, message):
    command = [sys.executable, '-m', 'muse_server.server', '--port', '0', *arguments]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60,
                            env={**server_env(), 'MUSE_SERVER_TOKEN': ''})
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert 'hunter2' not in result.stderr   # a refused secret is not repeated


def test_a_port_in_use_is_reported(spawn):
    port = free_port()
    first = spawn(server_command(port), name='first', env=server_env())
    wait_for_health(port, first)
    result = subprocess.run(server_command(port), capture_output=True, text=True, timeout=60,
                            env=server_env())
    assert result.returncode == 1 and 'cannot listen' in result.stderr


def test_the_server_side_imports_neither_ros_nor_torch():
    code = (
        'import sys\n'
        'import muse_server.server, muse_protocol.client, muse_protocol.protocol\n'
        'from muse_server.backends import create_backend\n'
        'backend = create_backend("synth", fragment_s=0.5)\n'
        'assert backend.sample_rate == 32000\n'
        'loaded = sorted(m for m in ("rclpy", "torch", "transformers", "muse_msgs") if m in sys.modules)\n'
        'print(loaded)\n')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    # the last line: pyfluidsynth prints where it found libfluidsynth when $CI is set
    assert result.stdout.strip().splitlines()[-1] == '[]', result.stdout
