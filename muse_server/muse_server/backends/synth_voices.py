"""The ``synth`` backend's instruments.

Each voice is a closed-form function of the time since its note began, so the engine can
render any segment of a note on its own (a long pad is computed block by block as it plays,
and the first fragment of a stream costs only the samples it contains). Everything is
vectorised over the segment's samples.

Drums are synthesised the classic analogue way (pitch-swept sines, filtered noise through
envelopes); tonal voices read band-limited wavetables, or use two-operator FM for electric
piano and bells, or additive partials with per-partial decay for piano. Every voice peaks
near 1 at velocity 1; levels come from the style's mix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from muse_server.backends.synth_dsp import lookup, midi_to_hz, sine


@dataclass(frozen=True, slots=True)
class Note:
    start: int          # absolute sample index of the attack
    voice: str          # a VoiceKit voice name
    pitch: float        # MIDI pitch (drums: tuning)
    length: int         # samples the note is held (percussion: its decay time)
    velocity: float     # 0..1
    variant: int = 0    # picks the noise slice / oscillator phases, so repeated hits differ


# -- envelopes evaluated at arbitrary times (seconds since the note began) ----------------------


def adsr_at(t, gate, attack, decay, sustain, release):
    """Linear attack, exponential decay (time constant ``decay``) towards ``sustain`` while
    the note is held (``gate`` s), then an exponential release reaching -60 dB after
    ``release`` s with a short linear run to exactly zero, so every note ends without a step."""
    attack = max(attack, 5e-4)

    def held(time):
        env = np.minimum(time / attack, 1.0)
        if sustain < 1.0:
            env = env * (sustain + (1.0 - sustain)
                         * np.exp(-np.maximum(time - attack, 0.0) / max(decay, 1e-3)))
        return env

    if t[-1] < gate:                          # a segment inside the held part
        return held(t)

    u = np.clip((t - gate) / release, 0.0, 1.0)
    released = float(held(np.float64(gate))) * np.exp(-6.9 * u) * np.minimum((1.0 - u) * 10.0, 1.0)
    return released if t[0] >= gate else np.where(t < gate, held(t), released)


def decay_at(t, decay, total, attack=1e-3):
    """Linear attack, exponential decay, and a 5 ms fade to zero ending at ``total`` s."""
    return (np.minimum(t / attack, 1.0) * np.exp(-t / decay)
            * np.clip((total - t) / 0.005, 0.0, 1.0))


def bend_phase(freq, t, amount, tau):
    """Phase (cycles) of an oscillator gliding from freq * (1 + amount) down to freq with time
    constant ``tau``: the integral of freq * (1 + amount * exp(-t / tau))."""
    return freq * t + freq * amount * tau * (1.0 - np.exp(-t / tau))


def vibrato_time(t, depth, rate, onset):
    """Time warped by a vibrato of relative ``depth`` at ``rate`` Hz, faded in over ``onset``
    s: an oscillator at ``freq`` has phase ``freq * vibrato_time(t, ...)`` (cycles). Closed
    form, so any segment can be computed on its own; shared by the voices of a unison."""
    fade = np.clip(t / onset, 0.0, 1.0)
    return t + depth * fade * (1.0 - sine(rate * t + 0.25)) / (2.0 * np.pi * rate)


class VoiceKit:
    """Renders note segments for one stream; ``brightness`` in [0, 1] follows the prompt's
    energy (harmonic richness of the tonal voices, hat colour, FM index)."""

    def __init__(self, sample_rate, bank, noise, brightness):
        self.sr = sample_rate
        self.bank = bank
        self.noise = noise
        self.b = float(brightness)
        # voice -> (segment renderer, release or fixed length rule)
        self._voices = {
            'kick': (self.kick, None), 'snare': (self.snare, None), 'clap': (self.clap, 0.35),
            'rim': (self.rim, 0.08), 'hat': (self.hat, None), 'open_hat': (self.hat, None),
            'shaker': (self.shaker, 0.12), 'ride': (self.ride, 1.2), 'crash': (self.crash, 2.5),
            'tom': (self.tom, None), 'vinyl': (self.vinyl, None),
            'sub_bass': (self.sub_bass, None), 'synth_bass': (self.synth_bass, None),
            'upright_bass': (self.upright_bass, None), 'cello': (self.cello, None),
            'pad': (self.pad, None), 'strings': (self.strings, None),
            'lead_strings': (self.strings, None), 'epiano': (self.epiano, None),
            'vibes': (self.vibes, None), 'bell': (self.bell, None), 'piano': (self.piano, None),
            'stab': (self.stab, None), 'pluck': (self.pluck, None), 'lead': (self.lead, None),
        }

    def duration(self, note):
        """Samples from the attack to the end of the release."""
        renderer, fixed = self._voices[note.voice]
        if fixed is not None:
            return int(fixed * self.sr)
        return int(self._seconds(note) * self.sr) + 1

    def render(self, note, offset, n):
        """Samples ``offset`` .. ``offset + n`` of ``note`` (sample 0 = the attack)."""
        t = (offset + np.arange(n, dtype=np.float64)) / self.sr
        return self._voices[note.voice][0](note, t, offset)

    # Length rules: held voices ring for gate + release; percussion for a multiple of its decay.
    _RELEASE = {'sub_bass': 0.15, 'synth_bass': 0.05, 'upright_bass': 0.07, 'pad': 1.2,
                'strings': 0.8, 'lead_strings': 0.8, 'epiano': 0.25, 'vibes': 0.4,
                'bell': 1.5, 'piano': 0.35, 'stab': 0.09, 'pluck': 0.1, 'lead': 0.12}
    _DECAYS = {'kick': 4.0, 'snare': 5.0, 'hat': 5.0, 'open_hat': 5.0, 'tom': 4.0}

    def _seconds(self, note):
        gate = note.length / self.sr
        if note.voice in self._DECAYS:
            return self._decay(note) * self._DECAYS[note.voice]
        if note.voice == 'vinyl':
            return gate + 0.02
        if note.voice == 'cello':
            return gate + (0.12 if self._short(note) else 0.5)
        return gate + self._RELEASE[note.voice]

    def _decay(self, note):
        floor = {'kick': 0.08, 'snare': 0.04, 'tom': 0.08}.get(note.voice, 0.01)
        return max(note.length / self.sr, floor)

    def _short(self, note):
        return note.length < 0.3 * self.sr

    # -- helpers ----------------------------------------------------------------------------

    def _noise(self, colour, note, offset, n):
        table = self.noise[colour]
        start = (note.variant * 7919 + offset) % len(table)
        index = (start + np.arange(n)) % len(table)
        return table[index]

    def _colour(self, bright, dark, note, offset, n):
        """Noise between two colours by the stream's brightness (cymbals and snares sound
        darker when the music is calm)."""
        return self._noise(bright, note, offset, n) * self.b \
            + self._noise(dark, note, offset, n) * (1.0 - self.b)

    def _table(self, shape, brightness, freq):
        return self.bank.table(shape, brightness, freq)

    def _sweep(self, shape, freq, t, bright, dark, decay, phase0=0.0):
        """Bright-to-dark timbre over ``decay`` s (a low-pass filter envelope), as a crossfade
        of two band-limited tables."""
        phase = phase0 + freq * t
        low = lookup(self._table(shape, dark, freq), phase)
        high = lookup(self._table(shape, bright, freq), phase)
        return low + (high - low) * np.exp(-t / decay)

    def _unison(self, shape, brightness, freq, t, cents, variant):
        """Detuned oscillators summed: the chorus of a pad or a string section."""
        detuned = freq * 2.0 ** (np.asarray(cents) / 1200.0)
        phase0 = (variant + 1) * 0.618 * np.arange(1, len(cents) + 1)
        cycles = phase0[:, None] + detuned[:, None] * t[None, :]      # one lookup for all
        return lookup(self._table(shape, brightness, freq), cycles).sum(axis=0) \
            / math.sqrt(len(cents))

    def _gate(self, note):
        return note.length / self.sr

    # -- drums --------------------------------------------------------------------------

    def kick(self, note, t, offset):
        decay = self._decay(note)
        f_end = float(midi_to_hz(note.pitch))
        body = sine(bend_phase(f_end, t, 2.5, 0.035)) \
            * decay_at(t, decay, decay * 4.0, attack=0.0015)
        click = self._noise('white', note, offset, len(t)) * np.exp(-t / 0.003) * 0.25
        return np.tanh(1.6 * (body + click)) / math.tanh(1.6) * note.velocity

    def snare(self, note, t, offset):
        decay = self._decay(note)
        total = decay * 5.0
        body = (sine(185.0 * t) + 0.5 * sine(330.0 * t)) \
            * decay_at(t, 0.05, total) * 0.5
        rattle = self._colour('snare', 'snare_dark', note, offset, len(t)) * decay_at(t, decay, total)
        return (body + rattle) * note.velocity

    def clap(self, note, t, offset):
        env = np.zeros(len(t))
        for delay in (0.0, 0.011, 0.022):     # three hands, slightly apart
            shifted = np.maximum(t - delay, 0.0)
            env += (t >= delay) * np.exp(-shifted / 0.004) * np.minimum(shifted / 5e-4, 1.0)
        env += (t >= 0.022) * np.exp(-np.maximum(t - 0.022, 0.0) / 0.09) * 0.6
        env *= np.clip((0.35 - t) / 0.005, 0.0, 1.0)
        return self._noise('clap', note, offset, len(t)) * env * note.velocity

    def rim(self, note, t, offset):
        tone = sine(1700.0 * t) * 0.6 + sine(820.0 * t)
        return (tone * decay_at(t, 0.012, 0.08, attack=2e-4) * 0.7
                + self._noise('clap', note, offset, len(t)) * decay_at(t, 0.006, 0.08) * 0.4) \
            * note.velocity

    def hat(self, note, t, offset):
        decay = self._decay(note)
        return self._colour('hat', 'hat_dark', note, offset, len(t)) \
            * decay_at(t, decay, decay * 5.0, attack=3e-4) * note.velocity

    def shaker(self, note, t, offset):
        env = np.minimum(t / 0.012, 1.0) * np.exp(-np.maximum(t - 0.012, 0.0) / 0.03) \
            * np.clip((0.12 - t) / 0.005, 0.0, 1.0)
        return self._noise('hat_dark', note, offset, len(t)) * env * note.velocity

    _RIDE_RATIOS = np.array([1.0, 1.47, 1.98, 2.52, 2.97, 3.6, 4.23])

    def ride(self, note, t, offset):
        ratios = self._RIDE_RATIOS
        partials = (1.0 / ratios) @ sine(np.outer(ratios * 510.0, t))
        ping = partials / np.sum(1.0 / ratios) * decay_at(t, 0.35, 1.2, attack=5e-4)
        wash = self._colour('crash', 'snare_dark', note, offset, len(t)) \
            * decay_at(t, 0.45, 1.2, attack=5e-4)
        return (0.6 * ping + 0.45 * wash) * note.velocity

    def crash(self, note, t, offset):
        return self._noise('crash', note, offset, len(t)) * decay_at(t, 0.7, 2.5) * note.velocity

    def tom(self, note, t, offset):
        decay = self._decay(note)
        phase = bend_phase(float(midi_to_hz(note.pitch)), t, 0.35, 0.04)
        body = (sine(phase) + 0.3 * sine(1.51 * phase)) \
            * decay_at(t, decay, decay * 4.0)
        skin = self._noise('snare', note, offset, len(t)) * decay_at(t, 0.02, decay * 4.0) * 0.3
        return np.tanh(1.3 * (body + skin)) * note.velocity

    def vinyl(self, note, t, offset):
        """Surface hiss and crackle for the length of the note, faded in and out over 20 ms so
        that consecutive notes overlap into one unbroken texture (the lo-fi record)."""
        total = self._gate(note) + 0.02
        edge = np.clip(t / 0.02, 0.0, 1.0) * np.clip((total - t) / 0.02, 0.0, 1.0)
        texture = 0.15 * self._noise('hiss', note, offset, len(t)) \
            + 0.6 * self._noise('crackle', note, offset, len(t))
        return texture * edge * note.velocity

    # -- bass -----------------------------------------------------------------------------

    def sub_bass(self, note, t, offset):
        env = adsr_at(t, self._gate(note), 0.02, 0.3, 0.85, 0.15)
        phase = float(midi_to_hz(note.pitch)) * t
        return (sine(phase) + 0.2 * sine(2.0 * phase)) * env * note.velocity / 1.1

    def synth_bass(self, note, t, offset):
        freq = float(midi_to_hz(note.pitch))
        env = adsr_at(t, self._gate(note), 0.003, 0.18, 0.7, 0.05)
        tone = self._sweep('saw', freq, t, 0.35 + 0.55 * self.b, 0.1 * self.b, 0.06 + 0.1 * self.b)
        sub = sine(freq * t)
        return (0.6 * tone + 0.55 * sub) * env * note.velocity

    def upright_bass(self, note, t, offset):
        freq = float(midi_to_hz(note.pitch))
        env = adsr_at(t, self._gate(note), 0.006, 0.55, 0.0, 0.07)
        phase = bend_phase(freq, t, 0.012, 0.03)     # a plucked string settles in pitch
        tone = lookup(self._table('triangle', 0.3 + 0.4 * self.b, freq), phase)
        thump = sine(phase) * np.exp(-t / 0.08)
        return (0.75 * tone + 0.5 * thump) * env * note.velocity

    def cello(self, note, t, offset):
        freq = float(midi_to_hz(note.pitch))
        short = self._short(note)
        env = adsr_at(t, self._gate(note), 0.012 if short else 0.25, 0.15, 0.6 if short else 0.9,
                      0.12 if short else 0.5)
        return self._unison('saw', 0.25 + 0.4 * self.b, freq, t, (-4.0, 5.0), note.variant) \
            * env * note.velocity

    # -- harmony ------------------------------------------------------------------------------

    def pad(self, note, t, offset):
        freq = float(midi_to_hz(note.pitch))
        env = adsr_at(t, self._gate(note), 0.35, 1.5, 0.8, 1.2)
        return self._unison('saw', 0.1 + 0.35 * self.b, freq, t, (-9.0, 0.0, 8.0), note.variant) \
            * env * note.velocity

    def strings(self, note, t, offset):
        freq = float(midi_to_hz(note.pitch))
        env = adsr_at(t, self._gate(note), 0.3, 1.0, 0.85, 0.8)
        warped = vibrato_time(t, 0.004, 5.2, 0.6)
        return self._unison('saw', 0.25 + 0.45 * self.b, freq, warped, (-7.0, -2.0, 3.0, 8.0),
                            note.variant) * env * note.velocity

    def epiano(self, note, t, offset):
        """Two-operator FM electric piano: the modulation index decays, so the bark of the
        attack mellows into a near-sine, as a Rhodes tine does."""
        freq = float(midi_to_hz(note.pitch))
        env = adsr_at(t, self._gate(note), 0.002, 1.2, 0.0, 0.25)
        phase = freq * t
        index = (0.5 + 2.0 * note.velocity * self.b) * np.exp(-t / 0.35) / (2.0 * np.pi)
        tone = sine(phase + index * sine(phase))
        if freq * 7.0 < 0.45 * self.sr:
            tone += 0.12 * note.velocity * sine(7.0 * phase) * np.exp(-t / 0.03)
        return tone * env * note.velocity

    def vibes(self, note, t, offset):
        freq = float(midi_to_hz(note.pitch))
        env = adsr_at(t, self._gate(note), 0.001, 1.4, 0.0, 0.4)
        phase = freq * t
        tone = sine(phase)
        if freq * 4.0 < 0.45 * self.sr:
            tone += 0.25 * sine(4.0 * phase) * np.exp(-t / 0.25)
        tremolo = 0.875 + 0.125 * sine(5.5 * t + 0.25)
        return tone * tremolo * env * note.velocity / 1.2

    def bell(self, note, t, offset):
        freq = float(midi_to_hz(note.pitch))
        env = adsr_at(t, self._gate(note), 0.002, 1.8, 0.0, 1.5)
        carrier = freq * t
        index = 1.6 * np.exp(-t / 0.9) * (0.5 + 0.5 * self.b) / (2.0 * np.pi)
        ratio = 3.5 if freq * 7.0 < 0.45 * self.sr else 1.0
        return sine(carrier + index * sine(ratio * carrier)) * env * note.velocity

    def piano(self, note, t, offset):
        """Struck string: a hammer-shaped spectrum whose upper partials die first (bright
        attack, mellow ring); low notes ring longer."""
        freq = float(midi_to_hz(note.pitch))
        ring = 2.2 * (0.6 + 0.4 * min(max((72.0 - note.pitch) / 24.0, 0.0), 1.0))
        env = adsr_at(t, self._gate(note), 0.002, ring, 0.0, 0.35)
        tone = self._sweep('piano', freq, t, 0.4 + 0.5 * self.b * note.velocity, 0.0, 0.35)
        return tone * env * note.velocity

    def stab(self, note, t, offset):
        freq = float(midi_to_hz(note.pitch))
        env = adsr_at(t, self._gate(note), 0.002, 0.12, 0.35, 0.09)
        tone = self._sweep('saw', freq, t, 0.3 + 0.6 * self.b, 0.08, 0.05 + 0.08 * self.b,
                           phase0=0.37 * note.variant)
        return tone * env * note.velocity

    def pluck(self, note, t, offset):
        freq = float(midi_to_hz(note.pitch))
        env = adsr_at(t, self._gate(note), 0.002, 0.18, 0.0, 0.1)
        tone = self._sweep('square', freq, t, 0.3 + 0.6 * self.b, 0.05, 0.04 + 0.08 * self.b)
        return tone * env * note.velocity

    def lead(self, note, t, offset):
        freq = float(midi_to_hz(note.pitch))
        env = adsr_at(t, self._gate(note), 0.012, 0.3, 0.7, 0.12)
        bright = 0.3 + 0.5 * self.b
        warped = vibrato_time(t, 0.005, 5.8, 0.45)
        square = lookup(self._table('square', bright, freq), freq * warped)
        saw = lookup(self._table('saw', bright, freq), 0.25 + freq * 1.004 * warped)
        return (square + 0.5 * saw) / 1.4 * env * note.velocity
