"""The base is real: messages cross DDS between processes, the workspace lists its packages,
and the setup step refuses an unusable machine with a clear message."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from msg_samples import TOPIC_PREFIX, assert_same, latched_qos, sample_messages

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {'muse_msgs', 'muse_common', 'muse_protocol', 'muse_server', 'muse_sensors',
            'muse_encoder', 'muse_prompt', 'muse_cloud_bridge', 'muse_player', 'muse_bringup'}


def test_every_message_type_round_trips_between_processes(spawn, collector):
    samples = sample_messages()
    for name, msg in samples.items():
        collector.subscribe(type(msg), TOPIC_PREFIX + name, latched_qos())
    publisher = spawn([sys.executable, Path(__file__).with_name('msg_samples.py')])

    for name, expected in samples.items():
        received = collector.wait_for(TOPIC_PREFIX + name, 1, timeout=30)
        assert received, f'no {name} arrived; publisher said:\n{publisher.output()}'
        assert_same(expected, received[0])
    assert publisher.stop() == 0, publisher.output()


def test_colcon_lists_every_package():
    out = subprocess.run(['colcon', 'list', '--names-only', '--base-paths', '.'], cwd=REPO_ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert set(out.split()) == PACKAGES


def _setup_with(python, tmp_path):
    env = {**os.environ, 'MUSE_PYTHON': str(python)}
    return subprocess.run([str(REPO_ROOT / 'muse.sh'), 'setup'], env=env, capture_output=True,
                          text=True, timeout=60)


def test_setup_rejects_a_python_the_ros_wheels_are_not_built_for(tmp_path):
    fake = tmp_path / 'python3.12'
    fake.write_text('#!/bin/sh\necho 3.12\n')
    fake.chmod(0o755)
    result = _setup_with(fake, tmp_path)
    assert result.returncode != 0
    assert 'is Python 3.12' in result.stderr and 'CPython 3.11' in result.stderr, result.stderr


def test_setup_names_a_missing_python(tmp_path):
    result = _setup_with(tmp_path / 'no-such-python', tmp_path)
    assert result.returncode != 0
    assert 'no-such-python' in result.stderr and 'MUSE_PYTHON' in result.stderr, result.stderr


@pytest.mark.parametrize('name', sorted(sample_messages()))
def test_message_definitions_comment_every_field(name):
    text = (REPO_ROOT / 'muse_msgs' / 'msg' / f'{name}.msg').read_text()
    for line in text.splitlines():
        code = line.split('#')[0]
        if code.strip() and '=' not in code:  # a field, not a constant
            assert '#' in line, f'{name}.msg: field without a comment: {line!r}'
