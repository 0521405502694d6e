"""Sinks: sounddevice fails clearly without a device and drives the callback when there is
one (a stand-in PortAudio here), auto falls back to null, paced sinks keep real time."""

import threading
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile

from muse_player import sinks
from muse_player.sinks import (FileSink, NullSink, PacedSink, SinkUnavailableError,
                               SoundDeviceSink, make_sink)


class FakePortAudioError(Exception):
    pass


class FakeStream:
    """Stands in for sounddevice.OutputStream: runs the callback a few times on start."""

    def __init__(self, owner, **kwargs):
        self.kwargs = kwargs
        self.latency = 0.03
        self.owner = owner
        self.stopped = self.closed = False

    def start(self):
        frames, channels = self.kwargs['blocksize'], self.kwargs['channels']
        for k in range(self.owner.callbacks):
            outdata = np.full((frames, channels), np.nan, np.float32)
            time_info = SimpleNamespace(currentTime=10.0 + k, outputBufferDacTime=10.05 + k)
            status = SimpleNamespace(output_underflow=(k == 1))
            self.kwargs['callback'](outdata, frames, time_info, status)
            self.owner.outputs.append(outdata)

    def stop(self):
        self.stopped = True

    def close(self):
        self.closed = True


class FakeSounddevice:
    PortAudioError = FakePortAudioError

    def __init__(self, devices=True, callbacks=3):
        self.devices = devices
        self.callbacks = callbacks
        self.outputs = []
        self.streams = []

    def query_devices(self, device=None, kind=None):
        if not self.devices:
            raise FakePortAudioError('Error querying device -1')
        return {'name': 'Fake Speakers', 'max_output_channels': 2}

    def OutputStream(self, **kwargs):  # noqa: N802 - mirrors sounddevice's name
        stream = FakeStream(self, **kwargs)
        self.streams.append(stream)
        return stream


def test_sounddevice_without_a_device_fails_with_a_clear_message():
    sink = SoundDeviceSink(sd=FakeSounddevice(devices=False))
    with pytest.raises(SinkUnavailableError) as caught:
        sink.start(32000, 1, 640, lambda: np.zeros((640, 1), np.float32))
    assert 'no audio output device' in str(caught.value)
    assert 'Error querying device -1' in str(caught.value)


def test_on_this_machine_the_real_sounddevice_sink_either_finds_a_device_or_says_why():
    sink = SoundDeviceSink()
    try:
        name = sink.check_available()
    except SinkUnavailableError as exc:
        assert 'no audio output device' in str(exc)
    else:
        assert name


def test_the_callback_pulls_one_rendered_block_per_call_and_reports_device_latency():
    fake = FakeSounddevice(callbacks=3)
    sink = SoundDeviceSink(device='Fake', latency='low', sd=fake)
    counter = iter(range(100))

    def render():
        return np.full((640, 2), next(counter), np.float32)

    sink.start(32000, 2, 640, render)
    assert [out[0, 0] for out in fake.outputs] == [0, 1, 2]
    stream = fake.streams[0]
    assert stream.kwargs['samplerate'] == 32000 and stream.kwargs['latency'] == 'low'
    assert stream.kwargs['device'] == 'Fake' and stream.kwargs['dtype'] == 'float32'
    assert sink.output_latency_s == pytest.approx(0.05)  # DAC time - now, from time_info
    assert sink.device_underflows == 1 and sink.blocks == 3 and sink.state == 'running'
    sink.stop()
    assert stream.stopped and stream.closed and sink.state == 'stopped'


def test_make_sink_auto_falls_back_to_null_and_explicit_sounddevice_refuses(monkeypatch):
    monkeypatch.setattr(sinks, '_import_sounddevice', lambda: FakeSounddevice(devices=False))
    sink, note = make_sink('auto')
    assert isinstance(sink, NullSink) and 'no audio output device' in note
    with pytest.raises(SinkUnavailableError, match='sink:=null'):
        make_sink('sounddevice')
    monkeypatch.setattr(sinks, '_import_sounddevice', lambda: FakeSounddevice(devices=True))
    sink, note = make_sink('auto')
    assert isinstance(sink, SoundDeviceSink) and 'Fake Speakers' in note


def test_make_sink_refuses_unknown_kinds_and_a_file_sink_without_a_path():
    with pytest.raises(ValueError, match="sink is 'speakers'"):
        make_sink('speakers')
    with pytest.raises(ValueError, match='file_path is empty'):
        make_sink('file', file_path='')


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def _run_paced(sink, blocks, stall_at=None, stall_s=0.0):
    """Start a paced sink on a fake clock and let it render ``blocks`` blocks."""
    rendered = []
    done = threading.Event()

    def render():
        rendered.append(sink._clock())
        if len(rendered) == stall_at:
            sink._clock.now += stall_s  # the process stalls while rendering
        if len(rendered) == blocks:
            sink._stop.set()
            done.set()
        return np.zeros((100, 1), np.float32)

    sink.start(1000, 1, 100, render)
    assert done.wait(10)
    sink.stop()
    return rendered


def test_a_paced_sink_renders_one_block_per_block_period_of_its_clock():
    clock = FakeClock()
    sink = NullSink(clock=clock, sleep=clock.sleep)
    rendered = _run_paced(sink, 50)
    np.testing.assert_allclose(np.diff(rendered), 0.1)
    assert sink.blocks == 50 and sink.late_blocks == 0


def test_after_a_stall_a_paced_sink_resynchronises_instead_of_bursting():
    clock = FakeClock()
    sink = NullSink(max_lag_s=0.2, clock=clock, sleep=clock.sleep)
    rendered = _run_paced(sink, 20, stall_at=5, stall_s=1.0)
    gaps = np.diff(rendered)
    assert sink.late_blocks == 1
    assert gaps[4] == pytest.approx(1.0)  # the stall itself
    np.testing.assert_allclose(gaps[5:], 0.1)  # then the old pace, without a catch-up burst


def test_a_failing_render_marks_the_sink_failed():
    sink = PacedSink()
    sink.start(1000, 1, 100, lambda: 1 / 0)
    sink._thread.join(5)
    assert sink.state == 'failed' and 'ZeroDivisionError' in sink.error
    sink.stop()
    assert sink.state == 'failed'


def test_the_file_sink_plays_into_a_wav(tmp_path):
    clock = FakeClock()
    sink = FileSink(tmp_path / 'out.wav', clock=clock, sleep=clock.sleep)
    _run_paced(sink, 30)
    audio, rate = soundfile.read(tmp_path / 'out.wav')
    assert rate == 1000 and len(audio) == 30 * 100
