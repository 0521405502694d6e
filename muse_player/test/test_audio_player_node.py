"""The audio_player node in its own process: shuffled fragments of two prompts in, events and
diagnostics out, and a session recording that is continuous and in order."""

import array
import itertools
import os
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import yaml

from muse_protocol.protocol import Encoding, encode_samples
from muse_common import qos, stamps
from muse_player.pcm import read_wav
from player_signals import crossfade_step_bound, dominant_freq, stepped_sine

RATE = 32000
FRAGMENT_S = 0.25
AMPLITUDE = 0.5
DECLICK_FRAMES = 160  # the node's default declick_s (5 ms) at 32 kHz
CONFIG = Path(__file__).resolve().parents[1] / 'config' / 'audio_player.yaml'
_RUNS = itertools.count()
PROMPT_FREQS = {1: [400 + 80 * k for k in range(8)], 2: [1200 + 80 * k for k in range(6)]}


def audio_fragments(prompt_id, prompt_stamp, skip=(), last=True):
    from muse_msgs.msg import AudioFragment
    freqs = PROMPT_FREQS[prompt_id]
    pieces, _ = stepped_sine(freqs, int(FRAGMENT_S * RATE), RATE, AMPLITUDE)
    out = {}
    for seq, audio in enumerate(pieces):
        if seq in skip:
            continue
        msg = AudioFragment(prompt_id=prompt_id, seq=seq, sample_rate=RATE, channels=1,
                            encoding=AudioFragment.ENCODING_PCM_S16LE, is_first=(seq == 0),
                            is_last=last and seq == len(pieces) - 1, prompt_stamp=prompt_stamp)
        msg.data = array.array('B', encode_samples(audio, Encoding.PCM_S16LE))
        msg.header.stamp = prompt_stamp
        out[seq] = msg
    return out


def player_node(spawn, *params):
    """Start audio_player in a namespace of its own (its /diagnostics too), so that no other
    test run in the same DDS domain can talk to it; returns (process, namespace)."""
    namespace = f'/player_test_{os.getpid()}_{next(_RUNS)}'
    args = [sys.executable, '-m', 'muse_player.audio_player_node', '--ros-args',
            '-r', f'__ns:={namespace}', '-r', f'/diagnostics:={namespace}/diagnostics',
            '-p', 'autostart:=true']
    for param in params:
        args += ['-p', param]
    return spawn(args), namespace


def heard_sequence(audio):
    """(prompt, fragment index) of each 50 ms window, by its dominant frequency, collapsed."""
    table = [(f, (p, k)) for p, freqs in PROMPT_FREQS.items() for k, f in enumerate(freqs)]
    window = RATE // 20
    heard = []
    for start in range(0, len(audio) - window, window // 2):
        part = audio[start:start + window]
        if np.sqrt(np.mean(part ** 2)) < 0.1:  # silence and the quiet ends of fades
            continue
        freq = dominant_freq(part, RATE)
        label = min(table, key=lambda entry: abs(entry[0] - freq))
        if abs(label[0] - freq) < 25 and (not heard or heard[-1] != label[1]):
            heard.append(label[1])
    return heard


def test_the_node_orders_crossfades_reports_and_records_two_prompts(
        spawn, collector, ros_node, tmp_path, wait_until):
    from diagnostic_msgs.msg import DiagnosticArray
    from muse_msgs.msg import AudioFragment, PlaybackEvent
    record = tmp_path / 'session.wav'
    # min_playback_rate 1: fragments are told apart by their exact frequency, which a
    # slowed-down stream end would shift
    node, ns = player_node(spawn, 'sink:=null', f'record_path:={record}', 'prebuffer_s:=0.2',
                           'crossfade_s:=0.3', 'max_wait_missing_s:=0.3',
                           'diagnostics_period_s:=0.5', 'min_playback_rate:=1.0')
    collector.subscribe(PlaybackEvent, f'{ns}/playback', qos.EVENTS)
    collector.subscribe(DiagnosticArray, f'{ns}/diagnostics', 10)
    publisher = ros_node.create_publisher(AudioFragment, f'{ns}/audio', qos.AUDIO)
    wait_until(lambda: publisher.get_subscription_count() > 0
               and ros_node.count_publishers(f'{ns}/playback') > 0, 60, 'the node', node)
    time.sleep(0.5)  # let the node's event publisher match our subscription too

    def events(kind, prompt_id=None):
        return [e for e in collector.messages(f'{ns}/playback')
                if e.event == kind and (prompt_id is None or e.prompt_id == prompt_id)]

    # A broken fragment first: it must be refused without harm.
    publisher.publish(AudioFragment(prompt_id=1, seq=0, sample_rate=RATE, channels=1,
                                    encoding=9, data=array.array('B', b'\0\0')))
    shuffle = random.Random(7)
    now = stamps.from_sec(ros_node.get_clock().now().nanoseconds * 1e-9)
    first = audio_fragments(1, now)
    held_back = first.pop(7)  # arrives only after prompt 1 was superseded: late
    batch = list(first.values()) + [first[3]]  # one duplicate
    shuffle.shuffle(batch)
    for msg in batch:
        publisher.publish(msg)
    wait_until(lambda: events(PlaybackEvent.PROMPT_AUDIBLE, 1), 30, 'prompt 1 audible', node)
    time.sleep(0.6)  # let prompt 1 play a while

    now = stamps.from_sec(ros_node.get_clock().now().nanoseconds * 1e-9)
    second = list(audio_fragments(2, now, skip={3}).values())  # seq 3 never comes
    shuffle.shuffle(second)
    for msg in second:
        publisher.publish(msg)
    wait_until(lambda: events(PlaybackEvent.PROMPT_AUDIBLE, 2), 30, 'prompt 2 audible', node)
    publisher.publish(held_back)
    wait_until(lambda: events(PlaybackEvent.FRAGMENT_LATE)
               and events(PlaybackEvent.FRAGMENT_MISSING), 30, 'late and missing', node)
    audible_2 = events(PlaybackEvent.PROMPT_AUDIBLE, 2)[0]
    # The recording is readable while the node runs; wait until prompt 2 is in it.
    needed = int((audible_2.stream_time_s + 5 * FRAGMENT_S + 0.3) * RATE)
    wait_until(lambda: record.exists() and soundfile.info(str(record)).frames >= needed, 60,
               'the recording to cover prompt 2', node)
    diagnostics = collector.messages(f'{ns}/diagnostics')
    assert node.stop() == 0, node.log_path.read_text()

    # Events: what happened, once each, with sensible numbers.
    assert [(e.prompt_id, e.seq) for e in events(PlaybackEvent.FRAGMENT_DUPLICATE)] == [(1, 3)]
    assert [(e.prompt_id, e.seq) for e in events(PlaybackEvent.FRAGMENT_LATE)] == [(1, 7)]
    assert [(e.prompt_id, e.seq) for e in events(PlaybackEvent.FRAGMENT_MISSING)] == [(2, 3)]
    (superseded,) = events(PlaybackEvent.PROMPT_SUPERSEDED)
    assert superseded.prompt_id == 1
    assert superseded.stream_time_s == pytest.approx(audible_2.stream_time_s)
    audible = events(PlaybackEvent.PROMPT_AUDIBLE)
    assert [e.prompt_id for e in audible] == [1, 2]
    for event in audible:
        assert 0 < event.latency_s < 30, event  # measured from the prompt stamp, not NaN
    assert events(PlaybackEvent.UNDERRUN) == []

    # Diagnostics carried the counts and the refused fragment.
    values = {}
    for array_msg in diagnostics:
        for status in array_msg.status:
            values.setdefault(status.name, {}).update({kv.key: kv.value for kv in status.values})
    assert {'audio_player: buffer', 'audio_player: quality', 'audio_player: latency',
            'audio_player: sink'} <= set(values)
    assert values['audio_player: quality']['decode_errors'] == '1'
    assert values['audio_player: quality']['duplicates'] == '1'

    # The recording: continuous (no step beyond the crossfade bound) and in order.
    audio, rate = read_wav(record)
    audio = audio[:, 0]
    assert rate == RATE
    bound = crossfade_step_bound(max(PROMPT_FREQS[2]), RATE, AMPLITUDE, DECLICK_FRAMES)
    assert np.abs(np.diff(audio)).max() <= bound + 2 / 32767
    heard = heard_sequence(audio)
    split = heard.index((2, 0))
    played_1 = heard[:split]
    assert len(played_1) >= 2 and played_1 == [(1, k) for k in range(len(played_1))], heard
    assert heard[split:] == [(2, 0), (2, 1), (2, 2), (2, 4), (2, 5)], heard


def test_sounddevice_sink_without_a_device_stops_the_node_with_a_clear_message(
        spawn, tmp_path):
    from muse_player.sinks import SinkUnavailableError, SoundDeviceSink
    try:
        SoundDeviceSink().check_available()
        pytest.skip('this machine has an audio output device, so sounddevice would open')
    except SinkUnavailableError:
        pass
    node, _ = player_node(spawn, 'sink:=sounddevice', f'record_path:={tmp_path / "x.wav"}')
    assert node.wait(timeout=60) != 0
    assert 'sink sounddevice: no audio output device' in node.output()
    assert 'sink:=null' in node.output()


def test_mixer_settings_change_at_runtime_and_bad_values_are_refused(spawn, ros_node,
                                                                     tmp_path, wait_until):
    from rclpy.parameter import Parameter, parameter_value_to_python
    from rclpy.parameter_client import AsyncParameterClient
    node, ns = player_node(spawn, 'sink:=null', f'record_path:={tmp_path / "r.wav"}')
    client = AsyncParameterClient(ros_node, f'{ns}/audio_player')
    assert client.wait_for_services(timeout_sec=60), node.output()

    def set_one(name, value):
        future = client.set_parameters([Parameter(name, value=value)])
        wait_until(future.done, 30, f'an answer to setting {name}', node)
        return future.result().results[0]

    # The shipped parameter file states the node's real defaults.
    shipped = yaml.safe_load(CONFIG.read_text())['/**/audio_player']['ros__parameters']
    future = client.get_parameters(sorted(shipped))
    wait_until(future.done, 30, 'the values of the shipped parameters', node)
    actual = dict(zip(sorted(shipped), map(parameter_value_to_python, future.result().values)))
    overridden = {'sink', 'record_path', 'autostart'}
    assert {k: v for k, v in actual.items() if k not in overridden} == \
        {k: v for k, v in shipped.items() if k not in overridden}

    assert set_one('crossfade_s', 0.8).successful
    refused = set_one('crossfade_s', 0.003)  # shorter than the 5 ms declick fade
    assert not refused.successful and 'crossfade_s is 0.003' in refused.reason
    assert not set_one('record_path', '/tmp/elsewhere.wav').successful  # read-only
    future = client.get_parameters(['crossfade_s'])
    wait_until(future.done, 30, 'the value of crossfade_s', node)
    assert future.result().values[0].double_value == 0.8
    assert node.stop() == 0
    assert 'crossfade_s is now 0.8' in node.log_path.read_text()


def test_the_recording_stays_readable_when_the_node_is_killed(spawn, tmp_path, wait_until):
    record = tmp_path / 'killed.wav'
    node, _ = player_node(spawn, 'sink:=null', f'record_path:={record}',
                          'output_sample_rate:=16000', 'output_channels:=1',
                          'record_flush_s:=0.25')
    # A fixed format records from the start (silence until audio comes).
    wait_until(lambda: record.exists() and soundfile.info(str(record)).frames >= 16000, 60,
               'one second of recording', node)
    seen = soundfile.info(str(record)).frames
    os.killpg(node.proc.pid, signal.SIGKILL)
    assert node.wait(timeout=30) == -signal.SIGKILL
    audio, rate = soundfile.read(str(record), dtype='float32')
    assert rate == 16000 and len(audio) >= seen and not audio.any()
