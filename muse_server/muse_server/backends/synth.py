"""The ``synth`` backend: procedural music from the prompt's semantics, the server's embedded
default (no model weights, no GPU, nothing but numpy).

What a prompt controls
----------------------
- **Style**: ``PromptSpec.style`` names a preset (``chill_techno``, ``lofi_hiphop``,
  ``ambient``, ``upbeat_pop``, ``cinematic``, ``jazz``; case and separators forgiven).
  An unknown style falls back on keywords in the style and the prompt text ("orchestral",
  "lo-fi", "swing", ...), then on ``chill_techno`` (``synth_styles.resolve_style``).
- **Tempo**: ``PromptSpec.target_bpm`` is the beat. Tempos outside 40-240 BPM are folded
  by octaves into it (20 -> 40, 300 -> 150): halving or doubling keeps every beat on the
  listener's steps, as muse_prompt's own folding does.
- **Energy** in [0, 1]: density (optional notes, hat sixteenths, shakers, fills), dynamics
  (velocities; target loudness from -22 dBFS RMS at 0 to -14 dBFS at 1), brightness
  (harmonic richness, hat colour), and drum intensity.

``PromptSpec`` itself rejects negative or non-finite tempos and energies outside [0, 1]
with ``ValueError``; this backend rejects a malformed ``context`` and bad constructor
options with :class:`BackendError` (:class:`SynthConfigError`, also a ``ValueError``).

Streaming
---------
A stream renders in fixed blocks of ``BLOCK`` samples with all state carried between them
(notes in flight, reverb and echo memories, compressor detectors), and fragments are cut
from that block sequence. So the audio is one continuous signal whatever the fragment size:
the same seed gives the same samples for any ``fragment_s``, and fragment boundaries cannot
click. Notes are computed segment by segment as they sound, so opening a stream and
rendering its first fragment costs a few milliseconds.

Prompt changes (``context``)
----------------------------
The server passes the tail of the audio the listener heard. The new stream then:

1. **keeps the key family**: the key signature of the last 4 s is estimated (the seven-note
   diatonic set holding the most chroma energy); when the context is clearly tonal the new
   style plays in that signature, as its relative major or minor where the modes differ
   (A minor techno -> C major pop), so no foreign notes collide in the player's crossfade;
2. **matches loudness**: it starts at the level of the context (within -12/+6 dB of its
   own target) and glides to its own target over two bars, so a change of energy is a swell,
   not a jump;
3. **carries the room**: the last second of the context is fed through the new stream's
   reverb, so the old music's tail rings on into the new one;
4. **starts on a downbeat**: sample 0 of every stream is beat 1 of a section, marked by a
   crash (a clear, musical entry for the player's crossfade).

Determinism
-----------
Everything random derives from (backend ``seed``, ``prompt_id``, style), so a seed
reproduces a session exactly. ``seed=None`` draws one from the OS at start-up
(``backend.seed`` tells which).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import heapq
import math
import secrets
import sys
import threading
import wave
import zlib
from pathlib import Path

import numpy as np

from muse_server.backends.base import BackendError, MusicBackend, MusicStream, PromptSpec
from muse_server.backends.synth_compose import BEATS_PER_BAR, Composer
from muse_server.backends.synth_dsp import (BlockConvolver, FeedbackEcho, RmsCompressor,
                                                  WavetableBank, db_to_gain, make_noise_tables,
                                                  make_reverb_ir, rms_db, soft_clip)
from muse_server.backends.synth_styles import STYLES, resolve_style
from muse_server.backends.synth_theory import Key, estimate_key
from muse_server.backends.synth_voices import Note, VoiceKit

BLOCK = 2048                          # samples rendered at a time (64 ms at 32 kHz)
TEMPO_RANGE_BPM = (40.0, 240.0)
LOUDNESS_DB = (-22.0, -14.0)          # output RMS [dBFS] at energy 0 and 1
CONTEXT_KEY_S = 4.0                   # seconds of context analysed for its key signature
KEY_CONFIDENCE = 0.65                 # share of chroma energy in the key's seven notes (noise:
                                      # 0.58) above which the context is called tonal
CONTEXT_LEVEL_S = 1.0                 # seconds of context whose loudness is matched
CONTEXT_TRIM_DB = (-12.0, 6.0)        # how far from its target a stream may start
GLIDE_BARS = 2                        # bars over which the start level glides to the target
REVERB_CARRY_S = 1.0                  # seconds of context fed into the new reverb
REVERB_CARRY_LEVEL = 0.3
ECHO_TO_REVERB = 0.3
MAX_DUCK = 0.9
COMPRESSOR_HEADROOM_DB = 5.0          # threshold above the loudness target
CACHED_NOTE_S = 3.0                   # notes up to this long are rendered once and reused
NOTE_VARIANTS = 4                     # round-robin variations of a cached note

# Bus rows of a block being mixed.
_DRY, _DRY_DUCKED, _REVERB, _ECHO, _DUCK = range(5)


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


def _duck_at(t, beat_s):
    """Side-chain ducking after a kick: a 4 ms dip, recovering over the beat, zero after it."""
    return np.minimum(t / 0.004, 1.0) * np.exp(-t / (0.22 * beat_s)) \
        * np.clip((beat_s - t) / (0.2 * beat_s), 0.0, 1.0)


class NoteCache:
    """Rendered notes, shared by every stream of a backend (thread-safe, least recently used
    evicted beyond ``max_bytes``).

    Drums, bass notes, stabs and arpeggios recur bar after bar. A note not yet cached is
    rendered block by block as it sounds, like any other, and its samples are kept; once it
    has sounded to its end it enters the cache, and later occurrences are read back. So
    caching costs the first fragment nothing and makes the steady state many times cheaper.

    Notes are cached in a canonical form: voices linear in velocity at velocity 1 (scaled on
    reading), the others per velocity step of 1/32; and with ``NOTE_VARIANTS`` noise slices
    and phases, as a sampler cycles through round-robin samples.
    """

    NONLINEAR_VOICES = frozenset({'epiano', 'piano'})

    def __init__(self, max_bytes):
        self.max_bytes = max_bytes      # 0 disables the cache
        self._entries = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def canonical(self, kit, note):
        """(cache key, the note to render, the gain to apply to it)."""
        linear = note.voice not in self.NONLINEAR_VOICES
        velocity = 1.0 if linear else round(note.velocity * 32.0) / 32.0
        variant = note.variant % NOTE_VARIANTS
        key = (note.voice, note.pitch, note.length, velocity, variant, kit.b, kit.sr)
        return (key, Note(0, note.voice, note.pitch, note.length, velocity, variant),
                note.velocity if linear else 1.0)

    def get(self, key):
        with self._lock:
            wave = self._entries.get(key)
            if wave is None:
                self.misses += 1
            else:
                self._entries.move_to_end(key)
                self.hits += 1
            return wave

    def put(self, key, wave):
        if self.max_bytes <= 0:
            return
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = wave
            self._bytes += wave.nbytes
            while self._bytes > self.max_bytes and len(self._entries) > 1:
                self._bytes -= self._entries.popitem(last=False)[1].nbytes


@dataclasses.dataclass
class _Sounding:
    """A note in flight: where its samples come from and where they go."""

    start: int
    end: int
    mix: object
    render_note: Note              # the note rendered (canonical when cacheable)
    gain: float                    # applied to the rendered samples
    is_kick: bool
    wave: np.ndarray = None        # the whole note, read from the cache
    key: tuple = None              # cache key while recording a first occurrence
    recording: np.ndarray = None


class SynthBackend(MusicBackend):
    """Procedural music renderer; one per server, shared by every session. Thread-safe:
    streams share read-only tables (noise, rooms) and two caches (wavetables, notes) that
    are safe to fill from several worker threads.

    Options (keyword only; the server forwards ``--backend-option KEY=VALUE``): ``sample_rate``
    [Hz], ``channels`` (1 mono; more: the same dry mix with a decorrelated room per channel),
    ``fragment_s`` (seconds per fragment), ``seed`` (None: drawn from the OS), ``cache_mb``
    (note cache size; 0 disables it).
    """

    name = 'synth'

    def __init__(self, *, sample_rate=32000, channels=1, fragment_s=0.5, seed=None, cache_mb=64):
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) \
                or not 8000 <= sample_rate <= 192000:
            raise SynthConfigError(
                f'sample_rate must be an int in [8000, 192000] Hz, got {sample_rate!r}')
        if isinstance(channels, bool) or not isinstance(channels, int) or not 1 <= channels <= 8:
            raise SynthConfigError(f'channels must be an int in [1, 8], got {channels!r}')
        if isinstance(fragment_s, bool) or not isinstance(fragment_s, (int, float)) \
                or not math.isfinite(fragment_s) or not 0.01 <= fragment_s <= 10.0:
            raise SynthConfigError(
                f'fragment_s must be a number of seconds in [0.01, 10], got {fragment_s!r}')
        if isinstance(cache_mb, bool) or not isinstance(cache_mb, (int, float)) \
                or not 0 <= cache_mb <= 65536:
            raise SynthConfigError(
                f'cache_mb must be a number of MiB in [0, 65536], got {cache_mb!r}')
        if seed is None:
            seed = secrets.randbits(32)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise SynthConfigError(f'seed must be an int >= 0 or None, got {seed!r}')
        self.sample_rate = sample_rate
        self.channels = channels
        self.fragment_s = float(fragment_s)
        self.fragment_samples = max(int(round(fragment_s * sample_rate)), 1)
        self.seed = seed
        rng = np.random.default_rng([seed, 0x5EED])
        self.bank = WavetableBank(sample_rate)
        self.noise = make_noise_tables(rng, sample_rate)
        # One room per style; each output channel gets its own noise, so stereo is wide.
        self._rooms = {}
        for name, preset in STYLES.items():
            irs = [make_reverb_ir(rng, sample_rate, preset.reverb_s, damping=preset.reverb_damping)
                   for _ in range(channels)]
            self._rooms[name] = BlockConvolver.prepare(np.stack(irs), BLOCK)
        self.note_cache = NoteCache(int(cache_mb * (1 << 20)))

    def room(self, style_name):
        return self._rooms[style_name]

    def open_stream(self, prompt, context=None):
        return SynthStream(self, prompt, context)


def _mono_context(context, channels, sample_rate):
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
    keep = int((max(CONTEXT_KEY_S, CONTEXT_LEVEL_S, REVERB_CARRY_S)) * sample_rate)
    return context[-keep:].astype(np.float64).mean(axis=1)


class SynthStream(MusicStream):
    """One prompt's endless piece. Attributes describe what is playing: ``style`` (the
    preset's name), ``key`` (a synth_theory.Key), ``key_source`` ('context' or 'seed'),
    ``bpm`` and ``energy``. ``preset`` overrides the prompt's style (level calibration)."""

    def __init__(self, backend, prompt, context=None, preset=None):
        if not isinstance(prompt, PromptSpec):
            raise SynthConfigError(f'prompt must be a PromptSpec, got {type(prompt).__name__}')
        sr = backend.sample_rate
        self._backend = backend
        self.prompt_id = prompt.prompt_id
        self.preset = preset or resolve_style(prompt.style, prompt.text)
        self.style = self.preset.name
        self.energy = float(prompt.energy)          # PromptSpec checked it is in [0, 1]
        self.bpm = fold_tempo(prompt.target_bpm)
        self.channels = backend.channels
        rng = np.random.default_rng(
            [backend.seed, prompt.prompt_id, zlib.crc32(self.style.encode())])
        mono = _mono_context(context, backend.channels, sr)

        self.key = Key(int(rng.choice(self.preset.tonics)), self.preset.mode)
        self.key_source = 'seed'
        if mono is not None and len(mono) >= sr:
            estimate, in_key = estimate_key(mono[-int(CONTEXT_KEY_S * sr):], sr)
            if in_key >= KEY_CONFIDENCE:
                self.key, self.key_source = estimate.relative(self.preset.mode), 'context'

        low, high = self.preset.brightness
        self._voices = VoiceKit(sr, backend.bank, backend.noise, low + (high - low) * self.energy)
        self._composer = Composer(self.preset, self.key, self.energy, self.bpm, sr, rng)
        self._beat_s = 60.0 / self.bpm
        self._lookahead = int(self._beat_s * sr)
        beat = np.arange(int(self._beat_s * sr) if self.preset.duck_depth else 0) / sr
        self._duck_curve = self.preset.duck_depth * _duck_at(beat, self._beat_s)   # per kick
        self._cached_samples = int(CACHED_NOTE_S * sr)

        self._reverb = BlockConvolver(backend.room(self.style), BLOCK)
        self._echo = FeedbackEcho(int(round(self.preset.echo_beats * self._beat_s * sr)),
                                  self.preset.echo_feedback)
        target = loudness_target_db(self.energy)
        self._compressor = RmsCompressor(sr, target + COMPRESSOR_HEADROOM_DB)
        self._level_db = float(np.interp(self.energy, (0.0, 0.5, 1.0), self.preset.level_db))
        self._trim_db = 0.0
        self._glide_samples = int(GLIDE_BARS * BEATS_PER_BAR * self._beat_s * sr)
        if mono is not None:
            context_db = rms_db(mono[-int(CONTEXT_LEVEL_S * sr):])
            if context_db > -60.0:
                self._trim_db = float(np.clip(context_db - target, *CONTEXT_TRIM_DB))
            self._carry_room(mono[-int(REVERB_CARRY_S * sr):])

        self._pos = 0                 # absolute sample index of the next block
        self._pending = []            # heap of (start, order, note) not yet sounding
        self._order = 0
        self._sounding = []           # _Sounding notes in flight
        self._next_bar = 0
        self._out = np.zeros((0, self.channels), dtype=np.float32)
        self._closed = False

    def _carry_room(self, tail):
        """Feed the context's tail (faded in) through the reverb, so its room keeps ringing."""
        blocks = -(-len(tail) // BLOCK)
        padded = np.zeros(blocks * BLOCK)
        padded[-len(tail):] = tail * np.linspace(0.0, 1.0, len(tail)) * REVERB_CARRY_LEVEL
        for i in range(blocks):
            self._reverb.push(padded[i * BLOCK:(i + 1) * BLOCK])

    # -- rendering ----------------------------------------------------------------------------

    def _plan(self, until):
        while self._composer.bar_start(self._next_bar) < until:
            for note in self._composer.plan_bar(self._next_bar):
                heapq.heappush(self._pending, (note.start, self._order, note))
                self._order += 1
            self._next_bar += 1

    def _start_note(self, note):
        duration = self._voices.duration(note)
        mix = self.preset.mix[note.voice]
        kick = note.voice == 'kick'
        if duration > self._cached_samples:             # long notes (pads): always rendered
            return _Sounding(note.start, note.start + duration, mix, note, 1.0, kick)
        cache = self._backend.note_cache
        key, canonical, gain = cache.canonical(self._voices, note)
        item = _Sounding(note.start, note.start + duration, mix, canonical, gain, kick,
                         wave=cache.get(key))
        if item.wave is None:
            item.key, item.recording = key, np.empty(duration, dtype=np.float32)
        return item

    def _render_block(self):
        pos, end = self._pos, self._pos + BLOCK
        self._plan(end + self._lookahead)
        while self._pending and self._pending[0][0] < end:
            self._sounding.append(self._start_note(heapq.heappop(self._pending)[2]))
        buses = np.zeros((5, BLOCK))
        still = []
        for item in self._sounding:
            first = max(pos, item.start)
            last = min(end, item.end)
            a, b = first - item.start, last - item.start
            if item.wave is not None:
                segment = item.wave[a:b]
            else:
                segment = self._voices.render(item.render_note, a, b - a).astype(np.float32)
                if item.recording is not None:
                    item.recording[a:b] = segment
            where = slice(first - pos, last - pos)
            mix, gain = item.mix, item.gain
            buses[_DRY_DUCKED if mix.ducked else _DRY, where] += segment * (gain * mix.gain)
            if mix.reverb:
                buses[_REVERB, where] += segment * (gain * mix.reverb)
            if mix.echo:
                buses[_ECHO, where] += segment * (gain * mix.echo)
            if item.is_kick and a < len(self._duck_curve):
                dip = self._duck_curve[a:b]
                buses[_DUCK, first - pos:first - pos + len(dip)] += dip * gain
            if item.end > end:
                still.append(item)
            elif item.recording is not None:
                self._backend.note_cache.put(item.key, item.recording)
        self._sounding = still

        dry = buses[_DRY] + buses[_DRY_DUCKED] * (1.0 - np.minimum(buses[_DUCK], MAX_DUCK))
        echo = self._echo.process(buses[_ECHO])
        wet = self._reverb.process(buses[_REVERB] + ECHO_TO_REVERB * echo)
        mix = (dry + echo)[None, :] + wet
        gain_db = self._level_db
        if self._trim_db and pos < self._glide_samples:
            progress = (pos + np.arange(BLOCK)) / self._glide_samples
            gain_db = gain_db + self._trim_db * np.clip(1.0 - progress, 0.0, 1.0)
        mix = soft_clip(self._compressor.process(mix * db_to_gain(gain_db)))
        self._pos = end
        return mix.T.astype(np.float32)

    def next_fragment(self):
        if self._closed:
            raise BackendError(f'synth stream for prompt {self.prompt_id} is closed')
        need = self._backend.fragment_samples
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
        return np.ascontiguousarray(joined[:need])

    def close(self):
        self._closed = True
        self._pending = []
        self._sounding = []
        self._out = np.zeros((0, self.channels), dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# Tools: rendering examples and calibrating the styles' levels


def render(backend, prompt, seconds, context=None, preset=None):
    """``seconds`` of one stream as float32 (n, channels)."""
    stream = SynthStream(backend, prompt, context, preset)
    n = int(seconds * backend.sample_rate)
    parts, have = [], 0
    while have < n:
        parts.append(stream.next_fragment())
        have += len(parts[-1])
    stream.close()
    return np.concatenate(parts)[:n]


def write_wav(path, audio, sample_rate):
    """16-bit PCM WAV (stdlib only)."""
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype('<i2')
    with wave.open(str(path), 'wb') as out:
        out.setnchannels(pcm.shape[1])
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())


def measure_style_levels(seconds=24.0, seeds=(1, 2), iterations=3, bpm=110.0, progress=None):
    """The ``level_db`` table (gain at energy 0, 0.5, 1) that brings every style to
    ``loudness_target_db``: renders each style and corrects its gain until the output's RMS
    meets the target (a few rounds, since the compressor is not linear)."""
    energies = (0.0, 0.5, 1.0)
    backends = [SynthBackend(seed=seed, fragment_s=1.0) for seed in seeds]
    table = {}
    for name, preset in STYLES.items():
        levels = list(preset.level_db)
        for i, energy in enumerate(energies):
            for _ in range(iterations):
                trial = dataclasses.replace(preset, level_db=(levels[i],) * 3)
                measured = np.mean([
                    rms_db(render(b, PromptSpec(1, '', name, energy=energy, target_bpm=bpm),
                                  seconds, preset=trial)) for b in backends])
                levels[i] += loudness_target_db(energy) - measured
            if progress:
                progress(name, energy, levels[i])
        table[name] = tuple(round(float(level), 2) for level in levels)
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='python -m muse_server.backends.synth',
        description='Render example pieces with the synth backend, or re-measure the style levels.')
    sub = parser.add_subparsers(dest='command', required=True)
    examples = sub.add_parser('render', help='write one WAV per style')
    examples.add_argument('--out', type=Path, required=True, help='output folder')
    examples.add_argument('--seconds', type=float, default=20.0)
    examples.add_argument('--energy', type=float, default=0.6)
    examples.add_argument('--bpm', type=float, default=112.0)
    examples.add_argument('--seed', type=int, default=1)
    sub.add_parser('calibrate', help='print the level_db table for synth_styles.py')
    args = parser.parse_args(argv)
    if args.command == 'render':
        args.out.mkdir(parents=True, exist_ok=True)
        backend = SynthBackend(seed=args.seed)
        for name in STYLES:
            prompt = PromptSpec(1, f'{name} music', name, energy=args.energy, target_bpm=args.bpm)
            audio = render(backend, prompt, args.seconds)
            path = args.out / f'{name}.wav'
            write_wav(path, audio, backend.sample_rate)
            print(f'{path}: {rms_db(audio):.1f} dBFS RMS, peak {np.max(np.abs(audio)):.2f}')
    else:
        table = measure_style_levels(
            progress=lambda n, e, level: print(f'{n} energy {e}: {level:+.2f} dB', file=sys.stderr))
        for name, levels in table.items():
            print(f'{name}: level_db={levels}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
