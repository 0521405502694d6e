"""The ``synth`` backend's style presets (the same names muse_prompt's presets use, see
docs/INTERFACES.md "Style presets") and how a prompt picks one.

A preset is data: key and harmony, which pattern family each part plays, which General MIDI
instrument plays each voice (rendered by FluidSynth from a GM SoundFont), and the room. The
patterns themselves live in ``synth_compose``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import MappingProxyType

DEFAULT_STYLE = 'chill_techno'


@dataclass(frozen=True)
class Part:
    """The General MIDI instrument that plays a voice: a melodic ``program`` (0-127), or, with
    ``drum`` set, that key (GM percussion map, 35-81) of the style's drum kit; its level
    (``gain``, 0-1, the channel volume) and reverb send (0-1)."""

    program: int = 0
    gain: float = 0.8
    reverb: float = 0.2
    drum: int | None = None


def drum(key, gain=0.8, reverb=0.1):
    return Part(0, gain, reverb, key)


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
    mix: MappingProxyType = field(repr=False)   # voice -> Part
    drum_kit: int = 0        # GM drum kit (bank 128 preset): 0 standard, 8 room, 16 power,
                             # 24 electronic, 25 TR-808, 32 jazz, 40 brush, 48 orchestra
    room: tuple = (0.5, 0.4, 0.6)   # FluidSynth reverb (room size, damping, level)
    raised_dominant: bool = False
    kick_pitch: float | None = None   # MIDI pitch of the drum kit's kick fundamental, measured
                             # on the SoundFont: the kit is pitch-bent to the key (a kick a
                             # tritone off the key made the key signature unreadable); None:
                             # the kit plays untuned


def _mix(**voices):
    return MappingProxyType({name: Part(*spec) if isinstance(spec, tuple) else spec
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
        mix=_mix(kick=drum(36, 1.0, 0.0), clap=drum(39, 0.75, 0.3), snare=drum(40, 0.6, 0.2),
                 hat=drum(42, 0.6), open_hat=drum(46, 0.5), shaker=drum(70, 0.4),
                 crash=drum(49, 0.55, 0.3), synth_bass=(39, 0.85, 0.0), pad=(90, 0.45, 0.5),
                 stab=(81, 0.45, 0.4), pluck=(84, 0.45, 0.4)),
        drum_kit=24, room=(0.7, 0.4, 0.5), kick_pitch=36.89),   # kit 24 key 36: 68.8 Hz
    StylePreset(
        name='lofi_hiphop',
        keywords=('lofi', 'lo-fi', 'lo fi', 'hip hop', 'hiphop', 'hip-hop', 'boom bap',
                  'boom-bap', 'chillhop', 'rhodes', 'vinyl', 'beats to', 'study', 'mellow'),
        mode='major', tonics=(5, 0, 7, 2, 10, 3),
        progressions=((0, 5, 1, 4), (3, 2, 1, 0), (1, 4, 0, 5), (3, 4, 2, 5), (0, 3, 1, 4)),
        chord_size=4, bars_per_chord=1, swing=0.6, swing_unit=0.5, humanize_s=0.008,
        drums='boom_bap', bass='lofi', harmony='epiano_comp', lead='sparse_melody',
        mix=_mix(kick=drum(36, 0.95, 0.0), snare=drum(38, 0.8, 0.15), rim=drum(37, 0.7, 0.1),
                 hat=drum(42, 0.55, 0.05), open_hat=drum(46, 0.45, 0.05),
                 crash=drum(57, 0.4, 0.2), vinyl=(122, 0.12, 0.0), upright_bass=(32, 0.85, 0.05),
                 epiano=(4, 0.6, 0.3), bell=(10, 0.45, 0.4)),
        drum_kit=8, room=(0.4, 0.8, 0.4)),
    StylePreset(
        name='ambient',
        keywords=('ambient', 'drone', 'meditat', 'atmospher', 'sleep', 'peaceful',
                  'serene', 'ethereal', 'spacious', 'soundscape', 'airy'),
        mode='major', tonics=(4, 9, 2, 7, 11, 5),
        progressions=((0, 3, 5, 4), (0, 5, 3, 0), (3, 0, 4, 5), (0, 2, 3, 0)),
        chord_size=4, bars_per_chord=2, swing=0.5, swing_unit=1.0, humanize_s=0.01,
        drums='pulse', bass='drone', harmony='pad_swell', lead='bells',
        mix=_mix(kick=drum(35, 0.6, 0.3), shaker=drum(70, 0.35, 0.4), sub_bass=(38, 0.6, 0.1),
                 pad=(89, 0.7, 0.8), piano=(0, 0.55, 0.8), bell=(14, 0.4, 0.9)),
        drum_kit=0, room=(0.95, 0.3, 0.9)),
    StylePreset(
        name='upbeat_pop',
        keywords=('pop', 'upbeat', 'happy', 'cheerful', 'catchy', 'bright', 'sunny',
                  'feel-good', 'feel good', 'radio'),
        mode='major', tonics=(0, 7, 2, 9, 5, 4),
        progressions=((0, 4, 5, 3), (5, 3, 0, 4), (0, 5, 3, 4), (3, 4, 0, 5), (0, 3, 4, 4)),
        chord_size=3, bars_per_chord=1, swing=0.5, swing_unit=0.5, humanize_s=0.0,
        drums='pop', bass='pop', harmony='pluck_chords', lead='hook',
        mix=_mix(kick=drum(36, 1.0, 0.05), snare=drum(38, 0.85, 0.2), clap=drum(39, 0.6, 0.2),
                 hat=drum(42, 0.55, 0.05), open_hat=drum(46, 0.5, 0.1), shaker=drum(82, 0.45, 0.05),
                 tom=drum(45, 0.7, 0.2), crash=drum(49, 0.55, 0.25), synth_bass=(33, 0.85, 0.0),
                 pad=(1, 0.35, 0.3), stab=(27, 0.6, 0.25), lead=(80, 0.5, 0.25),
                 pluck=(46, 0.45, 0.3)),
        drum_kit=16, room=(0.5, 0.5, 0.4)),
    StylePreset(
        name='cinematic',
        keywords=('cinematic', 'orchestral', 'orchestra', 'epic', 'film', 'score',
                  'soundtrack', 'strings', 'dramatic', 'trailer', 'heroic', 'timpani'),
        mode='minor', tonics=(2, 9, 0, 7, 4),
        progressions=((0, 5, 2, 6), (0, 3, 5, 4), (5, 3, 0, 4), (0, 6, 5, 4), (0, 3, 6, 2)),
        chord_size=3, bars_per_chord=1, swing=0.5, swing_unit=1.0, humanize_s=0.006,
        drums='cinematic', bass='ostinato', harmony='strings', lead='theme',
        mix=_mix(tom=(47, 0.85, 0.5), crash=drum(49, 0.5, 0.5), snare=drum(38, 0.6, 0.4),
                 cello=(42, 0.75, 0.4), sub_bass=(43, 0.6, 0.3), strings=(48, 0.7, 0.6),
                 piano=(0, 0.55, 0.45), lead_strings=(40, 0.7, 0.6), bell=(9, 0.4, 0.7)),
        drum_kit=48, room=(0.85, 0.5, 0.7), raised_dominant=True),
    StylePreset(
        name='jazz',
        keywords=('jazz', 'swing', 'bebop', 'bossa', 'saxophone', 'sax', 'walking bass',
                  'upright bass', 'brushed', 'piano trio', 'combo', 'lounge'),
        mode='major', tonics=(5, 10, 3, 0, 7),
        progressions=((1, 4, 0, 0), (0, 5, 1, 4), (2, 5, 1, 4), (3, 6, 2, 5), (1, 4, 2, 5)),
        chord_size=5, bars_per_chord=1, swing=0.64, swing_unit=1.0, humanize_s=0.007,
        drums='jazz', bass='walking', harmony='rootless_comp', lead='bebop',
        mix=_mix(ride=drum(51, 0.6, 0.15), hat=drum(44, 0.5, 0.05), kick=drum(35, 0.45, 0.0),
                 snare=drum(38, 0.4, 0.15), upright_bass=(32, 0.9, 0.05), epiano=(0, 0.6, 0.25),
                 vibes=(11, 0.6, 0.3)),
        drum_kit=40, room=(0.5, 0.6, 0.4), raised_dominant=True),
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
