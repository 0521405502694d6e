"""The ``synth`` backend's composer: turns a style preset, a key, a tempo and an energy into
notes, one bar at a time, forever.

Form: 8-bar sections. Each section draws a chord progression from the style, a rhythm for
the chord stabs, an arpeggio order and a melodic motif (kept or varied from the previous
section), and is either ``full`` or a ``break`` (drums and bass thinned out for its first
four bars, a build back in); every fourth bar ends in a drum fill and every section opens
with a crash. So the music keeps the style's groove while phrases, fills and variation
arrive every few bars.

Energy in [0, 1] drives density (how many optional notes play), dynamics (velocities and
accents), and drum intensity (hats from off-beats to sixteenths, shakers, fills, four-on-
the-floor in pop); brightness is the VoiceKit's.

All randomness comes from one generator, consumed in bar order only, so the notes depend
on the seed and never on how the audio is cut into fragments.

Time: the stream owns the timeline and hands each bar its start sample and its tempo at the
bar's start and end (a tempo ramp changes the beat length linearly within the bar), so a
retargeted stream can glide to a new tempo, energy or style without a new piece.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from muse_server.backends.synth_theory import voice_chord

BEATS_PER_BAR = 4
BARS_PER_SECTION = 8

# Chord-stab rhythms (beats within the bar); a section picks one.
STAB_RHYTHMS = ((0.75, 2.75), (0.5, 1.75, 2.5), (0.75, 1.5, 2.75, 3.5), (1.5, 3.5),
                (0.5, 1.5, 2.5, 3.5), (0.25, 1.75, 3.0))
POP_RHYTHMS = ((0.0, 0.75, 1.5, 2.5, 3.0), (0.0, 1.0, 1.5, 2.5, 3.5), (0.0, 0.75, 1.5, 2.25, 3.0, 3.5),
               (0.5, 1.0, 2.0, 2.5, 3.5))
# Jazz comping rhythms in swung eighths (3.5 anticipates the next bar's chord).
COMP_RHYTHMS = ((0.0, 1.5), (1.5, 3.5), (0.5, 2.5), (0.0, 2.5), (1.0, 3.5), (0.0, 1.5, 3.5))
ARP_ORDERS = ((0, 1, 2, 3, 4, 5), (0, 1, 2, 3, 2, 1), (0, 2, 1, 3, 2, 4, 3, 5), (5, 4, 3, 2, 1, 0),
              (0, 3, 1, 4, 2, 5), (0, 1, 2, 0, 1, 2, 3, 4))
BOOM_BAP_KICKS = ((1.75,), (2.5,), (1.75, 2.5), (2.25,), (2.75,), (1.5, 2.75))
PENTATONIC = {'major': (0, 1, 2, 4, 5), 'minor': (0, 2, 3, 4, 6)}
CYMBALS = frozenset({'hat', 'open_hat', 'shaker', 'ride', 'crash'})


@dataclass(frozen=True, slots=True)
class Note:
    start: int          # absolute sample index of the attack
    voice: str          # a voice of the style's mix (synth_styles.Part)
    pitch: float        # MIDI pitch (drums: ignored unless the part is melodic, e.g. timpani)
    length: int         # samples the note is held
    velocity: float     # 0..1


@dataclass
class Section:
    index: int
    progression: tuple
    kind: str               # 'full' or 'break'
    stab_rhythm: tuple
    arp_order: tuple
    arp_mask: tuple         # which sixteenths of the bar the arpeggio plays
    motif: tuple            # ((slot, length_slots, degree_offset), ...)
    kick_extra: tuple       # boom-bap's second kick(s)
    hat_mask: tuple         # off-beat sixteenths the closed hat plays (same every bar)


class Composer:
    """Plans the notes of bar after bar for one stream."""

    def __init__(self, preset, key, energy, bpm, sample_rate, rng):
        self.preset = preset
        self.key = key
        self.energy = float(energy)
        self.bpm = float(bpm)
        self.sr = sample_rate
        self.rng = rng
        self.samples_per_beat = 60.0 / bpm * sample_rate
        self._origin = 0              # start sample of the bar being planned
        self._spb = (self.samples_per_beat, self.samples_per_beat)  # its beat length, start/end
        self.force_fill = False       # the next bar ends in a fill (a transition's drum fill)
        self._section = None
        self._voicing = None          # the last chord voicing, for voice leading
        self._bass_pitch = None       # the walking bass's last note
        self._phrase_on = False       # the bebop line plays in this bar pair
        self._line_pitch = 74
        self._notes = []

    def retune(self, energy, bpm):
        """Play on at another energy and tempo from the next planned bar (same section,
        progression, key and motif: the same piece)."""
        self.energy = float(energy)
        self.bpm = float(bpm)
        self.samples_per_beat = 60.0 / self.bpm * self.sr

    def continue_from(self, other):
        """Take over the harmonic state of ``other`` (a composer of the style playing before):
        its key (as this style's mode, relative major/minor) and its voicing, so a style
        change hands the harmony over instead of starting in a new key."""
        self.key = other.key.relative(self.preset.mode)
        self._voicing = other._voicing

    # -- building blocks ------------------------------------------------------------------

    def _chance(self, p):
        return self.rng.random() < p

    def _at(self, bar, beat, swing=True, humanize=True):
        """Absolute sample of ``beat`` (beats from the bar's start), swung and humanised."""
        if swing and self.preset.swing != 0.5:
            unit = self.preset.swing_unit
            whole, frac = divmod(beat, unit)
            u = frac / unit
            s = self.preset.swing
            u = u * 2.0 * s if u <= 0.5 else s + (u - 0.5) * 2.0 * (1.0 - s)
            beat = (whole + u) * unit
        jitter = self.rng.normal(0.0, self.preset.humanize_s) * self.sr \
            if humanize and self.preset.humanize_s > 0 else 0.0
        start, end = self._spb
        offset = start * beat + (end - start) * beat * beat / (2 * BEATS_PER_BAR)
        return max(int(round(self._origin + offset + jitter)), 0)

    def _play(self, voice, bar, beat, beats, pitch, velocity, swing=True, humanize=True):
        if voice not in self.preset.mix:
            raise KeyError(f'style {self.preset.name!r} has no mix entry for voice {voice!r}')
        self._notes.append(Note(self._at(bar, beat, swing, humanize), voice, float(pitch),
                                max(int(beats * sum(self._spb) / 2), 1),
                                float(min(max(velocity, 0.0), 1.0))))

    def _hit(self, voice, bar, beat, velocity, decay_s=0.0, pitch=0.0, swing=True, humanize=True):
        """A drum hit; ``decay_s`` is the decay time (seconds, not beats). Cymbals are played
        harder as the energy rises (a calm drummer rides softly), which also brightens the mix."""
        if voice in CYMBALS:
            velocity *= 0.4 + 0.6 * self.energy
        self._play(voice, bar, beat, decay_s * self.bpm / 60.0, pitch, velocity, swing, humanize)

    def _dyn(self, base):
        """Velocity scaled by energy (dynamics) with a little human variation."""
        return base * (0.62 + 0.38 * self.energy) * (1.0 + 0.06 * self.rng.standard_normal())

    def _chord_degree(self, section, bar_in_section, beat=0.0):
        per_chord = self.preset.bars_per_chord
        index = int((bar_in_section + beat / BEATS_PER_BAR) / per_chord)
        return section.progression[index % len(section.progression)]

    def _chord_span(self, section, bar_in_section):
        """Bars until the chord changes (within the section): how long a pad may hold."""
        degree = self._chord_degree(section, bar_in_section)
        span = 1
        while bar_in_section + span < BARS_PER_SECTION and \
                self._chord_degree(section, bar_in_section + span) == degree:
            span += 1
        return span

    def _chord(self, degree, size=None):
        return self.key.chord(degree, size or self.preset.chord_size,
                              raised_dominant=self.preset.raised_dominant)

    @staticmethod
    def _place(pitch_class, low):
        """The pitch of ``pitch_class`` in the octave [low, low + 12)."""
        return low + (pitch_class - low) % 12

    @staticmethod
    def _nearest(pitch_class, previous, low, high):
        """The pitch of ``pitch_class`` nearest ``previous`` inside [low, high]."""
        options = [p for p in range(low, high + 1) if p % 12 == pitch_class]
        return min(options, key=lambda p: abs(p - previous))

    # -- form ---------------------------------------------------------------------------------

    def _new_section(self, index):
        p, e, rng = self.preset, self.energy, self.rng
        previous = self._section
        choices = [prog for prog in p.progressions if previous is None or prog != previous.progression]
        progression = choices[rng.integers(len(choices))] if index else p.progressions[0]
        breaks_allowed = index > 0 and (previous is None or previous.kind != 'break')
        kind = 'break' if breaks_allowed and self._chance(0.1 + 0.3 * (1.0 - e)) else 'full'
        keep_motif = previous is not None and self._chance(0.5)
        motif = previous.motif if keep_motif else self._make_motif()
        if keep_motif:                          # vary it: move one note
            motif = list(motif)
            i = int(rng.integers(len(motif)))
            slot, length, offset = motif[i]
            motif[i] = (slot, length, int(np.clip(offset + rng.choice((-2, -1, 1, 2)), -2, 9)))
            motif = tuple(motif)
        density = 0.35 + 0.6 * e
        mask = tuple(bool(step % 4 == 0 or self._chance(density)) for step in range(16))
        rhythms = POP_RHYTHMS if p.harmony == 'pluck_chords' else STAB_RHYTHMS
        hat_density = min(max((e - 0.35) * 2.2, 0.0), 1.0)
        hat_mask = tuple(step % 2 == 1 and self._chance(hat_density) for step in range(16))
        return Section(index=index, progression=progression, kind=kind,
                       stab_rhythm=rhythms[rng.integers(len(rhythms))],
                       arp_order=ARP_ORDERS[rng.integers(len(ARP_ORDERS))], arp_mask=mask,
                       motif=motif, kick_extra=BOOM_BAP_KICKS[rng.integers(len(BOOM_BAP_KICKS))],
                       hat_mask=hat_mask)

    def _make_motif(self):
        """A two-bar melodic cell: onsets on a grid of slots, offsets in scale degrees above
        the chord root, moving mostly by step and starting on a chord tone."""
        lead = self.preset.lead
        slots = 8 if lead == 'theme' else 16           # quarter notes or eighth notes
        count = {'theme': 3 + round(2 * self.energy), 'sparse_melody': 2 + round(3 * self.energy)}\
            .get(lead, 4 + round(4 * self.energy))
        onsets = np.sort(self.rng.choice(slots, size=min(count, slots), replace=False))
        if 0 not in onsets and self._chance(0.6):
            onsets[0] = 0
            onsets = np.unique(onsets)
        ends = np.append(onsets[1:], slots)
        offset = int(self.rng.choice((0, 2, 4)))
        motif = []
        for slot, end in zip(onsets, ends):
            motif.append((int(slot), int(min(end - slot, 4)), offset))
            step = int(self.rng.choice((-2, -1, -1, 1, 1, 2, 3)))
            offset = int(np.clip(offset + step, -2, 9))
        return tuple(motif)

    # -- the bar ------------------------------------------------------------------------------

    def plan_bar(self, bar, origin, samples_per_beat):
        """The notes of bar ``bar`` (bars are planned strictly in order), which starts at
        sample ``origin`` with beats ``samples_per_beat`` = (at its start, at its end) long."""
        self._origin, self._spb = origin, samples_per_beat
        bar_in_section = bar % BARS_PER_SECTION
        if bar_in_section == 0 or self._section is None:
            self._section = self._new_section(bar // BARS_PER_SECTION)
        section = self._section
        self._notes = []
        full = not (section.kind == 'break' and bar_in_section < 4)
        # A transition's last bar is drummed as a section's last bar: its fill or roll.
        drum_bar = BARS_PER_SECTION - 1 if self.force_fill else bar_in_section
        getattr(self, '_drums_' + self.preset.drums)(bar, drum_bar, section, full)
        getattr(self, '_bass_' + self.preset.bass)(bar, bar_in_section, section, full)
        getattr(self, '_harmony_' + self.preset.harmony)(bar, bar_in_section, section, full)
        getattr(self, '_lead_' + self.preset.lead)(bar, bar_in_section, section, full)
        return self._notes

    # -- drums --------------------------------------------------------------------------------

    def _fill(self, bar, bar_in_section, voice='snare', pitches=None):
        """A sixteenth-note fill into the next bar: the last beat after bars 4, the last two
        after the section's eighth bar when the energy is up."""
        e = max(self.energy, 0.6) if self.force_fill else self.energy
        if bar_in_section % 4 != 3 or e < 0.3:
            return
        beats = 2.0 if bar_in_section == BARS_PER_SECTION - 1 and e > 0.55 else 1.0
        steps = int(beats * 4)
        for i in range(steps):
            if i % 2 and not self._chance(0.4 + 0.6 * e):
                continue
            velocity = self._dyn(0.45 + 0.5 * (i + 1) / steps)
            if pitches:
                self._hit(voice, bar, 4.0 - beats + i * 0.25, velocity, 0.25,
                          pitch=pitches[min(i * len(pitches) // steps, len(pitches) - 1)])
            else:
                self._hit(voice, bar, 4.0 - beats + i * 0.25, velocity, 0.12)

    def _sixteenth_hats(self, bar, section, level=1.0):
        """Closed hats on the section's pattern of off-beat sixteenths (denser with energy,
        the same every bar of the section, as a programmed groove is)."""
        for step, on in enumerate(section.hat_mask):
            if on:
                self._hit('hat', bar, step / 4.0, self._dyn(level * (0.5 if step % 4 == 3 else 0.38)),
                          0.012)

    def _crash(self, bar, bar_in_section, velocity=0.75):
        if bar_in_section == 0:
            self._hit('crash', bar, 0.0, self._dyn(velocity))

    def _drums_four_floor(self, bar, bar_in_section, section, full):
        e = self.energy
        if full:
            self._crash(bar, bar_in_section)
        # a break keeps a soft kick: with only the off-beat hats left, the beat was heard (and
        # tracked by bench_transitions) on the off-beats, half a beat off
        for beat in range(4):
            self._hit('kick', bar, beat, 0.95 if full else 0.5, 0.32, pitch=31)
        if e > 0.25 and (full or bar_in_section >= 2):
            for beat in (1, 3):
                self._hit('clap', bar, beat, self._dyn(0.85))
                if e > 0.6:
                    self._hit('snare', bar, beat, self._dyn(0.5), 0.1)
        if e > 0.15:
            for beat in range(4):
                self._hit('open_hat', bar, beat + 0.5, self._dyn(0.75), 0.05 + 0.05 * e)
        self._sixteenth_hats(bar, section)
        if e > 0.6:
            for step in range(16):
                if self._chance((e - 0.6) * 2.5):
                    self._hit('shaker', bar, step / 4.0, self._dyn(0.3 + 0.3 * (step % 2 == 0)))
        if full or bar_in_section == 3:
            self._fill(bar, bar_in_section)

    def _drums_boom_bap(self, bar, bar_in_section, section, full):
        e = self.energy
        if full and e > 0.5:
            self._crash(bar, bar_in_section, 0.45)
        self._hit('kick', bar, 0.0, self._dyn(1.0), 0.22, pitch=32)
        if full:
            for beat in section.kick_extra[:1 if e < 0.3 else None]:
                self._hit('kick', bar, beat, self._dyn(0.85), 0.2, pitch=32)
            if self._chance(0.3 * e):
                self._hit('kick', bar, 3.5, self._dyn(0.7), 0.18, pitch=32)
        backbeat = 'snare' if e >= 0.25 else 'rim'
        for beat in (1, 3):
            self._hit(backbeat, bar, beat, self._dyn(0.9), 0.14)
        if self._chance(0.35 * e):
            self._hit('snare', bar, 2.75, self._dyn(0.25), 0.06)
        if full or bar_in_section >= 2:
            step = 0.5 if e >= 0.3 else 1.0          # calm: quarter notes; else swung eighths
            for i in range(int(BEATS_PER_BAR / step)):
                self._hit('hat', bar, i * step, self._dyn(0.6 if i * step % 1 == 0 else 0.4), 0.02)
            self._sixteenth_hats(bar, section, 0.5)
            if bar % 2 == 1 and self._chance(0.4):
                self._hit('open_hat', bar, 3.5, self._dyn(0.5), 0.12)
        self._hit('vinyl', bar, 0.0, self._dyn(0.8), BEATS_PER_BAR * 60.0 / self.bpm, swing=False)
        if bar_in_section == BARS_PER_SECTION - 1 and e > 0.3:
            self._hit('snare', bar, 3.5, self._dyn(0.45), 0.08)
            self._hit('snare', bar, 3.75, self._dyn(0.65), 0.1)

    def _drums_pop(self, bar, bar_in_section, section, full):
        e = self.energy
        if full:
            self._crash(bar, bar_in_section)
            kicks = (0, 1, 2, 3) if e > 0.75 else (0, 2, 1.5) if e > 0.4 else (0, 2)
            for beat in kicks:
                self._hit('kick', bar, beat, 0.95 if beat in (0, 2) else 0.8, 0.28, pitch=33)
            if e <= 0.75 and self._chance(0.3):
                self._hit('kick', bar, 2.75, 0.7, 0.25, pitch=33)
            for beat in (1, 3):
                self._hit('snare', bar, beat, self._dyn(0.9), 0.16)
                if e > 0.45:
                    self._hit('clap', bar, beat, self._dyn(0.7))
        else:
            for beat in (1, 3):
                self._hit('clap', bar, beat, self._dyn(0.55))
        for eighth in range(8):
            self._hit('hat', bar, eighth / 2.0, self._dyn(0.55 if eighth % 2 == 0 else 0.4), 0.018)
        self._sixteenth_hats(bar, section, 0.6)
        if e > 0.5:
            for step in range(16):
                self._hit('shaker', bar, step / 4.0, self._dyn(0.25 + 0.25 * (step % 2 == 1)))
        if bar % 2 == 1:
            self._hit('open_hat', bar, 3.5, self._dyn(0.55), 0.1)
        if full:
            tonic_tom = self._place(self.key.tonic, 43)
            self._fill(bar, bar_in_section, 'tom', pitches=(tonic_tom + 7, tonic_tom + 3, tonic_tom))

    def _drums_jazz(self, bar, bar_in_section, section, full):
        e = self.energy
        for beat in range(4):                     # quarter-note ride; the skip beats join as
            self._hit('ride', bar, beat, self._dyn(0.75 if beat % 2 else 0.6))   # it heats up
            if (beat % 2 == 1 and e > 0.35) or (e > 0.7 and self._chance(0.5)):
                self._hit('ride', bar, beat + 0.5, self._dyn(0.45))
        for beat in (1, 3):
            self._hit('hat', bar, beat, self._dyn(0.6), 0.02)
        if not full:
            return
        if e > 0.3:
            for beat in range(4):
                self._hit('kick', bar, beat, self._dyn(0.3), 0.15, pitch=33)
        for eighth in range(8):
            if self._chance(0.35 * e * e):
                self._hit('snare', bar, eighth / 2.0, self._dyn(0.25 + 0.25 * self.rng.random()), 0.06)
        if self._chance(0.15 * e):
            self._hit('kick', bar, float(self.rng.integers(0, 8)) / 2.0, self._dyn(0.6), 0.2, pitch=33)
        if bar_in_section == BARS_PER_SECTION - 1 and e > 0.35:
            for i in range(3):                    # a triplet into the next section
                self._hit('snare', bar, 3.0 + i / 3.0, self._dyn(0.4 + 0.15 * i), 0.08, swing=False)

    def _drums_cinematic(self, bar, bar_in_section, section, full):
        e = self.energy
        low = self._place(self.key.tonic, 36)
        if bar_in_section == 0:
            self._hit('tom', bar, 0.0, self._dyn(1.0), 0.7, pitch=low)
            self._hit('crash', bar, 0.0, self._dyn(0.5))
        if e >= 0.35 and full:
            if bar_in_section:
                self._hit('tom', bar, 0.0, self._dyn(0.95), 0.45, pitch=low)
            self._hit('tom', bar, 2.0, self._dyn(0.75), 0.4, pitch=low)
            if e > 0.6:
                for beat, accent in ((0.5, 0.5), (1.5, 0.7), (2.75, 0.55), (3.0, 0.8), (3.5, 0.65)):
                    self._hit('tom', bar, beat, self._dyn(accent), 0.3, pitch=low + 7)
            if e > 0.7:
                for beat in (1, 3):
                    self._hit('snare', bar, beat, self._dyn(0.7), 0.2)
        if bar_in_section == BARS_PER_SECTION - 1:   # timpani roll into the next section
            steps = 8 if e < 0.6 else 16
            for i in range(steps):
                self._hit('tom', bar, 2.0 + 2.0 * i / steps, self._dyn(0.3 + 0.6 * i / steps),
                          0.25, pitch=low, swing=False)

    def _drums_pulse(self, bar, bar_in_section, section, full):
        """Ambient: no kit, but a soft low pulse (a heartbeat) on every beat, louder on 1 and
        3 and with the energy, keeps the tempo in the body, in breaks too: without it an
        ambient passage has no beat to hold on to (beat_track missed its tempo, and the beat
        gap across changes into and out of ambient was 25-36 % off in bench_transitions)."""
        e = self.energy
        level = (0.35 + 0.35 * min(e / 0.6, 1.0)) * (1.0 if full else 0.7)
        for beat in range(4):
            self._hit('kick', bar, beat, self._dyn(level if beat % 2 == 0 else 0.7 * level),
                      0.35, pitch=29, humanize=False)   # a pulse is a clock, not a player
        if e >= 0.7:
            for eighth in range(8):
                self._hit('shaker', bar, eighth / 2.0, self._dyn(0.4 if eighth % 2 else 0.25))

    # -- bass ---------------------------------------------------------------------------------

    def _bass_rolling(self, bar, bar_in_section, section, full):
        e = self.energy
        root = self._place(self._chord(self._chord_degree(section, bar_in_section))[0], 33)
        if not full:
            self._play('synth_bass', bar, 0.0, 2.0, root, self._dyn(0.6))
            return
        steps = (0.5,) if e < 0.4 else (0.5, 0.75) if e < 0.75 else (0.25, 0.5, 0.75)
        for beat in range(4):
            for step in steps:
                pitch = root + 12 if step == 0.75 and e > 0.6 and self._chance(0.3) else root
                self._play('synth_bass', bar, beat + step, 0.2, pitch,
                           self._dyn(0.9 if step == 0.5 else 0.7))

    def _bass_pop(self, bar, bar_in_section, section, full):
        e = self.energy
        degree = self._chord_degree(section, bar_in_section)
        root = self._place(self._chord(degree)[0], 36)
        if not full:
            self._play('synth_bass', bar, 0.0, 3.5, root, self._dyn(0.6))
            return
        if e < 0.35:
            for beat in range(4):
                self._play('synth_bass', bar, beat, 0.9, root, self._dyn(0.85))
            return
        next_degree = self._chord_degree(section, bar_in_section + 1)
        for eighth in range(8):
            pitch = root
            if eighth % 2 == 1 and self._chance((e - 0.5) * 2.0):
                pitch = root + 12
            if eighth == 7 and next_degree != degree and self._chance(0.5):
                passing = self.key.pitch(next_degree - 1, near=48) % 12    # step up into it
                pitch = self._nearest(passing, root, 31, 50)
            self._play('synth_bass', bar, eighth / 2.0, 0.45, pitch,
                       self._dyn(0.9 if eighth % 2 == 0 else 0.75))

    def _bass_lofi(self, bar, bar_in_section, section, full):
        e = self.energy
        degree = self._chord_degree(section, bar_in_section)
        chord = self._chord(degree)
        root = self._place(chord[0], 33)
        self._play('upright_bass', bar, 0.0, 1.25, root, self._dyn(0.9))
        if not full:
            return
        if self._chance(0.2 + 0.7 * e):
            self._play('upright_bass', bar, 1.5, 0.5, self._nearest(chord[2], root + 7, 31, 52),
                       self._dyn(0.65))
        self._play('upright_bass', bar, 2.5, 1.0, root if self._chance(0.6) else root + 12,
                   self._dyn(0.75))
        if self._chance(0.2 + 0.7 * e):
            next_root = self._chord(self._chord_degree(section, bar_in_section + 1))[0]
            approach = (next_root + (1 if self._chance(0.5) else -1)) % 12
            self._play('upright_bass', bar, 3.5, 0.5, self._nearest(approach, root, 31, 52),
                       self._dyn(0.6))

    def _bass_walking(self, bar, bar_in_section, section, full):
        e = self.energy
        chord = self._chord(self._chord_degree(section, bar_in_section), 4)
        previous = self._bass_pitch or self._place(chord[0], 36)
        root = self._nearest(chord[0], previous, 31, 50)
        if e < 0.35 or not full:                  # a two-feel: half notes
            self._play('upright_bass', bar, 0.0, 1.8, root, self._dyn(0.85))
            self._play('upright_bass', bar, 2.0, 1.8, self._nearest(chord[2], root, 31, 52),
                       self._dyn(0.75))
            self._bass_pitch = root
            return
        next_root = self._chord(self._chord_degree(section, bar_in_section + 1))[0]
        line = [root,
                self._nearest(chord[int(self.rng.choice((1, 2)))], root + 3, 31, 55),
                None, None]
        line[2] = self._nearest(chord[int(self.rng.choice((2, 3)))], line[1], 31, 55)
        target = self._nearest(next_root, line[2], 31, 50)
        line[3] = target + (1 if self._chance(0.5) else -1)    # chromatic approach
        for beat, pitch in enumerate(line):
            self._play('upright_bass', bar, beat, 0.9, pitch, self._dyn(0.85 if beat % 2 == 0 else 0.75),
                       swing=False)
        if e > 0.7 and self._chance(0.25):                  # a skip note into beat 4
            self._play('upright_bass', bar, 2.66, 0.3, line[2] + 2, self._dyn(0.5), swing=False)
        self._bass_pitch = line[3]

    def _bass_drone(self, bar, bar_in_section, section, full):
        if bar_in_section % max(int(self.preset.bars_per_chord), 1):
            return
        degree = self._chord_degree(section, bar_in_section)
        beats = self.preset.bars_per_chord * BEATS_PER_BAR
        self._play('sub_bass', bar, 0.0, beats, self._place(self._chord(degree)[0], 33),
                   self._dyn(0.75), humanize=False)

    def _bass_ostinato(self, bar, bar_in_section, section, full):
        e = self.energy
        root = self._place(self._chord(self._chord_degree(section, bar_in_section))[0], 38)
        if e >= 0.35 and full:
            pattern = (0, 0, 12, 0, 0, 7, 12, 7) if section.index % 2 else (0, 0, 0, 0, 0, 0, 12, 0)
            for eighth, interval in enumerate(pattern):
                self._play('cello', bar, eighth / 2.0, 0.35, root + interval,
                           self._dyn(0.85 if eighth % 2 == 0 else 0.6))
            if e > 0.5:
                self._play('sub_bass', bar, 0.0, 3.8, root - 12, self._dyn(0.6))
        else:
            self._play('cello', bar, 0.0, 3.9, root, self._dyn(0.7))

    # -- harmony ------------------------------------------------------------------------------

    def _voice(self, degree, low, high, size=None, rootless=False):
        pcs = self._chord(degree, size)
        if rootless:
            pcs = pcs[1:]
        self._voicing = voice_chord(pcs, self._voicing, low, high)
        return self._voicing

    def _pad_chord(self, voice, bar, bar_in_section, section, low, high, velocity, size=None):
        """A sustained chord for as long as the chord lasts (re-voiced for smooth leading)."""
        degree = self._chord_degree(section, bar_in_section)
        if bar_in_section and self._chord_degree(section, bar_in_section - 1) == degree:
            return None
        pitches = self._voice(degree, low, high, size)
        beats = self._chord_span(section, bar_in_section) * BEATS_PER_BAR
        for pitch in pitches:
            self._play(voice, bar, 0.0, beats, pitch, velocity, humanize=False)
        return pitches

    def _harmony_pad_stabs(self, bar, bar_in_section, section, full):
        e = self.energy
        self._pad_chord('pad', bar, bar_in_section, section, 53, 72, self._dyn(0.6))
        if e <= 0.3:
            return
        degree = self._chord_degree(section, bar_in_section)
        stab = voice_chord(self._chord(degree, 3), None, 60, 76)
        for beat in section.stab_rhythm:
            if self._chance(0.4 + 0.6 * e):
                for pitch in stab:
                    self._play('stab', bar, beat, 0.2, pitch, self._dyn(0.8))

    def _harmony_epiano_comp(self, bar, bar_in_section, section, full):
        e = self.energy
        degree = self._chord_degree(section, bar_in_section)
        pitches = self._voice(degree, 50, 70)
        strum = 0.018 * self.bpm / 60.0                 # 18 ms between fingers, in beats
        for i, pitch in enumerate(pitches):
            self._play('epiano', bar, i * strum, 2.4, pitch, self._dyn(0.7))
        if self._chance(0.2 + 0.7 * e):
            for i, pitch in enumerate(pitches):
                self._play('epiano', bar, 2.5 + i * strum * 0.5, 1.2, pitch, self._dyn(0.5))

    def _harmony_pad_swell(self, bar, bar_in_section, section, full):
        e = self.energy
        pitches = self._pad_chord('pad', bar, bar_in_section, section, 52, 76, self._dyn(0.75))
        if e > 0.3 and bar_in_section % 2 == 0:
            pitches = pitches or self._voicing
            arpeggio = sorted(pitches) + [min(pitches) + 12]
            for i, pitch in enumerate(arpeggio):
                if self._chance(0.4 + 0.5 * e):
                    self._play('piano', bar, i * 0.5, 2.0, pitch, self._dyn(0.55))

    def _harmony_pluck_chords(self, bar, bar_in_section, section, full):
        e = self.energy
        self._pad_chord('pad', bar, bar_in_section, section, 55, 72, self._dyn(0.5))
        degree = self._chord_degree(section, bar_in_section)
        stab = voice_chord(self._chord(degree, 3), None, 60, 77)
        for beat in section.stab_rhythm:
            if beat == 0.0 or self._chance(0.35 + 0.65 * e):
                for pitch in stab:
                    self._play('stab', bar, beat, 0.35, pitch, self._dyn(0.8))

    def _harmony_strings(self, bar, bar_in_section, section, full):
        e = self.energy
        pitches = self._pad_chord('strings', bar, bar_in_section, section, 50, 69, self._dyn(0.7))
        if pitches and e > 0.5:
            self._play('strings', bar, 0.0, self._chord_span(section, bar_in_section) * BEATS_PER_BAR,
                       max(pitches) + 12, self._dyn(0.5), humanize=False)
        if e >= 0.45 and full:
            degree = self._chord_degree(section, bar_in_section)
            tones = voice_chord(self._chord(degree, 3), None, 57, 72)
            arpeggio = tones + [tones[0] + 12] + tones[1:][::-1]
            for eighth in range(8):
                self._play('piano', bar, eighth / 2.0, 0.45, arpeggio[eighth % len(arpeggio)],
                           self._dyn(0.6 if eighth % 2 == 0 else 0.45))

    def _harmony_rootless_comp(self, bar, bar_in_section, section, full):
        e = self.energy
        rhythm = COMP_RHYTHMS[int(self.rng.integers(len(COMP_RHYTHMS)))]
        for beat in rhythm:
            if beat and not self._chance(0.25 + 0.75 * e):
                continue
            anticipation = beat >= 3.5
            degree = self._chord_degree(section, bar_in_section + (1 if anticipation else 0))
            pitches = self._voice(degree, 52, 72, rootless=True)
            length = 0.6 if anticipation else float(self.rng.choice((0.6, 1.0, 1.4)))
            for pitch in pitches:
                self._play('epiano', bar, beat, length, pitch, self._dyn(0.65))

    # -- lead ---------------------------------------------------------------------------------

    def _arpeggio(self, voice, bar, bar_in_section, section, low, high, step_beats, velocity):
        degree = self._chord_degree(section, bar_in_section)
        tones = voice_chord(self._chord(degree, 3), None, low, low + 11)
        pool = [p for p in tones + [t + 12 for t in tones] if p <= high]
        steps = int(BEATS_PER_BAR / step_beats)
        for step in range(steps):
            if not section.arp_mask[(step * 16 // steps) % 16]:
                continue
            pitch = pool[section.arp_order[step % len(section.arp_order)] % len(pool)]
            accent = 1.0 if step % (steps // 4) == 0 else 0.8
            self._play(voice, bar, step * step_beats, step_beats * 0.5, pitch,
                       self._dyn(velocity * accent))

    def _lead_arp(self, bar, bar_in_section, section, full):
        if self.energy > 0.2:
            self._arpeggio('pluck', bar, bar_in_section, section, 67, 86, 0.25, 0.75)

    def _motif(self, voice, bar, bar_in_section, section, near, slot_beats, velocity, resolve=False):
        """Play this bar's half of the section's two-bar motif on the current chord."""
        half = bar_in_section % 2
        slots_per_bar = int(BEATS_PER_BAR / slot_beats)
        degree = self._chord_degree(section, bar_in_section)
        resolve = resolve and half == 1
        for slot, length, offset in section.motif:
            beat = (slot % slots_per_bar) * slot_beats
            if slot // slots_per_bar != half or (resolve and beat >= 3.0):
                continue
            pitch = self.key.pitch(degree + offset, near=near)
            pitch += 12 * ((pitch < near - 10) - (pitch > near + 14))   # keep it in register
            self._play(voice, bar, beat, length * slot_beats * 0.9, pitch, self._dyn(velocity))
        if resolve:                                 # end the phrase home, on the tonic
            self._play(voice, bar, 3.0, 1.0, self.key.pitch(0, near=near + 5), self._dyn(velocity))

    def _lead_hook(self, bar, bar_in_section, section, full):
        e = self.energy
        if e >= 0.3 or bar_in_section >= 4:
            resolve = bar_in_section == BARS_PER_SECTION - 1
            self._motif('lead', bar, bar_in_section, section, 72, 0.5, 0.75, resolve)
        if e > 0.7:
            self._arpeggio('pluck', bar, bar_in_section, section, 72, 88, 0.5, 0.6)

    def _lead_sparse_melody(self, bar, bar_in_section, section, full):
        if self._chance(0.15 + 0.75 * self.energy):
            self._motif('bell', bar, bar_in_section, section, 79, 0.5, 0.5)

    def _lead_bells(self, bar, bar_in_section, section, full):
        e = self.energy
        scale = PENTATONIC[self.key.mode]
        for beat in range(4):
            if self._chance(0.15 + 0.35 * e):
                degree = int(self.rng.choice(scale)) + 7 * int(self.rng.integers(0, 2))
                self._play('bell', bar, beat + 0.5 * self.rng.integers(0, 2), 2.0,
                           self.key.pitch(degree, near=74), self._dyn(0.5))

    def _lead_theme(self, bar, bar_in_section, section, full):
        e = self.energy
        if e >= 0.4 or bar_in_section >= 4:
            self._motif('lead_strings', bar, bar_in_section, section, 74, 1.0, 0.7)
        elif self._chance(0.5):
            degree = self._chord_degree(section, bar_in_section)
            self._play('bell', bar, float(self.rng.integers(0, 4)), 2.0,
                       self.key.pitch(degree + int(self.rng.choice((0, 2, 4))), near=84),
                       self._dyn(0.45))

    def _lead_bebop(self, bar, bar_in_section, section, full):
        """Swung eighth-note lines over the changes: chord tones on the beats, scale steps
        between, a phrase on some bar pairs and space on others."""
        e = self.energy
        if bar_in_section % 2 == 0:
            self._phrase_on = self._chance(0.15 + 0.75 * e)
            self._line_pitch = self.key.pitch(self._chord_degree(section, bar_in_section) + 4, near=74)
        if not self._phrase_on:
            return
        degree = self._chord_degree(section, bar_in_section)
        chord = self._chord(degree, 4)
        start = int(self.rng.integers(0, 4)) if bar_in_section % 2 == 0 else 0
        stop = 8 if bar_in_section % 2 == 0 else int(self.rng.integers(4, 9))
        scale = self.key.pitch_classes()
        pitch = self._line_pitch
        for eighth in range(start, stop):
            if eighth % 2 == 0:                     # on the beat: land on a chord tone
                pitch = min((p for p in range(pitch - 4, pitch + 5) if p % 12 in chord),
                            key=lambda p: abs(p - pitch))
            else:
                direction = 1 if self.rng.random() < 0.5 else -1
                pitch = next(p for p in range(pitch + direction, pitch + 13 * direction, direction)
                             if p % 12 in scale)
            pitch = int(np.clip(pitch, 62, 86))
            self._play('vibes', bar, eighth / 2.0, 0.45, pitch,
                       self._dyn(0.65 if eighth % 2 else 0.5))
        self._line_pitch = pitch
