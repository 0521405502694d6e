"""The player: mixer + sink + session recording + event stamping, thread-safe (no ROS).

Threads:

* the caller's (the ROS subscription) only decodes and ``push``-es fragments: a dict insert
  under a lock, never I/O;
* the sink's (PortAudio callback, or the paced thread of null/file sinks) calls ``_render``:
  one ``Mixer.next_block`` under the lock, then hands the block to an outbox queue;
* the player's own worker starts the sink and the recording once the output format is
  known, writes every rendered block to the session WAV, stamps events and hands them to
  ``on_event``. File I/O and publishing thus stay off both real-time paths.
"""

import collections
import queue
import threading
import time
from dataclasses import dataclass

from muse_common.stats import percentile
from muse_player.events import EventKind
from muse_player.mixer import Mixer, check_declick, check_stretch, check_tuning
from muse_player.sinks import NullSink, SinkUnavailableError
from muse_player.wav_recorder import CrashSafeWavWriter, RecorderError

LATENCY_HISTORY = 1000


@dataclass
class PlayerConfig:
    output_sample_rate: int = 0   # 0 = the first fragment's
    output_channels: int = 0      # 0 = the first fragment's
    block_s: float = 0.02
    prebuffer_s: float = 0.3
    crossfade_s: float = 0.5
    max_wait_missing_s: float = 0.5
    declick_s: float = 0.005
    record_flush_s: float = 0.5
    min_playback_rate: float = 0.8   # slowest playback that covers late audio (1 = off)
    stretch_below_s: float = 0.5     # slow down while less than this is buffered

    def check(self):
        for name in ('output_sample_rate', 'output_channels'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f'{name} is {value!r}; expected an integer >= 0 (0 = the '
                                 "first fragment's)")
        if not 0.001 <= self.block_s <= 1.0:
            raise ValueError(f'block_s is {self.block_s!r}; expected seconds in [0.001, 1]')
        check_declick(self.declick_s)
        check_stretch(self.min_playback_rate, self.stretch_below_s)
        if not self.record_flush_s > 0:
            raise ValueError(f'record_flush_s is {self.record_flush_s!r}; expected seconds > 0')
        for name in ('crossfade_s', 'prebuffer_s', 'max_wait_missing_s'):
            check_tuning(name, getattr(self, name), self.declick_s)


class Player:
    """Plays pushed fragments through ``sink`` and records them to ``record_path``.

    ``on_event(PlayerEvent)`` and ``on_log(level, text)`` (level 'info', 'warn', 'error') are
    called from the player's worker thread. ``time_fn`` is the clock of prompt stamps and
    event stamps; ``monotonic`` the clock of buffer deadlines.
    """

    def __init__(self, config, sink, record_path, on_event=None, on_log=None,
                 fallback_sink=NullSink, time_fn=time.time, monotonic=time.monotonic):
        config.check()
        self.config = config
        self.sink = sink
        self.record_path = record_path
        self._on_event = on_event or (lambda event: None)
        self._on_log = on_log or (lambda level, text: None)
        self._fallback_sink = fallback_sink
        self._time_fn = time_fn
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._mixer = None
        self._last_block = None  # (first frame, wall time) of the last block handed over
        self._closed = False
        self._recorder = None
        self.recording_error = None
        self.sink_note = ''
        self._latencies = collections.deque(maxlen=LATENCY_HISTORY)
        self._outbox = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._work, name='muse-player', daemon=True)
        self._worker.start()
        if config.output_sample_rate and config.output_channels:
            with self._lock:
                self._configure(config.output_sample_rate, config.output_channels)

    # -- caller side -----------------------------------------------------------------------

    def push(self, fragment):
        """Queue a decoded fragment for playback (cheap; never blocks on I/O)."""
        with self._lock:
            if self._closed:
                return
            if self._mixer is None:
                self._configure(self.config.output_sample_rate or fragment.sample_rate,
                                self.config.output_channels or fragment.channels)
            events = self._mixer.push(fragment, self._monotonic())
            rate = self._mixer.sample_rate
        if events:
            now = self._time_fn()
            for event in events:
                event.wall_time = now
                event.stream_time_s = event.frame / rate
            self._outbox.put(('events', events))

    def set_tuning(self, name, value):
        """Change crossfade_s, prebuffer_s or max_wait_missing_s while playing."""
        check_tuning(name, value, self.config.declick_s)
        with self._lock:
            setattr(self.config, name, value)
            if self._mixer is not None:
                setattr(self._mixer, name, value)

    def close(self):
        """Stop the sink, report what is still open, finalise the recording."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.sink.stop()
        with self._lock:
            if self._mixer is not None and self._last_block is not None:
                # Stamped against the last block handed over, like every playback event.
                self._outbox.put(('block', None, self._mixer.finish(), *self._last_block, 0.0))
        self._outbox.put(None)
        self._worker.join(timeout=10.0)

    # -- sink side -------------------------------------------------------------------------

    def _configure(self, sample_rate, channels):
        cfg = self.config
        self._mixer = Mixer(sample_rate, channels, max(1, round(cfg.block_s * sample_rate)),
                            crossfade_s=cfg.crossfade_s, prebuffer_s=cfg.prebuffer_s,
                            max_wait_missing_s=cfg.max_wait_missing_s, declick_s=cfg.declick_s,
                            min_playback_rate=cfg.min_playback_rate,
                            stretch_below_s=cfg.stretch_below_s)
        self._outbox.put(('start', sample_rate, channels, self._mixer.block_frames))

    def _render(self):
        with self._lock:
            block, events = self._mixer.next_block(self._monotonic())
            self._last_block = (self._mixer.frames_out - len(block), self._time_fn())
        self._outbox.put(('block', block, events, *self._last_block,
                          self.sink.output_latency_s))
        return block

    # -- worker side -----------------------------------------------------------------------

    def _work(self):
        while True:
            item = self._outbox.get()
            if item is None:
                break
            try:
                kind = item[0]
                if kind == 'block':
                    if item[1] is not None:
                        self._record(item[1])
                    self._dispatch(self._stamped(*item[2:]))
                elif kind == 'events':
                    self._dispatch(item[1])
                elif kind == 'start':
                    self._start(*item[1:])
            except Exception as exc:  # the worker must outlive any one bad item
                self._on_log('error', f'player worker: {type(exc).__name__}: {exc}')
        if self._recorder is not None:
            try:
                self._recorder.close()
            except OSError as exc:  # RecorderError included
                self._on_log('error', f'closing the recording {self.record_path}: {exc}')

    def _start(self, sample_rate, channels, block_frames):
        if self._closed:
            return
        try:
            self._recorder = CrashSafeWavWriter(self.record_path, sample_rate, channels,
                                                self.config.record_flush_s)
            self._on_log('info', f'recording the session to {self.record_path} '
                                 f'({sample_rate} Hz, {channels} ch)')
        except RecorderError as exc:
            self.recording_error = str(exc)
            self._on_log('error', f'{exc}; playing without a recording')
        try:
            self.sink.start(sample_rate, channels, block_frames, self._render)
        except SinkUnavailableError as exc:
            # Keep the session going (and recorded) even without the wanted output.
            failed = self.sink
            self.sink = self._fallback_sink()
            self.sink_note = f'{failed.describe()} failed ({exc}); using {self.sink.describe()}'
            self._on_log('error', self.sink_note)
            self.sink.start(sample_rate, channels, block_frames, self._render)

    def _record(self, block):
        if self._recorder is None or self.recording_error:
            return
        try:
            self._recorder.write(block)
        except OSError as exc:  # RecorderError included
            self.recording_error = f'writing {self.record_path}: {exc}'
            self._on_log('error', f'{self.recording_error}; the recording stops here')

    def _stamped(self, events, first_frame, handed_at, output_latency_s):
        rate = self._mixer.sample_rate
        for event in events:
            event.stream_time_s = event.frame / rate
            event.wall_time = handed_at + (event.frame - first_frame) / rate
            if event.kind is EventKind.PROMPT_AUDIBLE and event.prompt_stamp is not None:
                event.latency_s = event.wall_time + output_latency_s - event.prompt_stamp
                self._latencies.append(event.latency_s)
        return events

    def _dispatch(self, events):
        for event in events:
            try:
                self._on_event(event)
            except Exception as exc:
                self._on_log('error', f'on_event({event.kind.name}): {exc!r}')

    # -- reporting -------------------------------------------------------------------------

    def stats(self):
        with self._lock:
            stats = self._mixer.stats() if self._mixer is not None else {'state': 'waiting'}
            stats['sample_rate'] = self._mixer.sample_rate if self._mixer else 0
        latencies = list(self._latencies)
        recorder = self._recorder
        stats.update({
            'sink': self.sink.describe(),
            'sink_state': self.sink.state,
            'sink_error': self.sink.error or '',
            'sink_note': self.sink_note,
            'sink_late_blocks': self.sink.late_blocks,
            'output_latency_s': self.sink.output_latency_s,
            'recorded_s': recorder.seconds if recorder is not None else 0.0,
            'record_path': str(self.record_path),
            'recording_error': self.recording_error or '',
            'audible_prompts': len(latencies),
            'latency_p50_s': percentile(latencies, 50),
            'latency_p95_s': percentile(latencies, 95),
        })
        return stats
