"""Prompt text: exact wording per preset, rounding, unknown values, the length budget."""

import math

import pytest

from muse_prompt.presets import load_library
from muse_prompt.template import (DEFAULT_MAX_PROMPT_CHARS, TRIM_ORDER, bound_text, energy_word,
                                  render, round_heart_rate)
from muse_common.activities import ACTIVITY_NAMES
from muse_common.profile import Profile

WORKING = ACTIVITY_NAMES.index('working')
WALKING = ACTIVITY_NAMES.index('walking')
# The seed's listener, with sensor noise on every number.
LISTENER = Profile(age=34, sex='m', height_cm=182.3, weight_kg=77.9)
HEART_RATE = 64.4

SEED_BODY = 'The listener is 34 years old, 182 cm tall, and weighs 78.0 kg. Heart rate is 65 bpm.'
SEED_INTENT = 'Compose music that reflects the listeners style and physiological state.'
SEED_TRANSITION = ('The track should begin with a seamless lead-in, evolving naturally from '
                   'previous activity and ending naturally for the next activity.')

# Working at desk, heart rate 65 -> 88 + 0.4 * (65 - 75) = 84 BPM (within every preset's range
# except upbeat_pop, whose range starts at 95).
EXPECTED_TEXT = {
    'chill_techno': (
        'Chill techno music. Current activity: Working at Desk. ' + SEED_BODY +
        ' Tempo: 84 BPM, calm energy. ' + SEED_INTENT + ' ' + SEED_TRANSITION),
    'lofi_hiphop': (
        'Lo-fi hip hop music. Mood: mellow, warm and nostalgic. Instrumentation: dusty boom-bap '
        'drums, warm Rhodes piano, soft bass and vinyl crackle. Current activity: Working at '
        'Desk. ' + SEED_BODY + ' Tempo: 84 BPM, calm energy. ' + SEED_INTENT + ' ' +
        SEED_TRANSITION),
    'ambient': (
        'Ambient music. Mood: spacious, calm and airy. Instrumentation: evolving synth pads, soft '
        'textures and gentle piano. Current activity: Working at Desk. ' + SEED_BODY +
        ' Tempo: 84 BPM, very calm energy. ' + SEED_INTENT + ' ' + SEED_TRANSITION),
    'upbeat_pop': (
        'Upbeat pop music. Mood: bright, happy and energetic. Instrumentation: punchy drums, '
        'catchy synth hooks, electric guitar and bass. Current activity: Working at Desk. ' +
        SEED_BODY + ' Tempo: 95 BPM, moderate energy. ' + SEED_INTENT + ' ' + SEED_TRANSITION),
    'cinematic': (
        'Cinematic orchestral music. Mood: epic, emotional and evolving. Instrumentation: '
        'strings, brass, piano and timpani. Current activity: Working at Desk. Heart rate is 65 '
        'bpm. Tempo: 84 BPM, calm energy. ' + SEED_INTENT + ' ' + SEED_TRANSITION),
    'jazz': (
        'Smooth jazz music. Mood: relaxed and sophisticated. Instrumentation: upright bass, '
        'brushed drums, piano and saxophone. Current activity: Working at Desk. ' + SEED_BODY +
        ' Tempo: 84 BPM, calm energy. ' + SEED_INTENT + ' Open with a soft lead-in that grows '
        'out of the previous piece and resolve gently into the next.'),
}


@pytest.fixture(scope='module')
def library():
    return load_library()


def test_the_shipped_presets_are_exactly_the_shared_names(library):
    assert library.names == tuple(EXPECTED_TEXT)


@pytest.mark.parametrize('style', list(EXPECTED_TEXT))
def test_each_preset_renders_its_exact_text(library, style):
    prompt = render(library.get(style), WORKING, HEART_RATE, LISTENER)
    assert prompt.text == EXPECTED_TEXT[style]
    assert (prompt.style, prompt.activity, prompt.activity_class_id) == (style, 'working', WORKING)
    assert prompt.heart_rate_bpm == 65.0
    assert prompt.target_bpm == (95.0 if style == 'upbeat_pop' else 84.0)
    assert prompt.energy == library.get(style).energy['working']
    assert (prompt.dropped, prompt.truncated) == ((), False)


def test_default_preset_is_the_seed_prompt_plus_a_tempo_sentence(library):
    seed = ('Chill techno music. Current activity: Working at Desk. The listener is 34 years old, '
            '182 cm tall, and weighs 78.0 kg. Heart rate is 65 bpm. Compose music that reflects '
            'the listeners style and physiological state. The track should begin with a seamless '
            'lead-in, evolving naturally from previous activity and ending naturally for the next '
            'activity.')
    text = render(library.get('chill_techno'), WORKING, HEART_RATE, LISTENER).text
    assert text.replace(' Tempo: 84 BPM, calm energy.', '') == seed


def test_sensor_noise_does_not_change_the_words(library):
    preset = library.get('chill_techno')
    texts = {render(preset, WALKING, hr, Profile(age=34, height_cm=h, weight_kg=w)).text
             for hr in (97.6, 98.9, 100.3, 102.4) for h in (181.6, 182.0, 182.4)
             for w in (77.76, 78.0, 78.24)}
    assert len(texts) == 1
    assert 'Heart rate is 100 bpm.' in texts.pop()


def test_same_inputs_give_the_same_prompt(library):
    preset = library.get('jazz')
    assert render(preset, WALKING, 111.1, LISTENER) == render(preset, WALKING, 111.1, LISTENER)


@pytest.mark.parametrize('bpm, expected', [(62.4, 60.0), (62.5, 65.0), (64.4, 65.0),
                                           (67.49, 65.0), (67.5, 70.0), (0.0, math.nan),
                                           (-3.0, math.nan), (math.nan, math.nan)])
def test_heart_rate_is_rounded_to_five_beats(bpm, expected):
    result = round_heart_rate(bpm)
    assert result == expected or (math.isnan(result) and math.isnan(expected))


def test_weight_rounds_to_half_a_kilo_and_height_to_whole_cm(library):
    text = render(library.get('chill_techno'), WORKING, 70.0,
                  Profile(age=51, height_cm=169.5, weight_kg=64.26)).text
    assert 'The listener is 51 years old, 170 cm tall, and weighs 64.5 kg.' in text


def test_unknown_values_drop_only_their_sentences(library):
    preset = library.get('chill_techno')
    text = render(preset, WORKING, math.nan, Profile()).text
    assert text == ('Chill techno music. Current activity: Working at Desk. Tempo: 88 BPM, calm '
                    'energy. ' + SEED_INTENT + ' ' + SEED_TRANSITION)
    partial = render(preset, WORKING, 70.0, Profile(age=34, weight_kg=80.0)).text
    assert 'years old' not in partial and 'Heart rate is 70 bpm.' in partial


def test_physiology_switch_keeps_body_data_out(library):
    text = render(library.get('chill_techno'), WORKING, HEART_RATE, LISTENER,
                  include_physiology=False).text
    assert 'years old' not in text and 'Heart rate' not in text and 'Tempo: 84 BPM' in text


def test_energy_words():
    assert [energy_word(e) for e in (0.0, 0.2, 0.21, 0.5, 0.75, 1.0)] == [
        'very calm', 'very calm', 'calm', 'moderate', 'lively', 'intense']
    with pytest.raises(ValueError, match='outside'):
        energy_word(1.5)


def test_a_bad_activity_id_is_refused(library):
    with pytest.raises(ValueError, match='activity_id 9'):
        render(library.get('chill_techno'), 9)


# --- the length budget -----------------------------------------------------------------------

def test_default_budget_holds_every_preset_and_activity(library):
    long_listener = Profile(age=99, height_cm=199.0, weight_kg=149.5)
    for style in library.names:
        for activity_id in range(len(ACTIVITY_NAMES)):
            prompt = render(library.get(style), activity_id, 185.0, long_listener)
            assert len(prompt.text) <= DEFAULT_MAX_PROMPT_CHARS
            assert not prompt.truncated


def test_over_budget_optional_sentences_go_in_the_documented_order(library):
    preset = library.get('lofi_hiphop')
    full = render(preset, WORKING, HEART_RATE, LISTENER, max_chars=2000)
    assert full.dropped == ()
    seen = []
    for budget in range(len(full.text), 59, -1):
        prompt = render(preset, WORKING, HEART_RATE, LISTENER, max_chars=budget)
        assert len(prompt.text) <= budget
        if prompt.dropped and prompt.dropped[-1] not in seen:
            seen.append(prompt.dropped[-1])
    assert tuple(seen) == TRIM_ORDER
    kept = render(preset, WORKING, HEART_RATE, LISTENER, max_chars=100)
    assert kept.text == 'Lo-fi hip hop music. Current activity: Working at Desk. Tempo: 84 BPM, calm energy.'


def test_over_budget_kept_sentences_are_cut_at_a_word(library):
    prompt = render(library.get('chill_techno'), WORKING, HEART_RATE, LISTENER, max_chars=60)
    assert prompt.truncated and len(prompt.text) <= 60
    # the next word, 'Tempo:', would end at character 61
    assert prompt.text == 'Chill techno music. Current activity: Working at Desk.'


@pytest.mark.parametrize('text, budget, expected', [
    ('short  text\n here', 60, 'short text here'),
    ('word ' * 30, 60, ('word ' * 12).strip()),
    ('x' * 100, 60, 'x' * 60),
])
def test_bound_text(text, budget, expected):
    assert bound_text(text, budget) == expected


def test_a_budget_below_the_minimum_is_refused(library):
    with pytest.raises(ValueError, match='max_chars'):
        render(library.get('chill_techno'), WORKING, max_chars=10)
