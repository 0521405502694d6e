"""When the music changes: hysteresis against a flapping classifier, heart-rate zones,
profile changes, overrides, prompt ids and trigger stamps."""

import math
import random

import pytest

from muse_prompt.decision import DecisionConfig, PromptDecider, Reason
from muse_prompt.presets import UnknownStyleError, load_library
from muse_common.activities import ACTIVITY_NAMES
from muse_common.profile import Profile

ID = {name: i for i, name in enumerate(ACTIVITY_NAMES)}
INITIAL = Reason.INITIAL
ACTIVITY = Reason.ACTIVITY_CHANGE
ZONE = Reason.HEART_RATE_ZONE
MANUAL = Reason.MANUAL
PROFILE = Reason.PROFILE_CHANGE
LISTENER = Profile(age=40, sex='f', height_cm=170.0, weight_kg=65.0)  # HRmax 180


def ns(seconds):
    return int(round(seconds * 1e9))


@pytest.fixture(scope='module')
def library():
    return load_library()


def decider(library, style='chill_techno', **config):
    config = {'min_dwell_s': 4.0, 'min_confidence': 0.6, 'hr_zone_margin_bpm': 5.0,
              'hr_zone_dwell_s': 4.0, **config}
    return PromptDecider(library, style, DecisionConfig(**config))


def feed(d, estimates):
    """Feed (stamp s, activity name, confidence); return the prompts made."""
    made = [d.on_activity(ns(t), ID[name], conf) for t, name, conf in estimates]
    return [p for p in made if p is not None]


# A classifier that flaps: working, a walking flap, a sitting flap, then walking for real
# (with one low-confidence estimate inside the run), a working flap, then working for real,
# then pure alternation.
FLAPPING = [
    (0, 'working', 0.9),
    (2, 'walking', 0.9), (4, 'working', 0.9),
    (6, 'walking', 0.9), (8, 'sitting', 0.9),
    (10, 'walking', 0.8), (12, 'walking', 0.5), (14, 'walking', 0.9),
    (16, 'working', 0.9), (18, 'walking', 0.9),
    (20, 'working', 0.9), (22, 'working', 0.7), (24, 'working', 0.9),
] + [(26 + 2 * i, ('walking', 'working')[i % 2], 0.95) for i in range(10)]


def test_hysteresis_turns_a_flapping_classifier_into_three_prompts(library):
    prompts = feed(decider(library), FLAPPING)
    assert [p.prompt_id for p in prompts] == [1, 2, 3]
    assert [p.reason for p in prompts] == [INITIAL, ACTIVITY, ACTIVITY]
    assert [p.rendered.activity for p in prompts] == ['working', 'walking', 'working']
    assert [p.trigger_stamp_ns for p in prompts] == [ns(0), ns(14), ns(24)]


def test_without_dwell_every_confident_flip_would_change_the_music(library):
    prompts = feed(decider(library, min_dwell_s=0.0), FLAPPING)
    # initial + 8 flips in the scripted part + 10 flips in the alternating tail
    assert [p.prompt_id for p in prompts] == list(range(1, 20))


def test_a_randomly_flapping_classifier_follows_only_the_real_activities(library):
    """30 % of the estimates are single-window flips to another class, often confident; a
    flip never repeats a label of the two estimates before it (so no wrong run spans the
    4 s dwell), and true estimates are confident."""
    rng = random.Random(8)
    blocks = ['working', 'walking', 'cycling', 'sitting', 'walking', 'driving']
    estimates = []
    for b, activity in enumerate(blocks):
        for k in range(30):  # 60 s per activity, one estimate every 2 s
            t = 60.0 * b + 2.0 * k
            if k > 0 and rng.random() < 0.3:
                recent = {name for _, name, _ in estimates[-2:]}
                wrong = rng.choice([a for a in ACTIVITY_NAMES if a != activity and a not in recent])
                estimates.append((t, wrong, rng.uniform(0.4, 0.95)))
            else:
                estimates.append((t, activity, rng.uniform(0.6, 1.0)))
    flips = sum(1 for t, name, _ in estimates if name != blocks[int(t // 60)])
    assert flips > 40
    prompts = feed(decider(library), estimates)
    assert [p.prompt_id for p in prompts] == [1, 2, 3, 4, 5, 6]
    assert [p.rendered.activity for p in prompts] == blocks
    for p, start in zip(prompts[1:], range(60, 360, 60)):
        # the dwell is met 4 s into the block at the earliest, later where flips broke the run
        assert ns(start + 4) <= p.trigger_stamp_ns <= ns(start + 30)


def test_low_confidence_estimates_neither_count_nor_break_a_run(library):
    d = decider(library)
    assert feed(d, [(0, 'sitting', 0.9)])[0].reason == INITIAL
    # a run of low-confidence walking estimates is ignored entirely
    assert feed(d, [(t, 'walking', 0.59) for t in range(2, 30, 2)]) == []
    # low-confidence estimates of anything inside a confident run do not reset it
    assert feed(d, [(30, 'walking', 0.9), (32, 'cycling', 0.3), (34, 'sitting', 0.2)]) == []
    changed = feed(d, [(34.5, 'walking', 0.61)])
    assert [(p.prompt_id, p.trigger_stamp_ns) for p in changed] == [(2, ns(34.5))]
    assert d.counts['estimates_below_confidence'] == 16


def test_dwell_is_measured_on_stamps_not_on_message_count(library):
    d = decider(library)
    feed(d, [(100, 'sitting', 1.0)])
    fast = [(100.5 + 0.5 * i, 'walking', 1.0) for i in range(8)]  # 100.5 .. 104.0
    assert feed(d, fast) == []
    assert d.status()['candidate'] == 'walking'
    assert d.status()['dwell_progress'] == pytest.approx(3.5 / 4.0)
    prompts = feed(d, [(104.5, 'walking', 1.0)])
    assert [p.trigger_stamp_ns for p in prompts] == [ns(104.5)]


def test_a_stamp_going_backwards_restarts_the_dwell(library):
    d = decider(library)
    feed(d, [(50, 'sitting', 1.0), (52, 'walking', 1.0)])
    # a replay restarted: stamps jump back; the run starts again from there
    assert feed(d, [(10, 'walking', 1.0), (12, 'walking', 1.0)]) == []
    assert [p.trigger_stamp_ns for p in feed(d, [(14, 'walking', 1.0)])] == [ns(14)]


def test_transient_estimates_hold_the_music(library):
    d = decider(library)
    # Transient first: no music is chosen for it; the first real activity starts the music.
    assert feed(d, [(0, 'transient', 0.99), (2, 'transient', 0.99)]) == []
    prompts = feed(d, [(4, 'walking', 0.9)])
    assert [(p.prompt_id, p.rendered.activity) for p in prompts] == [(1, 'walking')]
    # A long, confident transient stretch never changes the music ...
    assert feed(d, [(6 + 2 * k, 'transient', 0.99) for k in range(10)]) == []
    # ... and it interrupts a candidate: working must hold 4 s after the transient.
    prompts = feed(d, [(26, 'working', 0.9), (28, 'working', 0.9), (30, 'transient', 0.9),
                       (32, 'working', 0.9), (34, 'working', 0.9), (36, 'working', 0.9)])
    assert [(p.prompt_id, p.reason, p.trigger_stamp_ns) for p in prompts] == \
        [(2, ACTIVITY, ns(36))]
    assert d.counts['estimates_transient'] == 13


def test_estimates_before_the_first_confident_one_make_nothing(library):
    d = decider(library)
    assert feed(d, [(0, 'walking', 0.2), (2, 'working', 0.5)]) == []
    assert d.status()['activity'] == ''
    assert [p.reason for p in feed(d, [(4, 'working', 0.6)])] == [INITIAL]


def test_bad_estimates_are_refused_with_the_field_named(library):
    d = decider(library)
    with pytest.raises(ValueError, match='class_id 9'):
        d.on_activity(0, 9, 0.9)
    with pytest.raises(ValueError, match='confidence nan'):
        d.on_activity(0, 1, math.nan)
    assert d.counts['estimates'] == 0


# --- heart-rate zones ------------------------------------------------------------------------

def started(library, heart_rate=85.0, **config):
    """A decider with a listener (HRmax 180: zone bounds 90, 108, 126, 144, 162), a heart
    rate and a first prompt for working."""
    d = decider(library, **config)
    d.on_profile(0, LISTENER)
    d.on_heart_rate(0, heart_rate)
    assert d.on_activity(ns(0), ID['working'], 0.9).prompt_id == 1
    return d


def test_a_zone_change_held_for_the_dwell_makes_a_prompt(library):
    d = started(library)
    assert 'Heart rate is 85 bpm.' in d.last_prompt.rendered.text
    # 90 + 5 bpm margin = 95 to enter zone 1; held from t=2 to t=6
    made = [d.on_heart_rate(ns(t), bpm) for t, bpm in ((2, 96.0), (4, 97.0), (6, 95.5))]
    assert made[:2] == [None, None]
    prompt = made[2]
    assert (prompt.prompt_id, prompt.reason, prompt.trigger_stamp_ns) == (2, ZONE, ns(6))
    assert prompt.rendered.heart_rate_bpm == 95.0
    assert 'Heart rate is 95 bpm.' in prompt.rendered.text
    assert d.status()['hr_zone'] == 'very light'


def test_a_heart_rate_hovering_on_a_boundary_changes_nothing(library):
    d = started(library)
    hovering = [87.0, 91.0, 93.0, 89.0, 94.9, 92.0, 88.0, 91.5] * 4
    assert [d.on_heart_rate(ns(2 + 2 * i), bpm) for i, bpm in enumerate(hovering)] == \
        [None] * len(hovering)
    assert d.status()['hr_zone'] == 'rest'


def test_a_one_sample_spike_changes_nothing(library):
    d = started(library)
    assert [d.on_heart_rate(ns(t), bpm) for t, bpm in ((2, 140.0), (4, 86.0), (6, 87.0))] == \
        [None] * 3


def test_zones_go_down_with_the_margin_too(library):
    d = started(library, heart_rate=112.0)  # zone 2 (108-126)
    assert d.status()['hr_zone'] == 'light'
    assert [d.on_heart_rate(ns(t), 104.0) for t in (2, 4, 6, 8)] == [None] * 4  # not < 103
    made = [d.on_heart_rate(ns(t), 100.0) for t in (10, 12, 14)]
    assert made[:2] == [None, None] and (made[2].reason, made[2].prompt_id) == (ZONE, 2)
    assert d.status()['hr_zone'] == 'very light'


def test_the_first_heart_rate_after_a_prompt_without_one_updates_it(library):
    d = decider(library)
    first = d.on_activity(ns(0), ID['walking'], 0.9)
    assert 'Heart rate' not in first.rendered.text and math.isnan(first.rendered.heart_rate_bpm)
    second = d.on_heart_rate(ns(1), 118.0)
    assert (second.prompt_id, second.reason, second.trigger_stamp_ns) == (2, ZONE, ns(1))
    assert 'Heart rate is 120 bpm.' in second.rendered.text
    assert second.rendered.target_bpm == 122.0


def test_ignored_heart_rates(library):
    d = started(library, min_hr_confidence=0.5)
    for bpm, confidence in ((math.nan, 1.0), (0.0, 1.0), (150.0, 0.2), (150.0, math.nan)):
        assert d.on_heart_rate(ns(10), bpm, confidence) is None
    assert d.counts['heart_rates_ignored'] == 4 and d.status()['heart_rate_bpm'] == 85.0


def test_a_new_activity_reflects_the_latest_heart_rate(library):
    d = started(library)
    d.on_heart_rate(ns(1), 88.2)  # same zone: no prompt, but remembered
    prompts = feed(d, [(2, 'walking', 0.9), (4, 'walking', 0.9), (6, 'walking', 0.9)])
    assert 'Heart rate is 90 bpm.' in prompts[0].rendered.text


# --- profile ---------------------------------------------------------------------------------

def test_a_profile_change_makes_a_prompt_and_a_repeat_does_not(library):
    d = started(library)
    assert d.on_profile(ns(5), LISTENER) is None
    older = Profile(age=41, sex='f', height_cm=170.0, weight_kg=65.0)
    prompt = d.on_profile(ns(6), older)
    assert (prompt.prompt_id, prompt.reason, prompt.trigger_stamp_ns) == (2, PROFILE, ns(6))
    assert 'The listener is 41 years old' in prompt.rendered.text
    # weight noise below the 0.5 kg rounding does not change the text
    assert d.on_profile(ns(7), Profile(age=41, sex='f', height_cm=170.2, weight_kg=65.1)) is None


# --- overrides and style ---------------------------------------------------------------------

def test_style_override_switches_preset(library):
    d = started(library)
    prompt = d.on_override(ns(10), style='jazz')
    assert (prompt.prompt_id, prompt.reason, prompt.rendered.style) == (2, MANUAL, 'jazz')
    assert prompt.rendered.text.startswith('Smooth jazz music.')
    assert prompt.trigger_stamp_ns == ns(10)
    # later automatic prompts keep the override's style
    later = feed(d, [(12, 'walking', 0.9), (14, 'walking', 0.9), (16, 'walking', 0.9)])
    assert later[0].rendered.style == 'jazz'


def test_unknown_style_override_changes_nothing(library):
    d = started(library)
    with pytest.raises(UnknownStyleError, match="'polka'"):
        d.on_override(ns(10), style='polka', text='ignored too')
    assert d.style == 'chill_techno' and d.status()['text_override'] is False
    assert d.on_override(ns(11), style='ambient').prompt_id == 2


def test_text_override_pins_the_text_until_cleared(library):
    d = started(library)
    pinned = d.on_override(ns(10), text='  Solo piano,\n gentle and slow. ')
    assert (pinned.prompt_id, pinned.reason) == (2, MANUAL)
    assert pinned.rendered.text == 'Solo piano, gentle and slow.'
    assert pinned.rendered.activity == 'working'
    # the activity changes and the zone changes: the text stays, so nothing is published
    assert feed(d, [(12, 'walking', 0.9), (14, 'walking', 0.9), (16, 'walking', 0.9)]) == []
    assert [d.on_heart_rate(ns(t), 120.0) for t in (12, 14, 16)] == [None] * 3
    assert d.status()['activity'] == 'walking'
    # clearing returns to the template, reflecting the present (walking, 120 bpm)
    cleared = d.on_override(ns(20), clear=True)
    assert (cleared.prompt_id, cleared.reason, cleared.trigger_stamp_ns) == (3, MANUAL, ns(20))
    assert 'Current activity: Walking.' in cleared.rendered.text
    assert 'Heart rate is 120 bpm.' in cleared.rendered.text
    assert d.on_override(ns(21), clear=True) is None  # nothing left to clear


def test_clear_drops_the_style_override_too_and_applies_before_new_values(library):
    d = started(library)
    d.on_override(ns(1), style='ambient')
    assert d.on_override(ns(2), clear=True).rendered.style == 'chill_techno'
    d.on_override(ns(3), style='ambient', text='Rain sounds.')
    both = d.on_override(ns(4), clear=True, style='jazz')
    assert (both.rendered.style, both.rendered.text[:17]) == ('jazz', 'Smooth jazz music')


def test_a_text_override_before_any_activity_is_published_at_once(library):
    d = decider(library)
    prompt = d.on_override(ns(3), text='Warm-up drums.')
    assert (prompt.prompt_id, prompt.reason, prompt.rendered.activity) == (1, MANUAL, '')
    assert d.on_activity(ns(4), ID['working'], 0.9) is None
    after = d.on_override(ns(5), clear=True)
    assert (after.prompt_id, after.rendered.activity) == (2, 'working')


def test_an_over_long_text_override_is_bounded(library):
    d = decider(library, max_prompt_chars=80)
    prompt = d.on_override(0, text='very long words ' * 20)
    assert len(prompt.rendered.text) <= 80 and prompt.rendered.truncated


def test_base_style_change_and_a_no_op(library):
    d = started(library)
    assert d.reconfigure(ns(3), base_style='chill_techno') is None
    prompt = d.reconfigure(ns(4), base_style='lofi_hiphop')
    assert (prompt.prompt_id, prompt.reason, prompt.rendered.style) == (2, MANUAL, 'lofi_hiphop')
    with pytest.raises(UnknownStyleError):
        d.reconfigure(ns(5), base_style='polka')
    assert d.base_style == 'lofi_hiphop'
    # a style override hides base style changes until cleared
    d.on_override(ns(6), style='jazz')
    assert d.reconfigure(ns(7), base_style='ambient') is None
    assert d.on_override(ns(8), clear=True).rendered.style == 'ambient'


def test_rule_changes_make_a_prompt_only_where_the_text_changes(library):
    d = started(library)
    assert d.reconfigure(ns(3), config=DecisionConfig(min_dwell_s=10.0)) is None
    assert d.config.min_dwell_s == 10.0
    private = d.reconfigure(ns(4), config=DecisionConfig(include_physiology=False))
    assert (private.prompt_id, private.reason) == (2, MANUAL)
    assert 'years old' not in private.rendered.text and 'Heart rate' not in private.rendered.text


def test_ids_keep_counting_across_reasons(library):
    d = started(library)
    ids = [d.on_override(ns(1), style='jazz').prompt_id,
           d.on_heart_rate(ns(2), 130.0), d.on_heart_rate(ns(6), 131.0).prompt_id,
           d.on_profile(ns(7), Profile(age=25)).prompt_id,
           feed(d, [(8, 'cycling', 1), (10, 'cycling', 1), (12, 'cycling', 1)])[0].prompt_id]
    assert ids == [2, None, 3, 4, 5]
    assert d.status()['prompts'] == 5 and d.last_prompt.prompt_id == 5


# --- configuration ---------------------------------------------------------------------------

@pytest.mark.parametrize('field, value, words', [
    ('min_dwell_s', -1.0, 'min_dwell_s must be in'),
    ('min_confidence', 1.5, 'min_confidence must be in'),
    ('hr_zone_margin_bpm', math.nan, 'hr_zone_margin_bpm must be a number'),
    ('max_prompt_chars', 20, 'max_prompt_chars must be in'),
    ('max_prompt_chars', 100.0, 'max_prompt_chars must be an integer'),
    ('include_physiology', 1, 'include_physiology must be true or false'),
])
def test_bad_configuration_is_refused(field, value, words):
    with pytest.raises(ValueError, match=words):
        DecisionConfig(**{field: value})


def test_unknown_start_style_is_refused(library):
    with pytest.raises(UnknownStyleError):
        PromptDecider(library, 'polka')
