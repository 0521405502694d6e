"""muse_lifecycle_manager (the launch file's manager) brings managed nodes up in order, and
down in reverse once the replay deactivates itself at the end of its data."""

import os

from muse_bringup import graph


def test_manager_brings_nodes_up_in_order_and_down_in_reverse_when_the_replay_ends(
        spawn, tmp_path):
    from muse_sensors.synthetic import write_subject
    subject = write_subject(tmp_path, 1, 0.5, 3, chest=False)
    namespace = f'/manager_test_{os.getpid()}'
    recorder = spawn([graph.executable('muse_bringup', 'session_recorder'), '--ros-args',
                      '-r', f'__ns:={namespace}', '-p', f'output_dir:={tmp_path / "session"}'],
                     name='session_recorder')
    replay = spawn([graph.executable('muse_sensors', 'sensor_replay'), '--ros-args',
                    '-r', f'__ns:={namespace}', '-p', f'source:={subject}', '-p', 'rate:=30.0'],
                   name='sensor_replay')
    manager = spawn([graph.executable('muse_bringup', 'muse_lifecycle_manager'), '--ros-args',
                     '-r', f'__ns:={namespace}',
                     '-p', 'node_names:=[session_recorder, sensor_replay]',
                     '-p', 'end_with:=sensor_replay', '-p', 'tail_s:=0.0'],
                    name='muse_lifecycle_manager')
    assert manager.wait(timeout=120) == 0, manager.output()
    lines = [line.split(': ', 1)[-1] for line in manager.output().splitlines()
             if ' -> ' in line]
    assert lines == [
        'session_recorder: configure -> inactive', 'sensor_replay: configure -> inactive',
        'session_recorder: activate -> active', 'sensor_replay: activate -> active',
        # The replay deactivated itself at the end of its data; the rest in reverse.
        'session_recorder: deactivate -> inactive',
        'sensor_replay: cleanup -> unconfigured', 'session_recorder: cleanup -> unconfigured',
        'sensor_replay: unconfigured_shutdown -> finalized',
        'session_recorder: unconfigured_shutdown -> finalized'], manager.output()
    assert 'end of data' in replay.output()
    # Cleaned up, the recorder closed its bag: readable, with the replay's messages.
    assert 'bag closed' in recorder.output()
    from muse_bringup.session_data import load_session
    data = load_session(tmp_path / 'session' / 'session_bag')
    assert len(data.ground_truth) > 0
    assert replay.stop() == 0 and recorder.stop() == 0
