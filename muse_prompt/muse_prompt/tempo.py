"""Tempo entrainment: the musical tempo asked for, from the activity and the heart rate.

Music whose beat matches a repetitive movement (steps, pedal strokes) is easier to move to,
and calm music for calm activities keeps the listener from being pushed. Each activity has a
basis (a cadence or a resting pace), a tempo at a reference heart rate, and a gain: the tempo
follows the heart rate by ``gain`` BPM per beat/min, clamped to the activity's range. With no
heart rate the tempo at the reference heart rate is used.

    target = clamp(base_bpm + gain * (heart_rate - reference_hr), low_bpm, high_bpm)

| activity     | basis                                                 | base | ref HR | gain | range   |
| ------------ | ----------------------------------------------------- | ---- | ------ | ---- | ------- |
| transient    | in between activities: neutral                        | 100  | 90     | 0.3  | 90-110  |
| sitting      | resting: a little above a resting pulse, calm         | 76   | 70     | 0.5  | 64-90   |
| stairs       | stair-climbing cadence, 90-110 steps/min              | 100  | 110    | 0.4  | 90-112  |
| table_soccer | playful, lively                                       | 122  | 100    | 0.4  | 110-132 |
| cycling      | one beat per pedal down-stroke: 2 x 58-72 rpm         | 128  | 115    | 0.5  | 116-144 |
| driving      | steady and alert, independent of the pulse            | 100  | -      | 0    | 100     |
| lunch_break  | relaxed conversation                                  | 90   | 80     | 0.4  | 78-104  |
| walking      | step cadence, 100-120 steps/min, faster with effort   | 112  | 100    | 0.5  | 100-124 |
| working      | desk work: calm, focused                              | 88   | 75     | 0.4  | 76-100  |

A style preset then clamps that tempo to its own range (``tempo_range_bpm``: an ambient preset
stays slow, a pop preset never drops below its groove). Clamping is monotonic, so within a
preset a higher heart rate never asks for a slower tempo.
"""

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class TempoRule:
    """How one activity's tempo follows the heart rate (see the module table)."""

    basis: str
    base_bpm: float
    reference_hr: float
    gain: float
    low_bpm: float
    high_bpm: float

    def target(self, heart_rate_bpm):
        if heart_rate_bpm is None or not math.isfinite(heart_rate_bpm):
            return self.base_bpm
        bpm = self.base_bpm + self.gain * (heart_rate_bpm - self.reference_hr)
        return min(max(bpm, self.low_bpm), self.high_bpm)


TEMPO_RULES = {
    'transient': TempoRule('in between activities: neutral', 100, 90, 0.3, 90, 110),
    'sitting': TempoRule('resting: a little above a resting pulse, calm', 76, 70, 0.5, 64, 90),
    'stairs': TempoRule('stair-climbing cadence, 90-110 steps/min', 100, 110, 0.4, 90, 112),
    'table_soccer': TempoRule('playful, lively', 122, 100, 0.4, 110, 132),
    'cycling': TempoRule('one beat per pedal down-stroke: 2 x 58-72 rpm', 128, 115, 0.5, 116, 144),
    'driving': TempoRule('steady and alert, independent of the pulse', 100, 0, 0.0, 100, 100),
    'lunch_break': TempoRule('relaxed conversation', 90, 80, 0.4, 78, 104),
    'walking': TempoRule('step cadence, 100-120 steps/min, faster with effort', 112, 100, 0.5, 100, 124),
    'working': TempoRule('desk work: calm, focused', 88, 75, 0.4, 76, 100),
}

# The widest tempo range a preset may ask for [BPM].
MIN_TEMPO_BPM = 30.0
MAX_TEMPO_BPM = 240.0


def target_bpm(activity, heart_rate_bpm, tempo_range_bpm=(MIN_TEMPO_BPM, MAX_TEMPO_BPM)):
    """Whole-number tempo [BPM] for ``activity`` (a name in ACTIVITY_NAMES) at ``heart_rate_bpm``
    (NaN or None = unknown), clamped to the preset's ``tempo_range_bpm``."""
    try:
        rule = TEMPO_RULES[activity]
    except KeyError:
        raise ValueError(f'activity {activity!r} has no tempo rule; expected one of '
                         f'{list(TEMPO_RULES)}') from None
    low, high = tempo_range_bpm
    if not low <= high:
        raise ValueError(f'tempo range {list(tempo_range_bpm)} is empty; expected [low, high]')
    return float(round_half_up(min(max(rule.target(heart_rate_bpm), low), high)))


def round_half_up(value, step=1.0):
    """Round to the nearest multiple of ``step``, halves upwards (reproducible, unlike Python's
    round-half-to-even)."""
    return math.floor(value / step + 0.5) * step
