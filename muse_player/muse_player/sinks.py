"""Where output blocks go: the sound card, a WAV file, or nowhere (no ROS).

Every sink pulls blocks at its own real-time pace by calling ``render()`` (which returns one
float32 ``(block_frames, channels)`` block): the sounddevice sink from PortAudio's callback,
the null and file sinks from a thread paced by a monotonic clock.
"""

import abc
import threading
import time

from muse_player.wav_recorder import CrashSafeWavWriter, resolve_record_path

SINK_KINDS = ('auto', 'sounddevice', 'null', 'file')
DEVICE_LATENCIES = ('high', 'low')


class SinkUnavailableError(OSError):
    """The sink's device cannot be opened here (says why and what to use instead)."""


class Sink(abc.ABC):
    """A started sink calls ``render()`` once per block until ``stop()``."""

    kind = 'sink'

    def __init__(self):
        self.state = 'stopped'
        self.error = None
        self.blocks = 0
        self.late_blocks = 0        # blocks the sink had to catch up on (a stall)
        self.output_latency_s = 0.0  # time from hand-over to the listener's ear [s]

    @abc.abstractmethod
    def start(self, sample_rate, channels, block_frames, render):
        """Start pulling ``render()`` once per block of ``block_frames``."""

    @abc.abstractmethod
    def stop(self):
        """Stop pulling and release the device or file."""

    def describe(self):
        return self.kind


class PacedSink(Sink):
    """Calls ``render()`` every block period by a monotonic clock and consumes the block.

    If the thread falls behind by more than ``max_lag_s`` (the process was stalled) it
    resynchronises instead of rendering the backlog in a burst.
    """

    def __init__(self, max_lag_s=0.2, clock=time.monotonic, sleep=None):
        super().__init__()
        self._max_lag_s = max_lag_s
        self._clock = clock
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait
        self._thread = None

    def start(self, sample_rate, channels, block_frames, render):
        self._period = block_frames / sample_rate
        self._render = render
        self._open(sample_rate, channels)
        self._stop.clear()
        self.state = 'running'
        self._thread = threading.Thread(target=self._run, name=f'muse-{self.kind}-sink',
                                        daemon=True)
        self._thread.start()

    def _run(self):
        deadline = self._clock()
        try:
            while not self._stop.is_set():
                self._consume(self._render())
                self.blocks += 1
                deadline += self._period
                delay = deadline - self._clock()
                if delay > 0:
                    self._sleep(delay)
                elif delay < -self._max_lag_s:
                    self.late_blocks += 1
                    deadline = self._clock()
        except Exception as exc:  # reported through state/error; the node shows it
            self.error = f'{type(exc).__name__}: {exc}'
            self.state = 'failed'

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        self._close()
        if self.state != 'failed':
            self.state = 'stopped'

    def _open(self, sample_rate, channels):
        pass

    def _consume(self, block):
        pass

    def _close(self):
        pass


class NullSink(PacedSink):
    """Discards the audio at real-time pace (headless machines; the recording still runs)."""

    kind = 'null'


class FileSink(PacedSink):
    """Plays into a WAV file at real-time pace (same crash-safe writer as the recording)."""

    kind = 'file'

    def __init__(self, path, flush_period_s=0.5, **kwargs):
        super().__init__(**kwargs)
        self.path = path
        self._flush_period_s = flush_period_s
        self._writer = None

    def _open(self, sample_rate, channels):
        self._writer = CrashSafeWavWriter(self.path, sample_rate, channels,
                                          self._flush_period_s)

    def _consume(self, block):
        self._writer.write(block)

    def _close(self):
        if self._writer is not None:
            self._writer.close()

    def describe(self):
        return f'file {self.path}'


def _import_sounddevice():
    try:
        import sounddevice
    except OSError as exc:  # the module loads libportaudio when imported
        raise SinkUnavailableError(
            f'sounddevice cannot load PortAudio ({exc}); install libportaudio2 or use '
            'sink:=null') from exc
    return sounddevice


class SoundDeviceSink(Sink):
    """Live playback: a callback-driven ``sounddevice.OutputStream`` pulling blocks."""

    kind = 'sounddevice'

    def __init__(self, device='', latency='high', sd=None):
        super().__init__()
        if latency not in DEVICE_LATENCIES:
            raise ValueError(f'latency is {latency!r}; expected one of {DEVICE_LATENCIES}')
        self.device = device or None
        self.latency = latency
        self.device_underflows = 0
        self._sd = sd
        self._stream = None
        self._render = None

    @property
    def sd(self):
        if self._sd is None:
            self._sd = _import_sounddevice()
        return self._sd

    def check_available(self):
        """Raise SinkUnavailableError unless an output device is there; returns its name."""
        name = self.device if self.device is not None else 'the default output device'
        try:
            info = self.sd.query_devices(self.device, kind='output')
        except (ValueError, self.sd.PortAudioError) as exc:
            raise SinkUnavailableError(
                f'no audio output device ({name}: {exc}): PortAudio sees no sound card '
                'here') from exc
        if info.get('max_output_channels', 0) < 1:
            raise SinkUnavailableError(f'{name} ({info.get("name")}) has no output channels; '
                                       'pick another with the device parameter')
        return info.get('name', name)

    def start(self, sample_rate, channels, block_frames, render):
        self.check_available()
        self._render = render
        self._block_frames = block_frames
        try:
            self._stream = self.sd.OutputStream(
                samplerate=sample_rate, blocksize=block_frames, channels=channels,
                dtype='float32', device=self.device, latency=self.latency,
                callback=self._callback, finished_callback=self._finished)
            self.output_latency_s = float(self._stream.latency)
            self._stream.start()
        except (ValueError, self.sd.PortAudioError) as exc:
            self._stream = None
            raise SinkUnavailableError(
                f'cannot open an output stream at {sample_rate} Hz, {channels} channel(s) on '
                f'{self.device or "the default device"}: {exc}') from exc
        self.state = 'running'

    def _callback(self, outdata, frames, time_info, status):
        # PortAudio's thread: no I/O, no logging; the player queues everything else.
        if status.output_underflow:
            self.device_underflows += 1
        try:
            reported = time_info.outputBufferDacTime - time_info.currentTime
        except AttributeError:
            reported = 0.0
        if reported > 0:
            self.output_latency_s = reported
        if frames != self._block_frames:  # PortAudio honours blocksize; be safe anyway
            outdata.fill(0)
            return
        outdata[:] = self._render()
        self.blocks += 1

    def _finished(self):
        if self.state == 'running':
            self.state = 'failed'
            self.error = 'the output stream stopped on its own'

    def stop(self):
        if self._stream is not None:
            stream, self._stream = self._stream, None
            self.state = 'stopping'
            try:
                stream.stop()
            finally:
                stream.close()
        if self.state != 'failed':
            self.state = 'stopped'

    def describe(self):
        return f'sounddevice {self.device or "default"}'


def make_sink(kind, device='', file_path='', latency='high', flush_period_s=0.5):
    """The sink for a ``sink`` parameter value. ``auto`` is sounddevice where an output
    device exists, else null; the returned note says which was chosen and why."""
    if kind not in SINK_KINDS:
        raise ValueError(f'sink is {kind!r}; expected one of {SINK_KINDS}')
    if kind == 'null':
        return NullSink(), 'null sink (no audio output, real-time pace)'
    if kind == 'file':
        if not str(file_path).strip():
            raise ValueError('sink is file but file_path is empty; expected a .wav path')
        path = resolve_record_path(file_path)
        return FileSink(path, flush_period_s), f'file sink {path}'
    sink = SoundDeviceSink(device, latency)
    try:
        name = sink.check_available()
    except SinkUnavailableError as exc:
        if kind == 'sounddevice':
            raise SinkUnavailableError(
                f'sink sounddevice: {exc}. Use sink:=null for headless playback, or sink:=auto '
                'to fall back to null where there is no output device') from exc
        return NullSink(), f'sink auto: {exc}; playing to the null sink instead'
    return sink, f'sounddevice sink on {name}'
