"""The listener's profile (plain Python: no rclpy, no messages).

PPG-DaLiA's questionnaire statics, as the dataset loader reads them, the replay publishes
them (muse_msgs/UserProfile), and the encoder and the prompt builder use them.
"""

import math
from dataclasses import dataclass

# Sex codes, identical to muse_msgs/UserProfile's SEX_* constants (tests/test_layout.py checks
# that the two agree; this module stays free of generated messages).
SEX_UNKNOWN, SEX_MALE, SEX_FEMALE = 0, 1, 2


@dataclass(frozen=True)
class Profile:
    """The questionnaire statics.

    ``sex`` is kept as the dataset writes it, normalised to ``'m'``, ``'f'`` or ``''``
    (unknown); :attr:`sex_code` gives the ``UserProfile.SEX_*`` value for messages.
    Unknown numbers are 0 (age, skin type, sport) or NaN (height, weight), as in UserProfile.
    """
    age: int = 0
    sex: str = ''
    height_cm: float = math.nan
    weight_kg: float = math.nan
    skin_type: int = 0
    sport: int = 0

    @property
    def sex_code(self):
        return {'m': SEX_MALE, 'f': SEX_FEMALE}.get(self.sex, SEX_UNKNOWN)

    @classmethod
    def from_msg(cls, msg):
        """The profile a ``muse_msgs/UserProfile`` carries (an rclpy or a rosbags message, read
        by attribute only); sex codes other than male and female read as unknown."""
        sex = {SEX_MALE: 'm', SEX_FEMALE: 'f'}.get(int(msg.sex), '')
        return cls(age=int(msg.age), sex=sex, height_cm=float(msg.height_cm),
                   weight_kg=float(msg.weight_kg), skin_type=int(msg.skin_type),
                   sport=int(msg.sport))
