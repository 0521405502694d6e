"""The ``synth`` backend: music composed from the prompt's semantics and played by sampled
instruments, the server's embedded default (no model weights, no GPU).

The composition layer (``synth_compose``: form, harmony, grooves; ``synth_styles``: the style
presets as data; ``synth_theory``: keys and voicings) writes notes; FluidSynth plays them from a
General MIDI SoundFont (default ``/usr/share/sounds/sf2/FluidR3_GM.sf2``, Debian's
fluid-soundfont-gm), so drums (a GM drum kit per style), bass, keys, pads and strings are real
instrument samples. FluidSynth renders offline into numpy buffers; no audio driver is started.

What a prompt controls
----------------------
- **Style**: ``PromptSpec.style`` names a preset (``chill_techno``, ``lofi_hiphop``,
  ``ambient``, ``upbeat_pop``, ``cinematic``, ``jazz``; case and separators forgiven).
  An unknown style falls back on keywords in the style and the prompt text, then on
  ``chill_techno`` (``synth_styles.resolve_style``).
- **Tempo**: ``PromptSpec.target_bpm``; tempos outside 40-240 BPM are folded by octaves into it.
- **Energy** in [0, 1]: density, dynamics (velocities) and drum intensity, and the loudness
  the output is levelled to (-22 dBFS RMS at 0 to -14 dBFS at 1).

Prompt changes: retarget, not restart
-------------------------------------
:meth:`SynthStream.retarget` steers the running piece; nothing restarts. The change lands on
the next bar line not yet composed (notes are planned a quarter beat ahead, so at most about
one bar after the call):

- same style: the composer plays on (same section, progression, key, motif) at the new
  energy; a new tempo is reached by a linear ramp of the beat length over ``TEMPO_RAMP_BARS``;
- new style: a ``TRANSITION_BARS``-bar (4) arranged transition: the old band plays on, fading and
  washing into the room, and ends with a drum fill; the new band's harmony and bass swell in
  over it in the same key (handed over as the relative major/minor, never re-estimated); on the
  downbeat after the fill the new drums enter with a crash and the old instruments stop;
- a prompt whose musical parameters (style, tempo, energy) did not change changes nothing.

A stream opened with ``context`` (the server's fallback when a stream failed) takes the key
signature of the context's last seconds when they are clearly tonal.

Determinism
-----------
Everything random derives from (backend ``seed``, ``prompt_id``, style); the seed is logged
when the backend starts, so a session can be re-rendered. ``seed=None`` draws one from the OS.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import heapq
import logging
import math
import os
import queue
import secrets
import sys
import threading
import wave
import zlib
from pathlib import Path

import numpy as np

from muse_server.backends.base import BackendError, MusicBackend, MusicStream, PromptSpec
from muse_server.backends.synth_compose import BARS_PER_SECTION, BEATS_PER_BAR, Composer
from muse_server.backends.synth_styles import STYLES, resolve_style
from muse_server.backends.synth_theory import Key, estimate_key

logger = logging.getLogger('muse_music_server')

DEFAULT_SOUNDFONT = '/usr/share/sounds/sf2/FluidR3_GM.sf2'
BLOCK = 1024                          # samples rendered per step (32 ms at 32 kHz)
TEMPO_RANGE_BPM = (40.0, 240.0)
LOUDNESS_DB = (-22.0, -14.0)          # output RMS [dBFS] at energy 0 and 1
LEVEL_TIME_S = (0.4, 1.5)             # time constant of the loudness levelling [s]: in the
                                      # first LEVEL_SETTLE_S of a stream, and after
LEVEL_SETTLE_S = 2.0
LEVEL_RANGE_DB = (-12.0, 24.0)        # gain the levelling may apply
SOFT_CLIP = 0.8                       # samples above this are compressed smoothly below 1
CONTEXT_KEY_S = 4.0                   # seconds of context analysed for its key signature
KEY_CONFIDENCE = 0.6                  # share of chroma energy in the key's seven notes above
                                      # which the context is called tonal (noise: 0.58)
TEMPO_RAMP_BARS = 2                   # bars over which a tempo change glides
TRANSITION_BARS = 4                   # bars of an arranged style change
LOOKAHEAD_BEATS = 0.25                # notes are planned this far ahead of the render position:
                                      # a humanised note may start a little before its bar, and
                                      # a prompt lands on the first bar line not yet planned
CHANNELS_PER_BAND = 16                # MIDI channels of one style's band (two during a change)
DRUM_CHANNEL = 9                      # GM percussion channel within a band
POOL_SIZE = 2                         # FluidSynth instances kept loaded for new streams
FIRST_FRAGMENT_S = 0.32               # a stream's (and a fork's) first fragment is this short
                                      # (if fragment_s is longer): just over the player's 0.3 s
                                      # prebuffer, so it can start, for 2/3 of the render time
FORK_PREROLL_S = 0.75                 # a fork replays this much before its start into a fresh
                                      # FluidSynth (discarded), so reverb and ringing voices match
FORK_GRID_BEATS = 0.5                 # a fork's change lands on this grid (eighth notes)
FORK_HISTORY_S = 4.0                  # how far back of the newest sample a fork may start
# Voices a drum pattern plays: a new band's drums wait for the transition's downbeat.
DRUM_VOICES = frozenset({'kick', 'snare', 'clap', 'rim', 'hat', 'open_hat', 'shaker', 'crash',
                         'ride', 'tom', 'vinyl'})
_CC_VOLUME, _CC_EXPRESSION, _CC_REVERB, _CC_CHORUS, _CC_ALL_NOTES_OFF = 7, 11, 91, 93, 123


class SynthConfigError(BackendError, ValueError):
    """A ``synth`` backend option or stream input has an invalid value."""


def fold_tempo(bpm, low=TEMPO_RANGE_BPM[0], high=TEMPO_RANGE_BPM[1]):
    """Halve or double ``bpm`` until it lies in [low, high]."""
    bpm = float(bpm)
    if not (math.isfinite(bpm) and bpm > 0):
        raise SynthConfigError(f'target_bpm must be a finite number > 0, got {bpm!r}')
    while bpm > high:
        bpm /= 2.0
    while bpm < low:
        bpm *= 2.0
    return bpm


def loudness_target_db(energy):
    """The output loudness [dBFS RMS] asked of a stream at ``energy``."""
    return LOUDNESS_DB[0] + (LOUDNESS_DB[1] - LOUDNESS_DB[0]) * float(energy)


def rms_db(x):
    return 20.0 * math.log10(max(float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))), 1e-10))


def soft_clip(x):
    """Identity below ``SOFT_CLIP``; above it a tanh knee that never reaches 1."""
    a = np.abs(x)
    over = a > SOFT_CLIP
    if over.any():
        head = 1.0 - SOFT_CLIP
        x = x.copy()
        x[over] = np.sign(x[over]) * (SOFT_CLIP + head * np.tanh((a[over] - SOFT_CLIP) / head))
    return x


# ---------------------------------------------------------------------------------------------
# FluidSynth, offline


class FluidRenderer:
    """One FluidSynth synthesizer with the SoundFont loaded, rendered offline (no driver)."""

    def __init__(self, soundfont, sample_rate):
        import fluidsynth   # pyfluidsynth; imported here so a missing library is a clear error
        self._fl = fluidsynth
        self._synth = fluidsynth.Synth(
            gain=0.6, samplerate=float(sample_rate), channels=2 * CHANNELS_PER_BAND,
            **{'synth.chorus.active': 0, 'synth.polyphony': 128, 'synth.cpu-cores': 1,
               'synth.reverb.active': 1})
        self.sfid = self._synth.sfload(str(soundfont))
        if self.sfid < 0:
            self._synth.delete()
            raise SynthConfigError(f'FluidSynth could not load the SoundFont {soundfont}')
        write = fluidsynth._fl.fluid_synth_write_float
        write.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int,
                          ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        write.restype = ctypes.c_int
        self._write = write

    def select(self, channel, program, drum_kit=None):
        """Give ``channel`` a GM program, or a drum kit (falls back on the standard kit)."""
        if drum_kit is None:
            self._synth.program_select(channel, self.sfid, 0, program)
        elif self._synth.program_select(channel, self.sfid, 128, drum_kit) != 0:
            self._synth.program_select(channel, self.sfid, 128, 0)

    def event(self, kind, channel, a, b=0):
        if kind == 'on':
            self._synth.noteon(channel, a, b)
        elif kind == 'off':
            self._synth.noteoff(channel, a)
        else:
            self._synth.cc(channel, a, b)

    def room(self, size, damping, level):
        self._synth.set_reverb(roomsize=size, damping=damping, width=0.8, level=level)

    def render_into(self, out):
        """Fill ``out`` (C-contiguous float32 (n, 2)) with the next n stereo frames."""
        self._write(self._synth.synth, len(out), out.ctypes.data, 0, 2, out.ctypes.data, 1, 2)

    def delete(self):
        self._synth.delete()


class _RendererPool:
    """FluidSynth instances loaded ahead of time, so opening a stream costs no SoundFont load;
    one taken is replaced in a background thread."""

    def __init__(self, soundfont, sample_rate, size):
        self._make = lambda: FluidRenderer(soundfont, sample_rate)
        self._ready = queue.Queue()
        self._size = size
        self._lock = threading.Lock()
        self._refilling = False
        self._closed = False
        self._ready.put(self._make())      # the first synchronously: a bad SoundFont fails here
        self._refill()

    def take(self):
        try:
            renderer = self._ready.get_nowait()
        except queue.Empty:
            renderer = self._make()
        self._refill()
        return renderer

    def _refill(self):
        with self._lock:
            if self._refilling or self._closed:
                return
            self._refilling = True
        threading.Thread(target=self._fill, name='synth-pool', daemon=True).start()

    def _fill(self):
        try:   # loading runs behind the streams being played (Linux: per-thread nice)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 15)
        except (AttributeError, OSError):
            pass
        try:
            while not self._closed and self._ready.qsize() < self._size:
                self._ready.put(self._make())
        except Exception:   # the next take() builds one itself and reports the error
            logger.exception('synth: preparing a FluidSynth instance failed')
        finally:
            with self._lock:
                self._refilling = False

    def close(self):
        self._closed = True
        while True:
            try:
                self._ready.get_nowait().delete()
            except queue.Empty:
                return


# ---------------------------------------------------------------------------------------------
# The backend


class SynthBackend(MusicBackend):
    """Composed music on sampled GM instruments; one per server, shared by every session.

    Options (keyword only; the server forwards ``--soundfont`` and ``--backend-option
    KEY=VALUE``): ``sample_rate`` [Hz], ``channels`` (1 mono, 2 stereo, more: the stereo pair
    repeated), ``fragment_s`` (seconds per fragment), ``seed`` (None: drawn from the OS),
    ``soundfont`` (path of a GM .sf2).
    """

    name = 'synth'

    def __init__(self, *, sample_rate=32000, channels=1, fragment_s=0.5, seed=None,
                 soundfont=DEFAULT_SOUNDFONT):
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) \
                or not 8000 <= sample_rate <= 96000:
            raise SynthConfigError(
                f'sample_rate must be an int in [8000, 96000] Hz, got {sample_rate!r}')
        if isinstance(channels, bool) or not isinstance(channels, int) or not 1 <= channels <= 8:
            raise SynthConfigError(f'channels must be an int in [1, 8], got {channels!r}')
        if isinstance(fragment_s, bool) or not isinstance(fragment_s, (int, float)) \
                or not math.isfinite(fragment_s) or not 0.01 <= fragment_s <= 10.0:
            raise SynthConfigError(
                f'fragment_s must be a number of seconds in [0.01, 10], got {fragment_s!r}')
        if seed is None:
            seed = secrets.randbits(32)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise SynthConfigError(f'seed must be an int >= 0 or None, got {seed!r}')
        soundfont = Path(os.fspath(soundfont)) if isinstance(soundfont, (str, os.PathLike)) \
            else None
        if soundfont is None or not soundfont.is_file():
            raise SynthConfigError(
                f'the synth backend needs a General MIDI SoundFont; {soundfont} does not exist. '
                'Install Debian\'s fluid-soundfont-gm (./muse.sh setup does) or give '
                '--soundfont PATH.sf2')
        self.sample_rate = sample_rate
        self.channels = channels
        self.fragment_s = float(fragment_s)
        self.fragment_samples = max(int(round(fragment_s * sample_rate)), 1)
        self.seed = seed
        self.soundfont = soundfont
        try:
            self._pool = _RendererPool(soundfont, sample_rate, POOL_SIZE)
        except (ImportError, OSError) as exc:
            raise SynthConfigError(f'FluidSynth is not usable ({exc}); install Debian\'s '
                                   'libfluidsynth3 and pyfluidsynth') from exc
        logger.info('synth backend: seed %d (re-render a session with --backend-option '
                    'seed=%d), SoundFont %s', seed, seed, soundfont)

    def open_stream(self, prompt, context=None):
        return SynthStream(self, prompt, context)

    def take_renderer(self):
        return self._pool.take()

    def close(self):
        self._pool.close()


def _mono_context(context, channels):
    """Validate ``context`` ((n, channels) float audio, or None) and return it as mono
    float64, or None when there is none."""
    if context is None:
        return None
    if not isinstance(context, np.ndarray):
        raise SynthConfigError(f'context must be a numpy array of shape (n, {channels}) or None, '
                               f'got {type(context).__name__}')
    if context.ndim == 1 and channels == 1:
        context = context[:, None]
    if context.ndim != 2 or context.shape[1] != channels:
        raise SynthConfigError(f'context must have shape (n, {channels}), got {context.shape}')
    if not np.issubdtype(context.dtype, np.floating):
        raise SynthConfigError(f'context must hold float samples in [-1, 1], got {context.dtype}')
    if context.shape[0] == 0:
        return None
    if not np.isfinite(context).all():
        raise SynthConfigError('context contains NaN or infinite samples')
    return context.astype(np.float64).mean(axis=1)


def _starts(kind, at, end):
    """When the note a scheduled event belongs to starts (a note-off carries it in ``end``);
    a control's own time."""
    return end if kind == 'off' else at


def _copy_planning(state):
    """A deep copy of a stream's planning state (bands, composers, their random generators);
    the style presets are shared data, not copied."""
    memo = {}
    for band in state[0]:
        memo[id(band.preset)] = band.preset
        memo[id(band.composer.preset)] = band.composer.preset
        for _, _, part in band.parts.values():
            memo[id(part)] = part
    return copy.deepcopy(state, memo)


class _Band:
    """One style's instruments on one group of MIDI channels, with the composer playing them."""

    def __init__(self, preset, composer, base_channel):
        self.preset = preset
        self.composer = composer
        self.base = base_channel
        self.parts = {}                  # voice -> (channel, drum key or None, part)
        self.melodic = []                # channels of melodic parts
        channel = base_channel
        for voice, part in preset.mix.items():
            if part.drum is not None:
                self.parts[voice] = (base_channel + DRUM_CHANNEL, part.drum, part)
                continue
            if channel == base_channel + DRUM_CHANNEL:
                channel += 1
            self.parts[voice] = (channel, None, part)
            self.melodic.append(channel)
            channel += 1
        self.first_bar = 0               # global bar at which this band's composer began
        self.bar_offset = 0              # composer bar = global bar - first_bar + bar_offset
        self.drums_from = 0              # global bar from which its drums play
        self.swell_until = 0             # global bar at which its entry (a transition) ends
        self.until = None                # global bar at which it stops (None: for ever)

    def setup_events(self, at, expression=127):
        """Programs, volumes and sends of the band's channels as events at sample ``at``."""
        events = []
        kit_channel = self.base + DRUM_CHANNEL
        drum_gain = max((p.gain for _, key, p in self.parts.values() if key is not None),
                        default=0.0)
        events.append((at, 'program', kit_channel, 0, self.preset.drum_kit))
        events.append((at, 'cc', kit_channel, _CC_VOLUME, int(127 * drum_gain)))
        events.append((at, 'cc', kit_channel, _CC_REVERB, 40))
        events.append((at, 'cc', kit_channel, _CC_EXPRESSION, 127))
        for channel, key, part in self.parts.values():
            if key is not None:
                continue
            events.append((at, 'program', channel, part.program, None))
            events.append((at, 'cc', channel, _CC_VOLUME, int(127 * part.gain)))
            events.append((at, 'cc', channel, _CC_REVERB, int(127 * part.reverb)))
            events.append((at, 'cc', channel, _CC_CHORUS, 0))
            events.append((at, 'cc', channel, _CC_EXPRESSION, expression))
        return events


class SynthStream(MusicStream):
    """One session's endless piece. Attributes describe what is playing: ``style`` (the
    preset's name), ``key`` (a synth_theory.Key), ``key_source`` ('context' or 'seed'),
    ``bpm``, ``energy`` and ``prompt_id``."""

    def __init__(self, backend, prompt, context=None):
        if not isinstance(prompt, PromptSpec):
            raise SynthConfigError(f'prompt must be a PromptSpec, got {type(prompt).__name__}')
        self._backend = backend
        self.sr = backend.sample_rate
        self.channels = backend.channels
        mono = _mono_context(context, backend.channels)
        self.prompt_id = prompt.prompt_id
        preset = resolve_style(prompt.style, prompt.text)
        self.energy = float(prompt.energy)
        self.bpm = fold_tempo(prompt.target_bpm)
        rng = self._rng(prompt.prompt_id, preset.name)
        key = Key(int(rng.choice(preset.tonics)), preset.mode)
        self.key_source = 'seed'
        if mono is not None and len(mono) >= self.sr:
            estimate, in_key = estimate_key(mono[-int(CONTEXT_KEY_S * self.sr):], self.sr)
            if in_key >= KEY_CONFIDENCE:
                key, self.key_source = estimate.relative(preset.mode), 'context'
        self._renderer = backend.take_renderer()
        self._events = []                 # heap of (sample, order, kind, channel, a, b)
        self._order = 0
        self._pos = 0                     # absolute sample of the next block
        self._bar = 0                     # next bar to plan
        self._bar_start = 0               # its start sample
        self._spb = 60.0 / self.bpm * self.sr   # beat length at its start [samples]
        self._spb_target = self._spb
        self._ramp_bars = 0
        self._pending = None              # PromptSpec to apply at the next planned bar
        self._power = None                # levelling detector: mean square of the mix
        self._gain_db = 0.0
        self._out = np.zeros((0, self.channels), dtype=np.float32)
        self._closed = False
        composer = Composer(preset, key, self.energy, self.bpm, self.sr, rng)
        self._bands = [_Band(preset, composer, 0)]
        self._history = []                # what was scheduled, for forks: (at, order, kind,
                                          # channel, a, b, bar that planned it, note end)
        self._snapshots = {}              # bar -> planning state at its start (see _snapshot)
        self._levels = {}                 # block start -> levelling state before it
        self.emitted = 0                  # stream samples returned by next_fragment so far
        self.landing = None               # sample where the last fork's prompt lands
        self._first = True                # the next fragment is a first one (FIRST_FRAGMENT_S)
        self._cut = None                  # (bar, sample): a fork re-plans that bar from there
        self._bar = -1                    # the band's setup belongs to no bar: never re-planned
        self._schedule_many(self._bands[0].setup_events(0))
        # The stream keeps its first style's room: FluidSynth's reverb clicks whenever its
        # room is changed under sound (3 clicks off the beat grid at style changes in
        # bench_transitions, whether at once or in 64 steps); later styles differ in their
        # channels' reverb sends (CC 91) only.
        self._schedule(0, 'room', 0, preset.room)
        self._bar = 0
        logger.info('synth stream for prompt %d: seed %d, %s in %s, %.0f BPM, energy %.2f '
                    '(key from %s)', prompt.prompt_id, backend.seed, preset.name, key,
                    self.bpm, self.energy, self.key_source)

    # -- what is playing -----------------------------------------------------------------

    @property
    def style(self):
        return self._bands[-1].preset.name

    @property
    def key(self):
        return self._bands[-1].composer.key

    def _rng(self, prompt_id, style):
        return np.random.default_rng([self._backend.seed, prompt_id, zlib.crc32(style.encode())])

    # -- retargeting ---------------------------------------------------------------------

    def retarget(self, prompt):
        """Steer the piece to ``prompt`` from the next bar line on (see the module doc)."""
        if self._closed or not isinstance(prompt, PromptSpec):
            return False
        fold_tempo(prompt.target_bpm)     # a bad tempo is refused now, not at the bar line
        self.prompt_id = prompt.prompt_id
        self._pending = prompt
        return True

    def _apply(self, prompt):
        """At the bar line ``self._bar``: take on ``prompt``'s style, tempo and energy."""
        preset = resolve_style(prompt.style, prompt.text)
        bpm = fold_tempo(prompt.target_bpm)
        energy = float(prompt.energy)
        current = self._bands[-1]
        logger.info('synth: prompt %d lands at bar %d (sample %d): %s, %.0f BPM, energy %.2f',
                    prompt.prompt_id, self._bar, int(self._bar_start), preset.name, bpm, energy)
        if abs(bpm - self.bpm) > 1e-6:
            self._spb_target = 60.0 / bpm * self.sr
            self._ramp_bars = TEMPO_RAMP_BARS
        self.bpm, self.energy = bpm, energy
        if preset.name == current.preset.name:
            current.composer.retune(energy, bpm)
            return
        # A style change: the new band swells in over the old one's last bars.
        start = self._bar_start
        while len(self._bands) > 1:       # a change during a change: the oldest band ends now
            self._end_band(self._bands.pop(0), start)
        old = self._bands[0]
        composer = Composer(preset, old.composer.key, energy, bpm, self.sr,
                            self._rng(prompt.prompt_id, preset.name))
        composer.continue_from(old.composer)
        band = _Band(preset, composer, CHANNELS_PER_BAND - old.base)
        band.first_bar = self._bar
        band.bar_offset = BARS_PER_SECTION - TRANSITION_BARS  # downbeat = its section start
        band.swell_until = self._bar + TRANSITION_BARS
        band.drums_from = band.swell_until - 1   # its drums come in under the old band's fill
        old.until = self._bar + TRANSITION_BARS
        old.composer.retune(old.composer.energy, bpm)
        self._bands.append(band)
        self._schedule_many(band.setup_events(start, expression=0))

    def _end_band(self, band, at):
        """Silence a band's held notes (faded out by then); its drum hits ring out (cutting a
        cymbal's release would click)."""
        for channel in range(band.base, band.base + CHANNELS_PER_BAND):
            if channel != band.base + DRUM_CHANNEL:
                self._schedule(at, 'cc', channel, _CC_ALL_NOTES_OFF, 0)

    # -- planning ------------------------------------------------------------------------

    def _schedule(self, at, kind, channel, a, b=0, end=None):
        """``end``: a melodic note-on's end, a note-off's start (forks pair them by it)."""
        if self._cut is not None and self._bar == self._cut[0]:
            # the bar a fork re-plans: before its landing beat the old plan's notes play on;
            # the new plan's settings take effect from that beat
            if kind in ('on', 'off') and _starts(kind, at, end) < self._cut[1]:
                return
            at = max(at, self._cut[1])
        heapq.heappush(self._events, (int(at), self._order, kind, channel, a, b))
        self._history.append((int(at), self._order, kind, channel, a, b, self._bar, end))
        self._order += 1

    def _schedule_many(self, events):
        for at, kind, channel, a, b in events:
            self._schedule(at, kind, channel, a, b)

    def _plan(self, until):
        while self._bar_start < until:
            self._snapshots[self._bar] = self._snapshot()
            if self._pending is not None:
                prompt, self._pending = self._pending, None
                self._apply(prompt)
            spb0 = self._spb
            if self._ramp_bars:
                spb1 = spb0 + (self._spb_target - spb0) / self._ramp_bars
                self._ramp_bars -= 1
            else:
                spb1 = spb0 = self._spb_target
            length = BEATS_PER_BAR * (spb0 + spb1) / 2.0
            for band in list(self._bands):
                if band.until is not None and self._bar >= band.until:
                    self._bands.remove(band)
                    self._end_band(band, self._bar_start)
                    continue
                self._plan_band_bar(band, spb0, spb1, length)
            self._spb = spb1
            self._bar_start += length
            self._bar += 1
            self._cut = None

    def _plan_band_bar(self, band, spb0, spb1, length):
        composer = band.composer
        local = self._bar - band.first_bar + band.bar_offset
        ending = band.until is not None
        composer.force_fill = ending and self._bar == band.until - 1
        drums = self._bar >= band.drums_from
        if ending or self._bar < band.swell_until:
            self._transition_levels(band, ending, drums, length)
        for note in composer.plan_bar(local, int(round(self._bar_start)), (spb0, spb1)):
            if note.voice in DRUM_VOICES and not drums:
                continue
            channel, key, part = band.parts[note.voice]
            pitch = key if key is not None else int(round(note.pitch))
            velocity = max(1, min(127, int(round(1 + 126 * note.velocity))))
            self._schedule(note.start, 'on', channel, pitch, velocity,
                           end=note.start + note.length if key is None else None)
            if key is None:   # drum samples are one-shots: they end by themselves
                self._schedule(note.start + note.length, 'off', channel, pitch, end=note.start)

    def _transition_levels(self, band, ending, drums, length):
        """A style change, beat by beat: the leaving band fades and washes into the room (its
        drums less, they play the fill); the arriving band's harmony swells in, and in the
        last bar its drums come in under the fill, crossing over on the downbeat."""
        start = int(round(self._bar_start))
        passed = self._bar - (band.until - TRANSITION_BARS if ending else band.first_bar)
        kit = band.base + DRUM_CHANNEL
        for beat in range(BEATS_PER_BAR):
            progress = (passed * BEATS_PER_BAR + beat + 1) / (TRANSITION_BARS * BEATS_PER_BAR)
            at = start + int(beat * length / BEATS_PER_BAR)
            level = 1.0 - progress if ending else progress
            for channel in band.melodic:
                self._schedule(at, 'cc', channel, _CC_EXPRESSION,
                               int(127 * math.sqrt(max(level, 0.0))))
                if ending:
                    self._schedule(at, 'cc', channel, _CC_REVERB, int(min(127, 40 + 87 * progress)))
            if ending:
                self._schedule(at, 'cc', kit, _CC_EXPRESSION, int(127 * (1.0 - 0.6 * progress)))
            elif drums:
                self._schedule(at, 'cc', kit, _CC_EXPRESSION,
                               int(127 * math.sqrt((beat + 1) / BEATS_PER_BAR)))

    # -- rendering -----------------------------------------------------------------------

    def _dispatch(self, kind, channel, a, b):
        if kind == 'room':
            self._renderer.room(*a)
        elif kind == 'program':
            band_base = channel - channel % CHANNELS_PER_BAND
            self._renderer.select(channel, a, b if channel - band_base == DRUM_CHANNEL else None)
        else:
            self._renderer.event(kind, channel, a, b)

    def _render_block(self, discard=False):
        pos, end = self._pos, self._pos + BLOCK
        self._plan(end + LOOKAHEAD_BEATS * self._spb)
        stereo = np.empty((BLOCK, 2), dtype=np.float32)
        done = pos
        while self._events and self._events[0][0] < end:
            at, _, kind, channel, a, b = heapq.heappop(self._events)
            at = max(at, done)
            if at > done:
                self._renderer.render_into(stereo[done - pos:at - pos])
                done = at
            self._dispatch(kind, channel, a, b)
        if done < end:
            self._renderer.render_into(stereo[done - pos:])
        self._pos = end
        if discard:
            return None
        if self.channels == 1:
            return self._level(stereo.mean(axis=1, keepdims=True))
        return self._level(np.tile(stereo, (1, (self.channels + 1) // 2))[:, :self.channels])

    def _level(self, mixed):
        self._levels[self._pos - BLOCK] = (self._power, self._gain_db)
        return self._apply_level(mixed)

    def _apply_level(self, mixed):
        """Bring the output to the energy's loudness, slowly (a gain riding the music, not a
        compressor), and keep peaks below full scale."""
        power = float(np.mean(np.square(mixed, dtype=np.float64)))
        if self._power is None:
            self._power = max(power, 1e-4)      # a quiet first block must not be boosted
        else:
            tau = LEVEL_TIME_S[self._pos > LEVEL_SETTLE_S * self.sr]
            self._power += (power - self._power) * min(1.0, BLOCK / (tau * self.sr))
        before = self._gain_db
        loudness_db = 10.0 * math.log10(max(self._power, 1e-12))
        self._gain_db = float(np.clip(loudness_target_db(self.energy) - loudness_db,
                                      *LEVEL_RANGE_DB))
        gain = 10.0 ** (np.linspace(before, self._gain_db, BLOCK, endpoint=False) / 20.0)
        return soft_clip(mixed * gain[:, None].astype(np.float32))

    def next_fragment(self):
        if self._closed:
            raise BackendError(f'synth stream for prompt {self.prompt_id} is closed')
        need = self._backend.fragment_samples
        if self._first:
            need = min(need, int(FIRST_FRAGMENT_S * self.sr))
            self._first = False
        try:
            blocks = [self._out]
            have = len(self._out)
            while have < need:
                blocks.append(self._render_block())
                have += BLOCK
        except Exception as exc:       # a bug must reach the server as a typed error
            raise BackendError(f'synth stream for prompt {self.prompt_id} failed: {exc!r}') from exc
        joined = np.concatenate(blocks) if len(blocks) > 1 else self._out
        self._out = joined[need:]
        self.emitted += need
        self._forget(self.emitted - int((FORK_HISTORY_S + FORK_PREROLL_S) * self.sr))
        return np.ascontiguousarray(joined[:need], dtype=np.float32)

    # -- forking ---------------------------------------------------------------------------

    def _snapshot(self):
        """The planning state at the start of bar ``self._bar`` (a fork restarts from it).
        Presets are shared data, not copied."""
        state = (self._bands, self._spb, self._spb_target, self._ramp_bars, self.bpm,
                 self.energy, self._pending)
        return self._bar_start, _copy_planning(state)

    def _forget(self, before):
        """Drop fork history older than sample ``before``: notes over by then, levelling and
        bar states before it; controls collapse to the last value per controller."""
        if len(self._history) < 4096:
            return
        controls, kept = {}, []
        for event in self._history:
            at, _, kind, channel, a, _b, _bar, end = event
            if at >= before or (kind == 'on' and end is not None and end > before):
                kept.append(event)
            elif kind in ('cc', 'program', 'room'):
                controls[(kind, channel, a if kind == 'cc' else None)] = event
        self._history = sorted(controls.values(), key=lambda e: e[1]) + kept
        for bar in [b for b, (start, _) in self._snapshots.items() if start < before]:
            del self._snapshots[bar]
        for block in [b for b in self._levels if b < before]:
            del self._levels[block]

    def fork(self, prompt, at_sample):
        """Re-render from stream sample ``at_sample`` (between ``FORK_HISTORY_S`` before
        :attr:`emitted` and it) with ``prompt`` landing on the first eighth note
        (``FORK_GRID_BEATS``) at or after it: the notes planned before that point are replayed
        as they were (same grid, the same audio up to small reverb and sustain differences),
        the bar is re-planned for ``prompt`` from that point on. Returns the sample where the next fragment starts (``at_sample``
        clamped), or None when the history does not reach back that far (the caller
        retargets instead). :attr:`landing` is then the sample of that beat."""
        if self._closed or not isinstance(prompt, PromptSpec):
            return None
        fold_tempo(prompt.target_bpm)
        at = max(0, min(int(at_sample), self.emitted))
        if at < self.emitted - FORK_HISTORY_S * self.sr:
            return None
        block = at - at % BLOCK
        preroll = max(0, block - int(FORK_PREROLL_S * self.sr) // BLOCK * BLOCK)
        if block not in self._levels and block != self._pos:
            return None
        states = dict(self._snapshots)
        states[self._bar] = self._snapshot()          # the present: the next bar to plan
        bars = sorted(b for b, (start, _) in states.items() if start <= at)
        if not bars:
            return None
        bar = bars[-1]
        start, state = states[bar]
        spb0, target, ramp = state[1], state[2], state[3]
        beat = (spb0 + (target - spb0) / ramp / 2.0) if ramp else target   # mean beat length
        step = FORK_GRID_BEATS * beat
        index = math.ceil((at - start) / step - 1e-9)   # its notes start at or after `at`
        if index * FORK_GRID_BEATS >= BEATS_PER_BAR:    # past the bar: the next bar line
            if bar + 1 not in states:
                return None
            bar, index = bar + 1, 0
            start, state = states[bar]
        # Planning resumes at the landing bar, from its state then, cut at the landing beat.
        self._bar_start = start
        (self._bands, self._spb, self._spb_target, self._ramp_bars, self.bpm, self.energy,
         _) = _copy_planning(state)
        self._bar = bar
        self.landing = int(round(start + index * step))
        self._cut = (bar, self.landing)
        for later in [b for b in self._snapshots if b >= bar]:
            del self._snapshots[later]
        self._pending = prompt
        self.prompt_id = prompt.prompt_id
        self._replay(preroll, block)
        self._out = np.zeros((0, self.channels), dtype=np.float32)
        if at > block:
            self._out = self._render_block()[at - block:]
        self.emitted = at
        self._first = True
        logger.info('synth: prompt %d forks the stream at sample %d, lands at sample %d '
                    '(bar %d, beat %g)', prompt.prompt_id, at, self.landing, bar,
                    1 + index * FORK_GRID_BEATS)
        return at

    def _replay(self, preroll, block):
        """A fresh FluidSynth brought to the state of sample ``block``: controls as they
        were, notes still sounding restarted at ``preroll``, the notes planned before the
        landing bar replayed from there (rendered and discarded until ``block``)."""
        history = [e for e in self._history if e[6] < self._bar
                   or e[6] == self._bar and _starts(e[2], e[0], e[7]) < self.landing]
        self._history = []
        self._events = []
        old, self._renderer = self._renderer, self._backend.take_renderer()
        # deleting a FluidSynth takes ~15 ms: not on the fork's critical path
        threading.Thread(target=old.delete, name='synth-delete', daemon=True).start()
        controls = {}
        for at, order, kind, channel, a, b, bar, end in history:
            if at < preroll:
                if kind in ('cc', 'program', 'room'):
                    controls[(kind, channel, a if kind == 'cc' else None)] = \
                        (at, order, kind, channel, a, b, bar, end)
                elif kind == 'on' and end is not None and end > preroll:
                    self._restore((preroll, order, kind, channel, a, b, bar, end))
        for event in sorted(controls.values(), key=lambda e: e[1]):
            self._restore((preroll,) + event[1:])
        for event in history:
            if event[0] >= preroll:
                self._restore(event)
        self._pos = preroll
        while self._pos < block:
            self._render_block(discard=True)
        self._power, self._gain_db = self._levels.get(block, (self._power, self._gain_db))

    def _restore(self, event):
        at, _, kind, channel, a, b, bar, end = event
        heapq.heappush(self._events, (at, self._order, kind, channel, a, b))
        self._history.append((at, self._order, kind, channel, a, b, bar, end))
        self._order += 1

    def close(self):
        if not self._closed:
            self._closed = True
            self._events = []
            self._renderer.delete()


# ---------------------------------------------------------------------------------------------
# Tools: rendering examples


def render(backend, prompt, seconds, context=None):
    """``seconds`` of one stream as float32 (n, channels)."""
    with SynthStream(backend, prompt, context) as stream:
        n = int(seconds * backend.sample_rate)
        parts, have = [], 0
        while have < n:
            parts.append(stream.next_fragment())
            have += len(parts[-1])
    return np.concatenate(parts)[:n]


def write_wav(path, audio, sample_rate):
    """16-bit PCM WAV (stdlib only)."""
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype('<i2')
    with wave.open(str(path), 'wb') as out:
        out.setnchannels(pcm.shape[1])
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='python -m muse_server.backends.synth',
        description='Render one example WAV per style with the synth backend.')
    parser.add_argument('--out', type=Path, required=True, help='output folder')
    parser.add_argument('--seconds', type=float, default=20.0)
    parser.add_argument('--energy', type=float, default=0.6)
    parser.add_argument('--bpm', type=float, default=112.0)
    parser.add_argument('--seed', type=int, default=1)
    parser.add_argument('--soundfont', default=DEFAULT_SOUNDFONT)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    backend = SynthBackend(seed=args.seed, soundfont=args.soundfont)
    for name in STYLES:
        prompt = PromptSpec(1, f'{name} music', name, energy=args.energy, target_bpm=args.bpm)
        audio = render(backend, prompt, args.seconds)
        path = args.out / f'{name}.wav'
        write_wav(path, audio, backend.sample_rate)
        print(f'{path}: {rms_db(audio):.1f} dBFS RMS, peak {np.max(np.abs(audio)):.2f}')
    backend.close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
