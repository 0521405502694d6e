"""The ``synth`` backend's style presets (the same names muse_prompt's presets use, see
docs/INTERFACES.md "Style presets") and how a prompt picks one.

A preset is data: key and harmony, which pattern family each part plays, the voices'
mix, and the room. The patterns themselves live in ``synth_compose``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import MappingProxyType

DEFAULT_STYLE = 'chill_techno'


@dataclass(frozen=True)
class Mix:
    """Where a voice goes: its level on the dry bus and its effect sends (linear gains)."""

    gain: float
    reverb: float = 0.0
    echo: float = 0.0
    ducked: bool = False     # pumped by the kick (side-chain), the dance-music glue


@dataclass(frozen=True)
class StylePreset:
    name: str
    keywords: tuple          # lower-case words or phrases that name this style in a prompt
    mode: str                # 'major' or 'minor'
    tonics: tuple            # pitch classes a fresh stream may start in
    progressions: tuple      # chord roots as scale degrees, one chord per `bars_per_chord`
    chord_size: int          # 3 triads, 4 sevenths, 5 ninths
    bars_per_chord: float    # 0.5: two chords a bar; 2: one chord every two bars
    swing: float             # where the off-beat falls in its pair (0.5 straight, 0.66 triplet)
    swing_unit: float        # beats per swung pair: 1.0 swings 8ths, 0.5 swings 16ths
    humanize_s: float        # random timing spread of each note (s, standard deviation)
    drums: str              # pattern family in synth_compose ('' = none)
    bass: str
    harmony: str
    lead: str
    mix: MappingProxyType = field(repr=False)
    reverb_s: float = 1.6    # RT60 of the room [s]
    reverb_damping: float = 0.5
    echo_beats: float = 0.75  # echo time in beats (0.75 = dotted eighth)
    echo_feedback: float = 0.35
    duck_depth: float = 0.0
    brightness: tuple = (0.3, 0.9)  # voice brightness at energy 0 and 1
    raised_dominant: bool = False
    # Gain [dB] that brings this style's mix to the loudness target at energy 0, 0.5, 1;
    # measured by synth.measure_style_levels() and checked by the tests.
    level_db: tuple = (0.0, 0.0, 0.0)


def _mix(**voices):
    return MappingProxyType({name: Mix(*spec) if isinstance(spec, tuple) else spec
                             for name, spec in voices.items()})


STYLES = MappingProxyType({preset.name: preset for preset in (
    StylePreset(
        name='chill_techno',
        keywords=('techno', 'electronic', 'house', 'edm', 'club', 'minimal', 'trance',
                  'dance', 'synth', 'synthesizer', 'electro'),
        mode='minor', tonics=(9, 2, 5, 7, 0, 4),
        progressions=((0, 5, 2, 6), (0, 3, 0, 4), (0, 0, 5, 6), (0, 5, 3, 4), (0, 6, 5, 6)),
        chord_size=3, bars_per_chord=1, swing=0.5, swing_unit=0.5, humanize_s=0.0,
        drums='four_floor', bass='rolling', harmony='pad_stabs', lead='arp',
        mix=_mix(kick=(1.3,), clap=(2.8, 0.25), snare=(1.2, 0.2), hat=(3.3, 0.05),
                 open_hat=(1.5, 0.1), shaker=(0.9, 0.1), crash=(1.5, 0.3),
                 synth_bass=(0.95, 0.0, 0.0, True), pad=(0.06, 0.5, 0.0, True),
                 stab=(0.16, 0.35, 0.2, True), pluck=(0.13, 0.3, 0.25, True)),
        reverb_s=2.2, echo_beats=0.75, echo_feedback=0.35, duck_depth=0.55,
        brightness=(0.25, 0.85), level_db=(-18.36, -16.48, -13.58)),
    StylePreset(
        name='lofi_hiphop',
        keywords=('lofi', 'lo-fi', 'lo fi', 'hip hop', 'hiphop', 'hip-hop', 'boom bap',
                  'boom-bap', 'chillhop', 'rhodes', 'vinyl', 'beats to', 'study', 'mellow'),
        mode='major', tonics=(5, 0, 7, 2, 10, 3),
        progressions=((0, 5, 1, 4), (3, 2, 1, 0), (1, 4, 0, 5), (3, 4, 2, 5), (0, 3, 1, 4)),
        chord_size=4, bars_per_chord=1, swing=0.6, swing_unit=0.5, humanize_s=0.008,
        drums='boom_bap', bass='lofi', harmony='epiano_comp', lead='sparse_melody',
        mix=_mix(kick=(1.0,), snare=(1.5, 0.15), rim=(0.9, 0.1), hat=(2.1, 0.03),
                 open_hat=(1.2, 0.05), crash=(1.2, 0.2), vinyl=(0.6,), upright_bass=(0.9,),
                 epiano=(0.22, 0.3, 0.05), bell=(0.24, 0.4, 0.2)),
        reverb_s=1.4, reverb_damping=0.8, echo_beats=1.5, echo_feedback=0.3,
        brightness=(0.15, 0.7), level_db=(-9.53, -8.84, -7.0)),
    StylePreset(
        name='ambient',
        keywords=('ambient', 'drone', 'meditat', 'atmospher', 'sleep', 'peaceful',
                  'serene', 'ethereal', 'spacious', 'soundscape', 'airy'),
        mode='major', tonics=(4, 9, 2, 7, 11, 5),
        progressions=((0, 3, 5, 4), (0, 5, 3, 0), (3, 0, 4, 5), (0, 2, 3, 0)),
        chord_size=4, bars_per_chord=2, swing=0.5, swing_unit=1.0, humanize_s=0.01,
        drums='pulse', bass='drone', harmony='pad_swell', lead='bells',
        mix=_mix(kick=(0.9, 0.2), shaker=(2.2, 0.3), sub_bass=(1.1, 0.1),
                 pad=(0.39, 0.9), piano=(0.5, 0.8, 0.2), bell=(0.13, 0.9, 0.35)),
        reverb_s=5.0, reverb_damping=0.4, echo_beats=1.5, echo_feedback=0.5,
        brightness=(0.2, 0.7), level_db=(-18.85, -17.28, -15.16)),
    StylePreset(
        name='upbeat_pop',
        keywords=('pop', 'upbeat', 'happy', 'cheerful', 'catchy', 'bright', 'sunny',
                  'feel-good', 'feel good', 'radio'),
        mode='major', tonics=(0, 7, 2, 9, 5, 4),
        progressions=((0, 4, 5, 3), (5, 3, 0, 4), (0, 5, 3, 4), (3, 4, 0, 5), (0, 3, 4, 4)),
        chord_size=3, bars_per_chord=1, swing=0.5, swing_unit=0.5, humanize_s=0.0,
        drums='pop', bass='pop', harmony='pluck_chords', lead='hook',
        mix=_mix(kick=(1.6,), snare=(2.4, 0.2), clap=(4.2, 0.2), hat=(2.9, 0.05),
                 open_hat=(2.5, 0.08), shaker=(1.2, 0.05), tom=(0.8, 0.2),
                 crash=(1.6, 0.25), synth_bass=(1.25, 0.0, 0.0, True),
                 pad=(0.12, 0.4, 0.0, True), stab=(0.5, 0.25, 0.15, True),
                 lead=(0.95, 0.3, 0.25), pluck=(0.26, 0.25, 0.3)),
        reverb_s=1.5, echo_beats=0.75, echo_feedback=0.3, duck_depth=0.3,
        brightness=(0.4, 1.0), level_db=(-18.4, -17.47, -15.17)),
    StylePreset(
        name='cinematic',
        keywords=('cinematic', 'orchestral', 'orchestra', 'epic', 'film', 'score',
                  'soundtrack', 'strings', 'dramatic', 'trailer', 'heroic', 'timpani'),
        mode='minor', tonics=(2, 9, 0, 7, 4),
        progressions=((0, 5, 2, 6), (0, 3, 5, 4), (5, 3, 0, 4), (0, 6, 5, 4), (0, 3, 6, 2)),
        chord_size=3, bars_per_chord=1, swing=0.5, swing_unit=1.0, humanize_s=0.006,
        drums='cinematic', bass='ostinato', harmony='strings', lead='theme',
        mix=_mix(tom=(0.67, 0.45), crash=(0.8, 0.5), snare=(1.7, 0.4), cello=(0.73, 0.35),
                 sub_bass=(0.63, 0.1), strings=(0.24, 0.6), piano=(0.7, 0.45),
                 lead_strings=(0.39, 0.6), bell=(0.15, 0.7)),
        reverb_s=3.2, reverb_damping=0.5, echo_beats=1.0, echo_feedback=0.2,
        brightness=(0.25, 0.8), raised_dominant=True, level_db=(-15.69, -14.56, -13.48)),
    StylePreset(
        name='jazz',
        keywords=('jazz', 'swing', 'bebop', 'bossa', 'saxophone', 'sax', 'walking bass',
                  'upright bass', 'brushed', 'piano trio', 'combo', 'lounge'),
        mode='major', tonics=(5, 10, 3, 0, 7),
        progressions=((1, 4, 0, 0), (0, 5, 1, 4), (2, 5, 1, 4), (3, 6, 2, 5), (1, 4, 2, 5)),
        chord_size=5, bars_per_chord=1, swing=0.64, swing_unit=1.0, humanize_s=0.007,
        drums='jazz', bass='walking', harmony='rootless_comp', lead='bebop',
        mix=_mix(ride=(0.45, 0.15), hat=(0.5, 0.05), kick=(0.18,), snare=(0.38, 0.15),
                 upright_bass=(0.46, 0.05), epiano=(0.15, 0.25), vibes=(0.26, 0.3, 0.1)),
        reverb_s=1.6, reverb_damping=0.6, echo_beats=1.0, echo_feedback=0.2,
        brightness=(0.2, 0.7), raised_dominant=True, level_db=(-3.57, -5.05, -3.38)),
)})

_KEYWORD_PATTERNS = {
    name: [re.compile(r'(?<![a-z])' + re.escape(word)) for word in preset.keywords]
    for name, preset in STYLES.items()
}


def normalise_style_name(style):
    """'Lo-fi Hip Hop' -> 'lo_fi_hip_hop', 'chill techno' -> 'chill_techno'."""
    return re.sub(r'[^a-z0-9]+', '_', style.strip().lower()).strip('_')


_ALIASES = {'lo_fi_hip_hop': 'lofi_hiphop', 'lofi_hip_hop': 'lofi_hiphop', 'lofi': 'lofi_hiphop',
            'lo_fi': 'lofi_hiphop', 'pop': 'upbeat_pop', 'techno': 'chill_techno',
            'orchestral': 'cinematic'}


def keyword_scores(text):
    """How many of each style's keywords occur in ``text`` (case-insensitive)."""
    text = text.lower()
    return {name: sum(1 for pattern in patterns if pattern.search(text))
            for name, patterns in _KEYWORD_PATTERNS.items()}


def resolve_style(style, text=''):
    """The preset for a prompt: ``style`` when it names one (spelling, case and separators
    are forgiven), else the style whose keywords occur most often in ``style`` and ``text``
    (ties go to the order of STYLES), else ``chill_techno``."""
    name = normalise_style_name(style or '')
    name = _ALIASES.get(name, name)
    if name in STYLES:
        return STYLES[name]
    scores = keyword_scores(f'{style or ""} {text or ""}')
    best = max(STYLES, key=lambda n: scores[n])    # max keeps the first of equal scores
    return STYLES[best] if scores[best] > 0 else STYLES[DEFAULT_STYLE]
