"""The Player glue: lazy start at the first fragment's format, event stamping and the
prompt-to-audible latency, the session recording, sink fallback, runtime tuning."""

import threading

import numpy as np
import pytest
import soundfile

from muse_player.events import EventKind
from muse_player.jitter_buffer import Fragment
from muse_player.pcm import read_wav
from muse_player.player import Player, PlayerConfig
from muse_player.sinks import Sink, SinkUnavailableError
from player_signals import fragments, stepped_sine

RATE = 16000
BLOCK_S = 0.01


class ManualSink(Sink):
    """A sink the test clocks by hand: ``pull()`` renders one block."""

    kind = 'manual'

    def __init__(self, fail=False):
        super().__init__()
        self.fail = fail
        self.started = threading.Event()
        self.format = None

    def start(self, sample_rate, channels, block_frames, render):
        if self.fail:
            raise SinkUnavailableError('no such device')
        self.format = (sample_rate, channels, block_frames)
        self._render = render
        self.state = 'running'
        self.started.set()

    def pull(self, count):
        return np.concatenate([self._render() for _ in range(count)])

    def stop(self):
        self.state = 'stopped'


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


class Collected:
    def __init__(self):
        self.events = []
        self.logs = []

    def on_event(self, event):
        self.events.append(event)

    def on_log(self, level, text):
        self.logs.append((level, text))

    def of(self, kind):
        return [e for e in self.events if e.kind is kind]


def make_player(tmp_path, sink=None, **config):
    settings = dict(block_s=BLOCK_S, crossfade_s=0.05, prebuffer_s=0.02)
    settings.update(config)
    collected, wall, mono = Collected(), Clock(1000.0), Clock(0.0)
    sink = sink or ManualSink()
    player = Player(PlayerConfig(**settings), sink, tmp_path / 'session.wav',
                    on_event=collected.on_event, on_log=collected.on_log,
                    fallback_sink=ManualSink, time_fn=wall, monotonic=mono)
    return player, sink, collected, wall


def pieces(freq, count):
    return stepped_sine([freq] * count, 1600, RATE)[0]


def test_the_first_fragment_sets_the_format_and_starts_sink_and_recording(tmp_path):
    player, sink, collected, wall = make_player(tmp_path)
    assert not sink.started.is_set() and player.stats()['state'] == 'waiting'
    player.push(fragments(1, pieces(440, 4), RATE, prompt_stamp=999.5)[0])
    assert sink.started.wait(10)
    assert sink.format == (RATE, 1, 160)
    sink.output_latency_s = 0.05
    for fragment in fragments(1, pieces(440, 4), RATE, is_last=True)[1:]:
        player.push(fragment)
    blocks = []
    for k in range(60):
        wall.now = 1000.0 + k * BLOCK_S
        blocks.append(sink.pull(1))
    player.close()
    (audible,) = collected.of(EventKind.PROMPT_AUDIBLE)
    # Audible = handed to the sink (block 0 at t = 1000.0) + the device's output latency.
    assert audible.wall_time == pytest.approx(1000.0)
    assert audible.latency_s == pytest.approx(1000.0 + 0.05 - 999.5)
    assert audible.stream_time_s == 0.0
    stats = player.stats()
    assert stats['latency_p50_s'] == pytest.approx(0.55) and stats['audible_prompts'] == 1
    recorded, rate = read_wav(tmp_path / 'session.wav')
    assert rate == RATE
    np.testing.assert_allclose(recorded[:, 0], np.concatenate(blocks)[:, 0], atol=0.5 / 32767 + 1e-7)
    assert stats['recorded_s'] == pytest.approx(60 * BLOCK_S)
    assert ('info', f"recording the session to {tmp_path / 'session.wav'} (16000 Hz, 1 ch)") \
        in collected.logs


def test_events_inside_a_block_are_stamped_at_their_own_frame(tmp_path):
    # no time-stretch: the stream is to run dry at a known frame
    player, sink, collected, wall = make_player(tmp_path, output_sample_rate=RATE,
                                                output_channels=1, min_playback_rate=1.0)
    assert sink.started.wait(10)  # a fixed format starts at once, before any audio
    player.push(fragments(1, pieces(440, 2), RATE)[0])
    player.push(fragments(1, pieces(440, 2), RATE)[1])
    for k in range(25):  # 0.2 s of audio there minus the reserve: runs dry inside block 19
        wall.now = 2000.0 + k * BLOCK_S
        sink.pull(1)
    wall.now = 2001.0
    player.push(Fragment(1, 1, pieces(440, 1)[0], RATE))  # a duplicate
    player.close()  # the underrun still open is reported on close
    (underrun,) = collected.of(EventKind.UNDERRUN)
    ran_dry = 3200 - 80
    assert underrun.stream_time_s == pytest.approx(ran_dry / RATE)
    assert underrun.wall_time == pytest.approx(2000.0 + ran_dry / RATE)
    assert underrun.duration_s == pytest.approx((25 * 160 - ran_dry) / RATE)
    (duplicate,) = collected.of(EventKind.FRAGMENT_DUPLICATE)
    assert duplicate.wall_time == 2001.0 and duplicate.stream_time_s == pytest.approx(0.25)


def test_an_unusable_sink_falls_back_so_the_session_is_still_played_and_recorded(tmp_path):
    player, _, collected, _ = make_player(tmp_path, sink=ManualSink(fail=True))
    player.push(fragments(1, pieces(440, 2), RATE)[0])
    for _ in range(100):
        if isinstance(player.sink, ManualSink) and player.sink.started.wait(0.1):
            break
    assert player.sink.started.is_set()
    player.sink.pull(5)
    player.close()
    assert 'no such device' in player.stats()['sink_note']
    assert any(level == 'error' and 'no such device' in text for level, text in collected.logs)
    assert len(soundfile.read(tmp_path / 'session.wav')[0]) == 5 * 160


def test_an_unwritable_recording_is_reported_and_playback_goes_on(tmp_path):
    sink = ManualSink()
    player = Player(PlayerConfig(block_s=BLOCK_S), sink, tmp_path, on_log=lambda *a: None)
    player.push(fragments(1, pieces(440, 2), RATE)[0])
    assert sink.started.wait(10)
    sink.pull(3)
    assert 'cannot create recording' in player.stats()['recording_error']
    player.close()


def test_tuning_changes_apply_while_playing_and_bad_values_are_refused(tmp_path):
    player, sink, _, _ = make_player(tmp_path)
    player.push(fragments(1, pieces(440, 2), RATE)[0])
    assert sink.started.wait(10)
    player.set_tuning('crossfade_s', 0.2)
    assert player._mixer.crossfade_s == pytest.approx(0.2)
    with pytest.raises(ValueError, match='prebuffer_s is -0.1'):
        player.set_tuning('prebuffer_s', -0.1)
    with pytest.raises(ValueError, match='not a mixer setting'):
        player.set_tuning('block_s', 0.1)
    player.close()


@pytest.mark.parametrize('field, value, words', [
    ('block_s', 0.0, 'block_s is 0.0'),
    ('output_sample_rate', -1, 'output_sample_rate is -1'),
    ('crossfade_s', 0.0, 'crossfade_s is 0.0'),
    ('record_flush_s', 0, 'record_flush_s is 0'),
])
def test_bad_configurations_are_refused_naming_the_field(tmp_path, field, value, words):
    with pytest.raises(ValueError) as caught:
        PlayerConfig(**{field: value}).check()
    assert words in str(caught.value)
