"""The pseudo-static inputs of the CNN: the window's heart rate and the wearer's profile.

They change slowly or never, and shift what a motion pattern means (a given wrist motion at
160 beats/min is more likely stairs than table soccer). Any of them may be unknown at run
time (no heart-rate sensor yet, no profile published): unknown values are NaN here and are
replaced by the checkpoint's defaults, the training-set means, so the model falls back on
motion alone instead of failing.
"""

from dataclasses import astuple, dataclass, fields
import math

import numpy as np

# Order of the static input vector fed to the CNN.
STATIC_INPUTS = ('heart_rate_bpm', 'age_years', 'sex_female', 'height_cm', 'weight_kg')

# muse_msgs/UserProfile's sex codes (0 unknown, 1 male, 2 female) -> the sex_female input.
_SEX_FEMALE_BY_CODE = {0: math.nan, 1: 0.0, 2: 1.0}


def sex_female_from_code(code):
    """UserProfile.sex code -> 1.0 female, 0.0 male, NaN unknown (also for invalid codes)."""
    return _SEX_FEMALE_BY_CODE.get(int(code), math.nan)


def _known(value, low, high):
    """value as float if it is a plausible measurement in [low, high], else NaN."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return math.nan
    return value if low <= value <= high else math.nan


@dataclass(frozen=True)
class Statics:
    """One window's static inputs; NaN = unknown. Implausible values count as unknown."""

    heart_rate_bpm: float = math.nan
    age_years: float = math.nan
    sex_female: float = math.nan
    height_cm: float = math.nan
    weight_kg: float = math.nan

    def __post_init__(self):
        # 0 means "unknown" in UserProfile (age) and sensors report 0 bpm when they have none.
        for name, low, high in (('heart_rate_bpm', 20, 260), ('age_years', 1, 120),
                                ('sex_female', 0, 1), ('height_cm', 50, 250), ('weight_kg', 10, 400)):
            object.__setattr__(self, name, _known(getattr(self, name), low, high))

    def unknown(self):
        """Names of the inputs that are unknown."""
        return tuple(f.name for f in fields(self) if math.isnan(getattr(self, f.name)))

    def vector(self, defaults):
        """float32 (5,) in STATIC_INPUTS order, unknown values replaced by ``defaults[name]``."""
        values = [defaults[name] if math.isnan(value) else value
                  for name, value in zip(STATIC_INPUTS, astuple(self))]
        return np.asarray(values, dtype=np.float32)

    def filled(self, defaults):
        """These values, each unknown one replaced by the same input of ``defaults`` (a
        Statics, whose value may be unknown too)."""
        return Statics(*(default if math.isnan(value) else value
                         for value, default in zip(astuple(self), astuple(defaults))))

    def with_heart_rate(self, bpm):
        return Statics(bpm, self.age_years, self.sex_female, self.height_cm, self.weight_kg)
