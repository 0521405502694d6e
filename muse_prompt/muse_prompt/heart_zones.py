"""Heart-rate zones: the exercise-intensity bands a change of music follows.

Zones are fractions of the age-predicted maximum heart rate (Tanaka, Monahan & Seals, JACC
2001: ``HRmax = 208 - 0.7 * age``; age unknown: ``DEFAULT_AGE_YEARS``):

| zone | name       | % of HRmax |
| ---- | ---------- | ---------- |
| 0    | rest       | < 50       |
| 1    | very light | 50-60      |
| 2    | light      | 60-70      |
| 3    | moderate   | 70-80      |
| 4    | hard       | 80-90      |
| 5    | maximum    | >= 90      |

Hysteresis: leaving the current zone needs the heart rate ``margin_bpm`` beyond the boundary
(up: ``bpm >= boundary + margin``; down: ``bpm < boundary - margin``), so a pulse hovering
on a boundary does not switch zones back and forth.
"""

import bisect
import math

ZONE_NAMES = ('rest', 'very light', 'light', 'moderate', 'hard', 'maximum')
ZONE_FRACTIONS = (0.5, 0.6, 0.7, 0.8, 0.9)  # lower bounds of zones 1..5, fraction of HRmax
DEFAULT_AGE_YEARS = 30


def max_heart_rate(age_years):
    """Age-predicted maximum heart rate [beats/min] (Tanaka); unknown age (0) -> default age."""
    if age_years is None or not math.isfinite(age_years) or age_years <= 0:
        age_years = DEFAULT_AGE_YEARS
    return 208.0 - 0.7 * age_years


def zone_bounds(hr_max):
    """Lower bounds [beats/min] of zones 1..5."""
    return tuple(fraction * hr_max for fraction in ZONE_FRACTIONS)


def zone_of(bpm, hr_max):
    """Zone index (0..5) of ``bpm``, without hysteresis."""
    return bisect.bisect_right(zone_bounds(hr_max), bpm)


def next_zone(current, bpm, hr_max, margin_bpm):
    """The zone ``bpm`` puts the listener in when they are in ``current`` (None = no zone yet)."""
    if not math.isfinite(bpm):
        raise ValueError(f'heart rate {bpm!r} is not a number')
    if margin_bpm < 0:
        raise ValueError(f'margin_bpm must be >= 0, got {margin_bpm!r}')
    if current is None:
        return zone_of(bpm, hr_max)
    if zone_of(bpm - margin_bpm, hr_max) > current:
        return zone_of(bpm - margin_bpm, hr_max)
    if zone_of(bpm + margin_bpm, hr_max) < current:
        return zone_of(bpm + margin_bpm, hr_max)
    return current
