"""The mixer: equal-power crossfades at prompt boundaries and restarts (old audio faded out,
not cut), continuity, underrun fill, missing/late fragments, resampling, stream ends.

Continuity threshold: the test signals are sines of amplitude A whose largest step between
samples is s = 2 A sin(pi f / rate). Inside a stream the output is the input, so no step may
exceed s; inside an equal-power crossfade over L frames no step may exceed
sqrt(2) s + A pi / L (``player_signals.crossfade_step_bound`` derives it). A cut between two
streams instead jumps by up to 2 A, which the tests construct to show the check can fail.
"""

import random

import numpy as np
import pytest

from muse_player.events import EventKind
from muse_player.jitter_buffer import Fragment
from muse_player.mixer import Mixer, MixerState, fade_in_gain, fade_out_gain
from player_signals import (crossfade_step_bound, dominant_freq, fragments, max_step,
                            stepped_sine)

RATE = 16000
BLOCK = 160            # 10 ms
CROSSFADE = 1600       # 0.1 s
RESERVE = 80           # declick 5 ms
AMPLITUDE = 0.5
FRAGMENT = 2000        # 0.125 s


def make_mixer(**kwargs):
    settings = dict(crossfade_s=CROSSFADE / RATE, prebuffer_s=0.05, max_wait_missing_s=0.05,
                    declick_s=RESERVE / RATE)
    settings.update(kwargs)
    return Mixer(RATE, 1, BLOCK, **settings)


class Clocked:
    """Drives a mixer block by block with a simulated clock; keeps output and events."""

    def __init__(self, mixer):
        self.mixer = mixer
        self.now = 0.0
        self.blocks = []
        self.events = []

    def push(self, items):
        for fragment in items:
            self.events += self.mixer.push(fragment, self.now)

    def run(self, count):
        for _ in range(count):
            block, events = self.mixer.next_block(self.now)
            self.blocks.append(block)
            self.events += events
            self.now += BLOCK / RATE

    def run_until_idle(self, limit=1000):
        for _ in range(limit):
            self.run(1)
            if self.mixer.state is MixerState.IDLE:
                return
        raise AssertionError('the mixer never went idle')

    @property
    def out(self):
        return np.concatenate(self.blocks)[:, 0]

    def of(self, kind):
        return [e for e in self.events if e.kind is kind]


def sine_stream(freqs, phase=0.0):
    pieces, _ = stepped_sine(freqs, FRAGMENT, RATE, AMPLITUDE, phase)
    return pieces


def test_equal_power_gains_sum_to_unit_power_and_mirror_each_other():
    for length in (1, 7, 160, 1600):
        fade_in, fade_out = fade_in_gain(length), fade_out_gain(length)
        np.testing.assert_allclose(fade_in ** 2 + fade_out ** 2, 1.0, atol=1e-6)
        np.testing.assert_allclose(fade_in, fade_out[::-1], atol=1e-6)
        assert np.all(np.diff(fade_in) > 0) if length > 1 else True
        # Parts of a fade are slices of the whole fade.
        np.testing.assert_allclose(fade_in_gain(length, length // 3, length // 2),
                                   fade_in[length // 3:length // 3 + length // 2])


def test_crossfading_uncorrelated_signals_keeps_their_power():
    rng = np.random.default_rng(1)
    old, new = rng.standard_normal((2, 200_000))
    mixed = fade_out_gain(200_000) * old + fade_in_gain(200_000) * new
    for part in np.array_split(mixed, 10):  # constant power along the whole fade
        assert np.mean(part ** 2) == pytest.approx(1.0, rel=0.05)


def _play_then_switch(first_blocks, old_pieces, new_pieces):
    player = Clocked(make_mixer())
    player.push(fragments(1, old_pieces, RATE, prompt_stamp=1.0))
    player.run(first_blocks)
    player.push(fragments(2, new_pieces, RATE, is_last=True, prompt_stamp=2.0))
    player.run_until_idle()
    return player


def test_a_prompt_switch_fades_the_old_prompts_continuation_out_while_the_new_fades_in():
    # The old phase puts its sample at the switch on a crest and the new one starts in the
    # opposite trough: a cut there would jump by 2 A.
    old = np.concatenate(sine_stream([400] * 8, phase=np.pi / 2))[:, 0]
    new = np.concatenate(sine_stream([1000] * 4, phase=-np.pi / 2))[:, 0]
    switch_block = 30
    player = _play_then_switch(switch_block, sine_stream([400] * 8, phase=np.pi / 2),
                               sine_stream([1000] * 4, phase=-np.pi / 2))
    out = player.out
    switch = switch_block * BLOCK
    # Before: prompt 1 alone, after its own fade-in from silence.
    np.testing.assert_allclose(out[CROSSFADE:switch], old[CROSSFADE:switch], atol=1e-6)
    # During: the old prompt's *continuation* (already received, not yet played) fades out.
    expected = (fade_out_gain(CROSSFADE) * old[switch:switch + CROSSFADE]
                + fade_in_gain(CROSSFADE) * new[:CROSSFADE])
    np.testing.assert_allclose(out[switch:switch + CROSSFADE], expected, atol=1e-6)
    # After: prompt 2 alone, to its end.
    np.testing.assert_allclose(out[switch + CROSSFADE:switch + len(new) - RESERVE],
                               new[CROSSFADE:len(new) - RESERVE], atol=1e-6)
    assert [(e.kind, e.prompt_id, e.frame) for e in player.events] == [
        (EventKind.PROMPT_AUDIBLE, 1, 0),
        (EventKind.PROMPT_SUPERSEDED, 1, switch),
        (EventKind.PROMPT_AUDIBLE, 2, switch)]
    assert player.mixer.buffer.superseded_fragments == 8 - 1 - switch // FRAGMENT - 1


def test_no_step_at_a_prompt_boundary_exceeds_the_crossfade_bound_but_a_cut_would():
    player = _play_then_switch(30, sine_stream([400] * 8, phase=np.pi / 2),
                               sine_stream([1000] * 4, phase=-np.pi / 2))
    bound = crossfade_step_bound(1000, RATE, AMPLITUDE, CROSSFADE)
    assert np.abs(np.diff(player.out)).max() <= bound
    old = np.concatenate(sine_stream([400] * 8, phase=np.pi / 2))[:, 0]
    new = np.concatenate(sine_stream([1000] * 4, phase=-np.pi / 2))[:, 0]
    cut = np.concatenate([old[:30 * BLOCK], new])
    assert np.abs(np.diff(cut)).max() > 3 * bound


def test_with_little_old_audio_left_the_fade_out_uses_what_remains_and_never_cuts():
    # Prompt 1 holds exactly 30 blocks + the declick reserve: after 30 blocks only the
    # reserve is left, and that is what the switch fades out.
    old_audio = np.concatenate(sine_stream([400] * 3, phase=np.pi / 2))[:30 * BLOCK + RESERVE]
    player = Clocked(make_mixer())
    player.push([Fragment(1, 0, old_audio, RATE, is_first=True)])
    player.run(30)
    assert player.mixer.state is MixerState.PLAYING
    new = np.concatenate(sine_stream([1000] * 4, phase=-np.pi / 2))
    player.push([Fragment(2, 0, new, RATE, is_first=True, is_last=True)])
    player.run_until_idle()
    out, switch = player.out, 30 * BLOCK
    expected = (fade_out_gain(RESERVE) * old_audio[switch:, 0]
                + fade_in_gain(CROSSFADE)[:RESERVE] * new[:RESERVE, 0])
    np.testing.assert_allclose(out[switch:switch + RESERVE], expected, atol=1e-6)
    assert np.abs(np.diff(out)).max() <= crossfade_step_bound(1000, RATE, AMPLITUDE, RESERVE)
    assert player.mixer.underruns == 0


def test_a_restart_inside_a_prompt_is_crossfaded_too_and_announced_once():
    first = sine_stream([400] * 8, phase=np.pi / 2)
    restart = sine_stream([700] * 4, phase=-np.pi / 2)
    player = Clocked(make_mixer())
    player.push(fragments(1, first, RATE, prompt_stamp=1.0))
    player.run(25)
    player.push(fragments(1, restart, RATE, first_seq=8, is_last=True, prompt_stamp=1.0))
    player.run_until_idle()
    out, switch = player.out, 25 * BLOCK
    old = np.concatenate(first)[:, 0]
    new = np.concatenate(restart)[:, 0]
    expected = (fade_out_gain(CROSSFADE) * old[switch:switch + CROSSFADE]
                + fade_in_gain(CROSSFADE) * new[:CROSSFADE])
    np.testing.assert_allclose(out[switch:switch + CROSSFADE], expected, atol=1e-6)
    assert np.abs(np.diff(out)).max() <= crossfade_step_bound(700, RATE, AMPLITUDE, CROSSFADE)
    assert [e.kind for e in player.events] == [EventKind.PROMPT_AUDIBLE]


@pytest.mark.parametrize('seed', range(3))
def test_shuffled_fragments_play_in_order_exactly_and_duplicates_are_dropped(seed):
    freqs = [300 + 60 * k for k in range(12)]
    pieces = sine_stream(freqs)
    arrivals = fragments(1, pieces, RATE, is_last=True)
    arrivals += [Fragment(1, 5, pieces[5].copy(), RATE)]  # a duplicate
    random.Random(seed).shuffle(arrivals)
    player = Clocked(make_mixer())
    player.push(arrivals)
    player.run_until_idle()
    signal = np.concatenate(pieces)[:, 0]
    out = player.out
    # Past the opening fade-in and before the closing declick the output IS the signal.
    np.testing.assert_allclose(out[CROSSFADE:len(signal) - RESERVE],
                               signal[CROSSFADE:len(signal) - RESERVE], atol=1e-6)
    assert np.abs(np.diff(out)).max() <= max_step(max(freqs), RATE, AMPLITUDE) * 1.0001
    heard = [dominant_freq(out[k * FRAGMENT + 200:(k + 1) * FRAGMENT - 200], RATE)
             for k in range(1, 12)]
    np.testing.assert_allclose(heard, freqs[1:], atol=3.0)
    assert [(e.kind, e.seq) for e in player.of(EventKind.FRAGMENT_DUPLICATE)] == [
        (EventKind.FRAGMENT_DUPLICATE, 5)]
    assert player.mixer.underruns == 0


def test_the_first_stream_waits_for_the_prebuffer():
    player = Clocked(make_mixer(prebuffer_s=0.2))
    pieces = sine_stream([400] * 4)
    player.push(fragments(1, pieces[:1], RATE, prompt_stamp=3.0))  # 0.125 s < 0.2 s
    player.run(20)
    assert not player.out.any() and player.mixer.state is MixerState.IDLE
    player.push(fragments(1, pieces, RATE)[1:2])
    player.run(1)
    (audible,) = player.of(EventKind.PROMPT_AUDIBLE)
    assert (audible.prompt_id, audible.frame, audible.prompt_stamp) == (1, 20 * BLOCK, 3.0)
    assert player.mixer.underruns == 0  # waiting to start is not an underrun


def test_an_underrun_fades_out_fills_silence_and_resumes_where_the_stream_stopped():
    pieces = sine_stream([500] * 4, phase=np.pi / 2)
    signal = np.concatenate(pieces)[:, 0]
    player = Clocked(make_mixer(prebuffer_s=0.1))
    player.push(fragments(1, pieces, RATE)[:2])
    player.run(40)  # 0.4 s wanted, 0.25 s there
    mixer = player.mixer
    assert mixer.state is MixerState.REBUFFERING and mixer.underruns == 1
    assert player.of(EventKind.UNDERRUN) == []  # reported when it ends, with its length
    held = 2 * FRAGMENT - RESERVE  # played plainly until the declick reserve
    played = player.out
    player.push(fragments(1, pieces, RATE, is_last=True)[2:])
    player.run_until_idle()
    out = player.out
    np.testing.assert_allclose(out[CROSSFADE:held], signal[CROSSFADE:held], atol=1e-6)
    # The reserve fades out, then silence, no click on the way down.
    np.testing.assert_allclose(out[held:held + RESERVE],
                               fade_out_gain(RESERVE) * signal[held:held + RESERVE], atol=1e-6)
    assert not played[held + RESERVE:].any()
    (underrun,) = player.of(EventKind.UNDERRUN)
    resume = 40 * BLOCK
    assert underrun.frame == held  # where it ran dry
    assert underrun.duration_s == pytest.approx((resume - held) / RATE)
    assert mixer.underrun_frames == resume - held
    # It resumes with the very next sample of the stream, faded in over the reserve.
    cont = held + RESERVE
    np.testing.assert_allclose(out[resume:resume + RESERVE],
                               fade_in_gain(RESERVE) * signal[cont:cont + RESERVE], atol=1e-6)
    rest = len(signal) - cont - 2 * RESERVE
    np.testing.assert_allclose(out[resume + RESERVE:resume + RESERVE + rest],
                               signal[cont + RESERVE:cont + RESERVE + rest], atol=1e-6)
    assert np.abs(np.diff(out)).max() <= crossfade_step_bound(500, RATE, AMPLITUDE, RESERVE)


def test_a_missing_fragment_is_skipped_with_a_short_crossfade_and_a_late_copy_dropped():
    # Seq 2 spans 75.5 periods: without it seq 3 starts in antiphase to where seq 1 ended
    # (on a trough), so butting them together would jump by 2 A.
    freqs = [400, 500, 604, 700, 800]
    pieces = sine_stream(freqs, phase=np.pi / 2)
    signal = np.concatenate(pieces)[:, 0]
    butted = np.concatenate([signal[:2 * FRAGMENT], signal[3 * FRAGMENT:]])
    assert np.abs(np.diff(butted)).max() > 0.9
    arrivals = fragments(1, pieces, RATE, is_last=True)
    del arrivals[2]
    player = Clocked(make_mixer())
    player.push(arrivals)
    player.run_until_idle()
    (missing,) = player.of(EventKind.FRAGMENT_MISSING)
    assert (missing.prompt_id, missing.seq) == (1, 2)
    out = player.out
    assert len(out) >= 4 * FRAGMENT
    heard = [dominant_freq(out[k * FRAGMENT + 300:(k + 1) * FRAGMENT - 300], RATE)
             for k in range(1, 4)]
    np.testing.assert_allclose(heard, [500, 700, 800], atol=3.0)
    assert np.abs(np.diff(out)).max() <= crossfade_step_bound(800, RATE, AMPLITUDE, RESERVE)
    assert player.mixer.underruns == 0  # the gap was known long before it was reached
    player.push([Fragment(1, 2, pieces[2], RATE)])
    assert [(e.kind, e.seq) for e in player.of(EventKind.FRAGMENT_LATE)] == [
        (EventKind.FRAGMENT_LATE, 2)]


def test_fragments_of_a_superseded_prompt_are_dropped_as_late():
    player = _play_then_switch(30, sine_stream([400] * 8), sine_stream([1000] * 4))
    player.push([Fragment(1, 9, sine_stream([400])[0], RATE)])
    assert [(e.kind, e.prompt_id) for e in player.of(EventKind.FRAGMENT_LATE)] == [
        (EventKind.FRAGMENT_LATE, 1)]


def test_fragments_at_another_rate_are_resampled_seamlessly():
    source = 24000
    pieces, _ = stepped_sine([440] * 6, 3000, source, AMPLITUDE)
    player = Clocked(make_mixer())
    player.push(fragments(1, pieces, source, is_last=True))
    player.run_until_idle()
    out = player.out
    assert abs(np.count_nonzero(out) - 6 * 3000 * RATE // source) < 300
    assert dominant_freq(out[4000:10000], RATE) == pytest.approx(440, abs=2.0)
    # Seams between fragments are invisible: steps stay within the sine's own (+ 2 %).
    assert np.abs(np.diff(out[CROSSFADE:10500])).max() <= 1.02 * max_step(440, RATE, AMPLITUDE)


def test_mono_fragments_fill_every_output_channel():
    mixer = Mixer(RATE, 2, BLOCK, crossfade_s=0.01, prebuffer_s=0.0)
    mixer.push(fragments(1, sine_stream([400] * 2), RATE)[0], 0.0)
    block = np.concatenate([mixer.next_block(0.0)[0] for _ in range(10)])
    assert block.shape == (10 * BLOCK, 2) and block.any()
    np.testing.assert_array_equal(block[:, 0], block[:, 1])


def test_a_stream_end_fades_out_and_is_not_an_underrun():
    pieces = sine_stream([400] * 2, phase=np.pi / 2)
    player = Clocked(make_mixer())
    player.push(fragments(1, pieces, RATE, is_last=True))
    player.run_until_idle()
    player.run(10)
    signal = np.concatenate(pieces)[:, 0]
    out = player.out
    end = len(signal)
    np.testing.assert_allclose(out[end - RESERVE:end],
                               fade_out_gain(RESERVE) * signal[end - RESERVE:], atol=1e-6)
    assert not out[end:].any()
    assert player.mixer.underruns == 0 and player.mixer.finish() == []


@pytest.mark.parametrize('name, value, words', [
    ('crossfade_s', 0.001, 'crossfade_s is 0.001'),
    ('prebuffer_s', -1.0, 'prebuffer_s is -1.0'),
    ('max_wait_missing_s', float('nan'), 'max_wait_missing_s is nan'),
])
def test_bad_settings_are_refused_naming_them(name, value, words):
    mixer = make_mixer()
    with pytest.raises(ValueError) as caught:
        setattr(mixer, name, value)
    assert words in str(caught.value)


def test_a_slow_server_is_covered_by_slower_playback_instead_of_silence():
    """Fragments of 0.125 s arrive every 0.135 s (the server makes 0.93x real time): without
    stretching the queue runs dry and the mixer fills silence; with playback down to 0.8x it
    plays on, slowed while little is buffered, and says how much it stretched."""
    pieces = sine_stream([300] * 30)
    signal = np.concatenate(pieces)[:, 0]
    period_blocks = 13.5     # 0.135 s between arrivals, in 10 ms blocks

    def play(**stretching):
        player = Clocked(make_mixer(prebuffer_s=0.1, **stretching))
        items = fragments(1, pieces, RATE)
        arrivals = [round(index * period_blocks) for index in range(len(items))]
        for block in range(arrivals[-1] + 1):
            player.push([item for item, at in zip(items, arrivals) if at == block])
            player.run(1)
        return player

    plain = play()
    stretched = play(min_playback_rate=0.8, stretch_below_s=0.3)
    assert plain.mixer.underruns > 0 and plain.mixer.stats()['stretched_s'] == 0.0
    assert stretched.mixer.underruns == 0
    stats = stretched.mixer.stats()
    assert stats['stretched_s'] > 0.5 and stats['stretch_gained_s'] > 0.2
    assert 0.8 <= stats['lowest_playback_rate'] < 1.0
    # No click: a slowed sine changes by less per sample than the sine itself.
    out = stretched.out
    assert np.abs(np.diff(out)).max() <= max_step(300, RATE, AMPLITUDE) + 1e-6
    # Slower means lower: varispeed plays the 300 Hz sine at 300 x rate.
    assert 0.8 * 300 - 5 <= dominant_freq(out[-RATE // 2:], RATE) < 300


@pytest.mark.parametrize('name, value', [('min_playback_rate', 0.3), ('min_playback_rate', 1.5),
                                         ('stretch_below_s', -1.0)])
def test_bad_stretch_settings_are_refused_naming_them(name, value):
    with pytest.raises(ValueError, match=name):
        make_mixer(**{name: value})


def test_a_continuing_prompt_is_spliced_on_after_the_old_one_without_any_fade():
    """A retargeted stream (the new prompt's first fragment not is_first) continues the old
    prompt's LAST fragment sample-for-sample: the output is the input, no fade, no crossfade,
    and the new prompt is announced at the first frame of its own audio."""
    pieces, _ = stepped_sine([440] * 8, FRAGMENT, RATE, AMPLITUDE)
    old = fragments(1, pieces[:4], RATE, is_last=True)
    new = fragments(2, pieces[4:], RATE)
    new[0].is_first = False                    # CONTINUES, not FIRST
    clocked = Clocked(make_mixer())
    clocked.push(old)
    clocked.run(5)                             # the old prompt plays ...
    clocked.push(new)                          # ... when the continuation arrives
    clocked.run(8 * FRAGMENT // BLOCK)
    expected = np.concatenate(pieces)[:, 0]
    out = clocked.out
    start = int(np.flatnonzero(np.abs(out) > 0)[0]) // BLOCK * BLOCK   # a block starts it
    played = out[start:start + len(expected) - 2 * RESERVE - CROSSFADE]
    # Only the stream's very first fade-in shapes the output; after it the input comes out.
    np.testing.assert_allclose(played[CROSSFADE:], expected[CROSSFADE:len(played)], atol=1e-6)
    audible = clocked.of(EventKind.PROMPT_AUDIBLE)
    assert [e.prompt_id for e in audible] == [1, 2]
    assert audible[1].frame == start + 4 * FRAGMENT
    assert not clocked.of(EventKind.PROMPT_SUPERSEDED) and not clocked.of(EventKind.UNDERRUN)


def test_a_newer_first_stream_still_crossfades_over_a_continuation_in_flight():
    pieces, _ = stepped_sine([440] * 4, FRAGMENT, RATE, AMPLITUDE)
    clocked = Clocked(make_mixer())
    clocked.push(fragments(1, pieces, RATE))
    clocked.run(5)
    continuing = fragments(2, sine_stream([660] * 2), RATE)
    continuing[0].is_first = False
    clocked.push(continuing)
    clocked.run(2)
    assert clocked.mixer.stats()['prompt_id'] == 1   # not spliced before prompt 1 ends
    clocked.push(fragments(3, sine_stream([880] * 4), RATE))
    clocked.run(20)
    assert clocked.mixer.stats()['prompt_id'] == 3


@pytest.mark.parametrize('rewind_fragments, played_blocks', [(3, 5), (7, 60)])
def test_a_forked_continuation_replaces_unplayed_audio_from_its_offset(rewind_fragments,
                                                                      played_blocks):
    """A continuation flagged REPLACES starts ``replaces`` frames before the old prompt's end:
    the old audio after that point is replaced (short in-phase crossfade) or, where it was
    already played, the continuation's head is skipped: no gap, nothing twice, no click.
    Both prompts play one sine on one timeline (the new one quieter), so any frame lost or
    repeated would put the output out of phase with it."""
    total = 8 * FRAGMENT
    t = np.arange(total + 8 * FRAGMENT) / RATE
    timeline = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    old_audio = AMPLITUDE * timeline[:total]
    fork = total - rewind_fragments * FRAGMENT
    new_audio = 0.5 * AMPLITUDE * timeline[fork:fork + 8 * FRAGMENT]
    old = fragments(1, [old_audio[k:k + FRAGMENT, None] for k in range(0, total, FRAGMENT)],
                    RATE, is_last=True)
    new = fragments(2, [new_audio[k:k + FRAGMENT, None]
                        for k in range(0, len(new_audio), FRAGMENT)], RATE, is_last=True)
    new[0].is_first = False                     # CONTINUES ...
    new[0].replaces = rewind_fragments * FRAGMENT   # ... and REPLACES
    clocked = Clocked(make_mixer())
    clocked.push(old)
    clocked.run(played_blocks)
    clocked.push(new)
    clocked.run_until_idle()
    out = clocked.out
    start = int(np.flatnonzero(np.abs(out) > 0)[0]) // BLOCK * BLOCK   # a block starts it
    heard = out[start:]
    reference = timeline[:len(heard)]
    spliced = max(fork, played_blocks * BLOCK) + round(0.02 * RATE) + BLOCK
    end = fork + len(new_audio) - 2 * RESERVE
    assert end - spliced > 2 * FRAGMENT
    np.testing.assert_allclose(heard[CROSSFADE:fork - RESERVE],
                               AMPLITUDE * reference[CROSSFADE:fork - RESERVE], atol=1e-5)
    np.testing.assert_allclose(heard[spliced:end], 0.5 * AMPLITUDE * reference[spliced:end],
                               atol=1e-5)
    # no click: the in-phase equal-power crossfade peaks at hypot(A, A/2), not more
    assert np.max(np.abs(np.diff(heard))) <= max_step(440, RATE, np.hypot(1, 0.5) * AMPLITUDE)
    audible = clocked.of(EventKind.PROMPT_AUDIBLE)
    assert [e.prompt_id for e in audible] == [1, 2]
    assert not clocked.of(EventKind.UNDERRUN) and not clocked.of(EventKind.PROMPT_SUPERSEDED)
