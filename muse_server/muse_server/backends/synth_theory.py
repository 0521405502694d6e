"""Music theory for the ``synth`` backend: keys, diatonic chords, voice leading, and key
signature estimation from audio (so a new prompt's music can stay in the key family of what
the listener just heard)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PITCH_CLASS_NAMES = ('C', 'C#', 'D', 'Eb', 'E', 'F', 'F#', 'G', 'Ab', 'A', 'Bb', 'B')

MODES = {
    'major': (0, 2, 4, 5, 7, 9, 11),
    'minor': (0, 2, 3, 5, 7, 8, 10),
}

@dataclass(frozen=True)
class Key:
    tonic: int          # pitch class, 0 = C
    mode: str           # 'major' or 'minor'

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f'unknown mode {self.mode!r}; expected one of {sorted(MODES)}')
        if not 0 <= self.tonic < 12:
            raise ValueError(f'tonic must be a pitch class 0..11, got {self.tonic!r}')

    @property
    def name(self):
        return f'{PITCH_CLASS_NAMES[self.tonic]} {self.mode}'

    def semitones(self, degree):
        """Semitones above the tonic of scale ``degree`` (0-based, any integer: 7 is the
        octave, -1 the leading note below)."""
        octave, step = divmod(degree, 7)
        return 12 * octave + MODES[self.mode][step]

    def pitch(self, degree, near):
        """MIDI pitch of scale ``degree`` in the octave whose tonic lies nearest below ``near``."""
        base = near - ((near - self.tonic) % 12)
        return base + self.semitones(degree)

    def pitch_classes(self):
        return {(self.tonic + s) % 12 for s in MODES[self.mode]}

    def chord(self, root_degree, size=3, raised_dominant=False):
        """Pitch classes of the diatonic chord on ``root_degree``, stacked in thirds (3: triad,
        4: seventh, 5: ninth), root first. ``raised_dominant`` gives the minor key's fifth
        degree its major third (harmonic minor), the cadence film and jazz harmony expect."""
        pcs = []
        for i in range(size):
            semis = self.semitones(root_degree + 2 * i)
            if raised_dominant and self.mode == 'minor' and (root_degree + 2 * i) % 7 == 6 \
                    and root_degree % 7 == 4:
                semis += 1
            pcs.append((self.tonic + semis) % 12)
        return tuple(pcs)

    def relative(self, mode):
        """The key with the same notes (key signature) in ``mode``: C major <-> A minor."""
        if mode == self.mode:
            return self
        shift = -3 if mode == 'minor' else 3
        return Key((self.tonic + shift) % 12, mode)


def voice_chord(pitch_classes, previous, low, high):
    """MIDI pitches for ``pitch_classes`` (root first) inside [low, high], choosing the
    inversion nearest to the ``previous`` voicing (smooth voice leading) or, without one,
    the one centred in the range."""
    pcs = list(pitch_classes)
    candidates = []
    for inversion in range(len(pcs)):
        order = pcs[inversion:] + pcs[:inversion]
        for start in range(low, low + 12):
            if start % 12 != order[0]:
                continue
            notes = [start]
            for pc in order[1:]:
                notes.append(notes[-1] + ((pc - notes[-1]) % 12 or 12))
            if notes[-1] <= high:
                candidates.append(notes)
    if not candidates:                      # range narrower than the chord: close position
        root = low + ((pcs[0] - low) % 12)
        return [root + ((pc - pcs[0]) % 12) for pc in pcs]
    if previous:
        centre = float(np.mean(previous))
        prev = sorted(previous)

        def distance(notes):
            if len(notes) == len(prev):
                return sum(abs(a - b) for a, b in zip(sorted(notes), prev))
            return abs(float(np.mean(notes)) - centre) * len(notes)
    else:
        centre = (low + high) / 2.0

        def distance(notes):
            return abs(float(np.mean(notes)) - centre)
    return min(candidates, key=distance)


def tuning_offset(pitch, key, reach=2.0):
    """Semitones (within +-``reach``) that bring a fixed-pitch sound at MIDI ``pitch`` (may be
    fractional) onto ``key``: the nearest note of its tonic triad within reach, else the
    nearest scale note (always within one semitone)."""
    def nearest(pitch_classes):
        return min(((pc - pitch + 6.0) % 12.0 - 6.0 for pc in pitch_classes), key=abs)
    triad = nearest(key.chord(0))
    return triad if abs(triad) <= reach else nearest(key.pitch_classes())


def chroma(audio, sample_rate, fmin=80.0, fmax=2000.0):
    """12-bin pitch-class energy profile of mono ``audio`` (C first), from 8192-sample Hann
    frames; each spectral bin is shared between its two nearest pitch classes."""
    audio = np.asarray(audio, dtype=np.float64)
    frame = 8192
    if audio.size < frame:
        audio = np.pad(audio, (0, frame - audio.size))
    hop = frame // 2
    starts = range(0, audio.size - frame + 1, hop)
    window = np.hanning(frame)
    power = np.zeros(frame // 2 + 1)
    for start in starts:
        power += np.abs(np.fft.rfft(audio[start:start + frame] * window)) ** 2
    freqs = np.fft.rfftfreq(frame, 1.0 / sample_rate)
    band = (freqs >= fmin) & (freqs <= fmax)
    midi = 69.0 + 12.0 * np.log2(freqs[band] / 440.0)
    magnitude = np.sqrt(power[band])
    lower = np.floor(midi)
    upper_weight = midi - lower
    profile = np.zeros(12)
    np.add.at(profile, lower.astype(int) % 12, magnitude * (1.0 - upper_weight))
    np.add.at(profile, (lower.astype(int) + 1) % 12, magnitude * upper_weight)
    return profile


def estimate_key(audio, sample_rate):
    """The key signature of mono ``audio``: the diatonic set of seven pitch classes that
    holds the most chroma energy, returned as its major key (use ``Key.relative`` for the
    minor one) with that set's share of the chroma energy (7/12 = 0.58 for noise, 1 for
    purely diatonic music; NaN for silence).

    A key signature, not a tonic, is what a new piece needs in order to share the notes of
    the old one, and it is far easier to hear: in a few seconds of music the tonic is often
    ambiguous (a V chord sounds like a new I) while the set of notes played is not. When a
    degree never sounds in the excerpt, the two neighbouring signatures fit it equally; either
    is free of clashes with what was heard.
    """
    profile = chroma(audio, sample_rate)
    total = float(profile.sum())
    if total <= 0.0:
        return Key(0, 'major'), math.nan
    major = np.array(MODES['major'])
    energy = [float(profile[(tonic + major) % 12].sum()) for tonic in range(12)]
    tonic = int(np.argmax(energy))
    return Key(tonic, 'major'), energy[tonic] / total
