"""Style presets from YAML: users add their own without code; bad files are refused with the
file and the key named."""

import textwrap

import pytest

from muse_prompt.presets import (PresetError, SENTENCE_SLOTS, UnknownStyleError,
                                 builtin_presets_path, load_library)
from muse_prompt.template import render
from muse_common.activities import ACTIVITY_NAMES

SHARED_NAMES = ('chill_techno', 'lofi_hiphop', 'ambient', 'upbeat_pop', 'cinematic', 'jazz')
WALKING = ACTIVITY_NAMES.index('walking')


def write(tmp_path, text, name='my_presets.yaml'):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_builtin_file_is_the_installed_share_copy():
    path = builtin_presets_path()
    assert path.parts[-4:] == ('share', 'muse_prompt', 'config', 'presets.yaml')
    assert path.is_file()


def test_every_builtin_style_is_one_the_synth_backend_knows():
    # The prompt builder and the server's synth backend name styles independently (the server
    # installs without ROS); a style the synth does not know would silently fall back to its
    # keyword match. Exact names only: no alias, no keyword fallback.
    from muse_server.backends.synth_styles import STYLES
    unknown = [name for name in load_library().names if name not in STYLES]
    assert not unknown, f'presets.yaml names styles the synth backend lacks: {unknown}; ' \
                        f'it knows {list(STYLES)}'


def test_builtin_presets_are_complete():
    library = load_library()
    assert library.names == SHARED_NAMES
    for name in SHARED_NAMES:
        preset = library.get(name)
        assert set(preset.energy) == set(ACTIVITY_NAMES)
        assert all(0.0 <= e <= 1.0 for e in preset.energy.values())
        assert tuple(preset.templates) == SENTENCE_SLOTS
        low, high = preset.tempo_range_bpm
        assert low <= high


def test_a_user_preset_extends_a_builtin_and_overrides_only_what_differs(tmp_path):
    path = write(tmp_path, """\
        presets:
          dark_techno:
            extends: chill_techno
            genre: Dark techno
            mood: brooding and hypnotic
            energy: {walking: 0.9}
            tempo_range_bpm: [120, 135]
            templates:
              transition: Blend in from the last track.
    """)
    library = load_library(path)
    assert library.names == SHARED_NAMES + ('dark_techno',)
    dark, base = library.get('dark_techno'), library.get('chill_techno')
    assert dark.source == str(path)
    assert dark.energy['walking'] == 0.9 and dark.energy['sitting'] == base.energy['sitting']
    assert dark.templates['activity'] == base.templates['activity']
    text = render(dark, WALKING, 100.0).text
    assert text == ('Dark techno music. Mood: brooding and hypnotic. Current activity: Walking. '
                    'Heart rate is 100 bpm. Tempo: 120 BPM, intense energy. Compose music that '
                    'reflects the listeners style and physiological state. Blend in from the '
                    'last track.')


def test_a_user_preset_may_replace_a_builtin_and_extend_its_old_self(tmp_path):
    path = write(tmp_path, """\
        presets:
          jazz:
            extends: jazz
            mood: late-night and smoky
          bebop:
            extends: jazz
            genre: Bebop
    """)
    library = load_library(path)
    assert library.names == SHARED_NAMES + ('bebop',)
    assert library.get('jazz').mood == 'late-night and smoky'
    assert library.get('jazz').genre == 'Smooth jazz'
    assert library.get('bebop').mood == 'late-night and smoky'  # the same file's jazz


def test_a_standalone_user_preset(tmp_path):
    energy = '\n'.join(f'              {a}: 0.5' for a in ACTIVITY_NAMES)
    templates = '\n'.join(f"              {s}: ''" for s in SENTENCE_SLOTS
                          if s not in ('style', 'tempo'))
    path = write(tmp_path, f"""\
        presets:
          minimal:
            genre: Minimal
            tempo_range_bpm: [100, 100]
            energy:
{energy}
            templates:
              style: '{{genre}}, {{target_bpm}} bpm'
              tempo: ''
{templates}
    """)
    preset = load_library(path).get('minimal')
    assert render(preset, WALKING, 150.0).text == 'Minimal, 100 bpm'


def test_unknown_style_names_the_known_ones():
    with pytest.raises(UnknownStyleError, match="unknown style preset 'polka'.*'chill_techno'"):
        load_library().get('polka')


# Each bad file: (YAML body, key path named in the error, words of the problem).
BAD_FILES = {
    'unknown key': ("""\
        presets:
          mine: {extends: jazz, tempo: 120}
     """, 'presets.mine.tempo', 'unknown key'),
    'wrong type': ("""\
        presets:
          mine: {extends: jazz, instrumentation: piano}
     """, 'presets.mine.instrumentation', 'expected a list of strings'),
    'bool as string': ("""\
        presets:
          mine: {extends: jazz, include_physiology: 'no'}
     """, 'presets.mine.include_physiology', 'expected true or false'),
    'missing required key': ("""\
        presets:
          mine: {genre: Polka, tempo_range_bpm: [100, 120], templates: {}}
     """, 'presets.mine.energy', 'missing required key'),
    'energy above 1': ("""\
        presets:
          mine: {extends: jazz, energy: {walking: 1.5}}
     """, 'presets.mine.energy.walking', 'expected a number in [0, 1]'),
    'energy below 0': ("""\
        presets:
          mine: {extends: jazz, energy: {sitting: -0.1}}
     """, 'presets.mine.energy.sitting', 'expected a number in [0, 1]'),
    'energy not a number': ("""\
        presets:
          mine: {extends: jazz, energy: {sitting: high}}
     """, 'presets.mine.energy.sitting', 'expected a number in [0, 1]'),
    'unknown activity': ("""\
        presets:
          mine: {extends: jazz, energy: {jogging: 0.5}}
     """, 'presets.mine.energy.jogging', 'unknown activity'),
    'incomplete energy': ("""\
        presets:
          mine:
            genre: Polka
            tempo_range_bpm: [100, 120]
            templates: {}
            energy: {walking: 0.5}
     """, 'presets.mine.energy', 'missing energy for activities'),
    'tempo range reversed': ("""\
        presets:
          mine: {extends: jazz, tempo_range_bpm: [140, 90]}
     """, 'presets.mine.tempo_range_bpm', 'low <= high'),
    'unknown sentence slot': ("""\
        presets:
          mine: {extends: jazz, templates: {outro: Fade out.}}
     """, 'presets.mine.templates.outro', 'unknown sentence slot'),
    'unknown placeholder': ("""\
        presets:
          mine: {extends: jazz, templates: {activity: 'Now {activty}.'}}
     """, 'presets.mine.templates.activity', 'unknown placeholder {activty}'),
    'format spec': ("""\
        presets:
          mine: {extends: jazz, templates: {tempo: '{target_bpm:.1f} BPM'}}
     """, 'presets.mine.templates.tempo', 'takes no format spec'),
    'malformed template': ("""\
        presets:
          mine: {extends: jazz, templates: {tempo: 'Tempo {target_bpm'}}
     """, 'presets.mine.templates.tempo', 'malformed template'),
    'unknown base': ("""\
        presets:
          mine: {extends: polka}
     """, 'presets.mine.extends', "unknown preset 'polka'"),
    'circular extends': ("""\
        presets:
          a: {extends: b}
          b: {extends: a}
     """, 'presets.b.extends', 'circular extends: a -> b -> a'),
    'duplicate key': ("""\
        presets:
          mine:
            extends: jazz
            mood: calm
            mood: wild
     """, '', "duplicate key 'mood'"),
    'not YAML': ("""\
        presets:
          mine: {extends: jazz
     """, '', 'not valid YAML'),
    'no presets key': ("""\
        styles:
          mine: {extends: jazz}
     """, 'styles', 'unknown top-level key'),
    'empty file': ('', '', 'expected a mapping'),
    'empty presets': ('presets: {}\n', 'presets', 'non-empty mapping'),
    'preset not a mapping': ("""\
        presets:
          mine: jazz
     """, 'presets.mine', 'expected a mapping of preset keys'),
}


@pytest.mark.parametrize('case', list(BAD_FILES))
def test_a_bad_presets_file_is_refused_naming_file_and_key(tmp_path, case):
    body, key, problem = BAD_FILES[case]
    path = write(tmp_path, body)
    with pytest.raises(PresetError) as caught:
        load_library(path)
    message = str(caught.value)
    assert str(path) in message
    assert caught.value.key == key
    if key:
        assert f': {key}:' in message
    assert problem in message


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(PresetError, match='no_such.yaml.*does not exist'):
        load_library(tmp_path / 'no_such.yaml')
