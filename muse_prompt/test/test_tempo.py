"""The heart-rate and activity -> target BPM table, and heart-rate zones."""

import math

import pytest

from muse_prompt import heart_zones
from muse_prompt.tempo import TEMPO_RULES, round_half_up, target_bpm
from muse_common.activities import ACTIVITY_NAMES

# (activity, heart rate, expected BPM): the documented table, point by point.
TABLE = [
    ('sitting', 70, 76), ('sitting', 80, 81), ('sitting', 50, 66), ('sitting', 30, 64),
    ('sitting', 120, 90),
    ('working', 75, 88), ('working', 65, 84), ('working', 40, 76), ('working', 110, 100),
    ('lunch_break', 80, 90), ('lunch_break', 95, 96), ('lunch_break', 150, 104),
    ('driving', 60, 100), ('driving', 100, 100), ('driving', 170, 100),
    ('walking', 100, 112), ('walking', 90, 107), ('walking', 80, 102), ('walking', 60, 100),
    ('walking', 120, 122), ('walking', 160, 124),
    ('stairs', 110, 100), ('stairs', 125, 106), ('stairs', 80, 90), ('stairs', 150, 112),
    ('cycling', 115, 128), ('cycling', 135, 138), ('cycling', 90, 116), ('cycling', 175, 144),
    ('table_soccer', 100, 122), ('table_soccer', 110, 126), ('table_soccer', 70, 110),
    ('transient', 90, 100), ('transient', 100, 103), ('transient', 130, 110),
]


def test_every_activity_has_a_rule():
    assert set(TEMPO_RULES) == set(ACTIVITY_NAMES)


@pytest.mark.parametrize('activity, heart_rate, expected', TABLE)
def test_bpm_table(activity, heart_rate, expected):
    assert target_bpm(activity, heart_rate) == expected


@pytest.mark.parametrize('activity', ACTIVITY_NAMES)
def test_unknown_heart_rate_gives_the_base_tempo(activity):
    assert target_bpm(activity, math.nan) == TEMPO_RULES[activity].base_bpm
    assert target_bpm(activity, None) == TEMPO_RULES[activity].base_bpm


def test_cadence_activities_sit_in_their_cadence_bands():
    walking = [target_bpm('walking', hr) for hr in range(50, 200, 5)]
    assert min(walking) >= 100 and max(walking) <= 124
    cycling = [target_bpm('cycling', hr) for hr in range(50, 200, 5)]
    assert min(cycling) >= 116 and max(cycling) <= 144


def test_calm_activities_stay_slower_than_moving_ones_at_the_same_pulse():
    for hr in range(60, 121, 5):
        calm = max(target_bpm(a, hr) for a in ('sitting', 'working', 'lunch_break'))
        moving = min(target_bpm(a, hr) for a in ('walking', 'cycling', 'table_soccer'))
        assert calm <= moving, hr


@pytest.mark.parametrize('activity', ACTIVITY_NAMES)
def test_tempo_never_falls_as_the_heart_rate_rises(activity):
    tempi = [target_bpm(activity, hr) for hr in range(40, 220)]
    assert tempi == sorted(tempi)


def test_preset_range_clamps():
    assert target_bpm('walking', 100, (50, 90)) == 90
    assert target_bpm('sitting', 70, (95, 135)) == 95
    assert target_bpm('working', 75, (60, 140)) == 88
    with pytest.raises(ValueError, match='empty'):
        target_bpm('walking', 100, (120, 100))


def test_unknown_activity_is_refused():
    with pytest.raises(ValueError, match="'jogging'"):
        target_bpm('jogging', 100)


def test_rounding_is_half_up_not_half_even():
    assert [round_half_up(x) for x in (0.5, 1.5, 2.5, 84.5)] == [1, 2, 3, 85]
    assert round_half_up(62.5, 5) == 65 and round_half_up(77.75, 0.5) == 78.0


# --- heart-rate zones ------------------------------------------------------------------------

def test_max_heart_rate_is_tanakas_with_a_default_age():
    assert heart_zones.max_heart_rate(40) == pytest.approx(180.0)
    assert heart_zones.max_heart_rate(0) == heart_zones.max_heart_rate(heart_zones.DEFAULT_AGE_YEARS)


def test_zone_bounds_for_a_40_year_old():
    # HRmax 180: bounds at 50/60/70/80/90 % = 90, 108, 126, 144, 162 beats/min
    assert heart_zones.zone_bounds(180.0) == pytest.approx((90, 108, 126, 144, 162))
    assert [heart_zones.zone_of(b, 180.0) for b in (60, 89.9, 90, 107, 108, 130, 150, 170)] == [
        0, 0, 1, 1, 2, 3, 4, 5]


def test_zone_hysteresis_needs_the_margin_both_ways():
    hr_max, margin = 180.0, 5.0
    # in zone 1 (90-108): up to zone 2 only at 108 + 5
    assert heart_zones.next_zone(1, 110.0, hr_max, margin) == 1
    assert heart_zones.next_zone(1, 113.0, hr_max, margin) == 2
    # in zone 2 (108-126): down to zone 1 only below 108 - 5
    assert heart_zones.next_zone(2, 104.0, hr_max, margin) == 2
    assert heart_zones.next_zone(2, 102.9, hr_max, margin) == 1
    # a big jump lands in the zone the margin allows, skipping those between
    assert heart_zones.next_zone(1, 150.0, hr_max, margin) == 4
    assert heart_zones.next_zone(None, 110.0, hr_max, margin) == 2
    with pytest.raises(ValueError, match='not a number'):
        heart_zones.next_zone(1, math.nan, hr_max, margin)
