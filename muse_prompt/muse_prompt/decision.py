"""When the music should change: hysteresis over activity estimates and heart-rate zones,
manual overrides, and the prompt ids. No rclpy and no generated messages: the node feeds it
plain values taken from message fields.

Rules (times are message header stamps, so replays at any speed decide the same):

- The first estimate with ``confidence >= min_confidence`` sets the activity and makes the
  first prompt (REASON_INITIAL).
- Estimates below ``min_confidence`` are ignored: they neither count for nor break a
  candidate. A confident estimate of the current activity drops the candidate.
- ``transient`` (PPG-DaLiA's class 0, the moves between activities) holds the music: it never
  becomes the activity and never makes a prompt, and it interrupts a candidate's run, so the
  music changes only once the next real activity has held for the dwell.
- A different activity becomes current once confident estimates of it have run without
  interruption for ``min_dwell_s`` (last stamp - first stamp); the estimate completing the
  dwell triggers the prompt (REASON_ACTIVITY_CHANGE).
- Heart-rate zones (``heart_zones``) change with a ``hr_zone_margin_bpm`` margin, and only
  once the heart rate has stayed out of the current zone for ``hr_zone_dwell_s``
  (REASON_HEART_RATE_ZONE). Heart rates that are NaN, not positive or below
  ``min_hr_confidence`` are ignored.
- A profile change that changes the prompt makes one (REASON_PROFILE_CHANGE).
- Overrides (REASON_MANUAL): ``clear`` drops all overrides first; ``style`` switches the
  preset; ``text`` pins this exact text (bounded) until cleared, and while it is pinned no
  automatic prompt is made (state keeps being tracked, so clearing reflects the present).
  Changing the base style, the presets or the rules (the node's parameters) acts like an
  override: a prompt follows where the prompt changes.
- A trigger only makes a prompt when the prompt would differ from the last one published
  (text, style, activity, tempo or energy): the music changes only when it should.
- Prompt ids are 1, 2, 3, ... in the order prompts are made.
"""

import enum
import math
from dataclasses import dataclass, fields, replace

from muse_prompt import heart_zones
from muse_prompt.template import (DEFAULT_MAX_PROMPT_CHARS, MIN_MAX_PROMPT_CHARS,
                                  RenderedPrompt, bound_text, render)
from muse_common.activities import ACTIVITY_NAMES, TRANSIENT
from muse_common.profile import Profile


class Reason(enum.IntEnum):
    """Why a prompt was made: the values of muse_msgs/MusicPrompt's REASON_* constants
    (tests/test_layout.py checks that the two agree)."""
    INITIAL = 0
    ACTIVITY_CHANGE = 1
    HEART_RATE_ZONE = 2
    MANUAL = 3
    PROFILE_CHANGE = 4


_NS = 1_000_000_000
# Probabilities arrive as float32; a softmax maximum may round a hair above 1.
_FLOAT32_SLACK = 1e-6


@dataclass(frozen=True)
class DecisionConfig:
    """Tunable rules (see the module docstring); the node's parameters of the same names."""

    min_dwell_s: float = 4.0
    min_confidence: float = 0.6
    hr_zone_margin_bpm: float = 5.0
    hr_zone_dwell_s: float = 4.0
    min_hr_confidence: float = 0.0
    include_physiology: bool = True
    max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS

    # name -> (lowest, highest) allowed value; None = unbounded
    LIMITS = {
        'min_dwell_s': (0.0, 3600.0),
        'min_confidence': (0.0, 1.0),
        'hr_zone_margin_bpm': (0.0, 50.0),
        'hr_zone_dwell_s': (0.0, 3600.0),
        'min_hr_confidence': (0.0, 1.0),
        'max_prompt_chars': (MIN_MAX_PROMPT_CHARS, 4000),
    }

    def __post_init__(self):
        for field in fields(self):
            value = getattr(self, field.name)
            if field.type is bool:
                if not isinstance(value, bool):
                    raise ValueError(f'{field.name} must be true or false, got {value!r}')
                continue
            if field.type is int and not (isinstance(value, int) and not isinstance(value, bool)):
                raise ValueError(f'{field.name} must be an integer, got {value!r}')
            if (not isinstance(value, (int, float)) or isinstance(value, bool)
                    or not math.isfinite(value)):
                raise ValueError(f'{field.name} must be a number, got {value!r}')
            low, high = self.LIMITS[field.name]
            if not low <= value <= high:
                raise ValueError(f'{field.name} must be in [{low}, {high}], got {value!r}')


@dataclass(frozen=True)
class Prompt:
    """A prompt to publish: the rendered text and numbers, its id, why and what triggered it."""

    prompt_id: int
    reason: Reason
    trigger_stamp_ns: int       # header stamp of the triggering message [ns]
    rendered: RenderedPrompt

    @property
    def reason_name(self):
        return self.reason.name.lower()


class PromptDecider:
    """Turns activity estimates, heart rates, profiles and overrides into prompts.

    Each ``on_*`` method returns the :class:`Prompt` to publish, or None. Not thread-safe:
    callers serialise calls.
    """

    def __init__(self, library, style, config=DecisionConfig()):
        library.get(style)  # an unknown style fails here, naming the known ones
        self._library = library
        self._base_style = style
        self._config = config
        self._profile = Profile()
        self._style_override = None
        self._text_override = None
        self._activity = None                 # current class id
        self._candidate = None                # (class id, first stamp ns, last stamp ns)
        self._heart_rate = math.nan           # last accepted heart rate [beats/min]
        self._zone = None
        self._zone_leaving_since = None       # stamp [ns] since the heart rate left the zone
        self._published = None                # the last Prompt
        self._next_id = 1
        self.counts = {'estimates': 0, 'estimates_below_confidence': 0,
                       'estimates_transient': 0, 'heart_rates': 0,
                       'heart_rates_ignored': 0, 'profiles': 0, 'overrides': 0}

    # --- configuration -----------------------------------------------------------------------

    @property
    def config(self):
        return self._config

    @property
    def library(self):
        return self._library

    @property
    def style(self):
        """The style in effect: the override's, else the base style."""
        return self._style_override or self._base_style

    @property
    def base_style(self):
        return self._base_style

    def check_library(self, library, base_style=None):
        """Raise UnknownStyleError unless ``library`` has the styles in use (with ``base_style``
        as the base style, when given)."""
        for style in filter(None, (base_style or self._base_style, self._style_override)):
            library.get(style)

    def reconfigure(self, stamp_ns, library=None, base_style=None, config=None):
        """Switch to another preset library (a new user presets file), base style and/or
        rules; a prompt follows where that changes the prompt (REASON_MANUAL)."""
        library = library or self._library
        self.check_library(library, base_style)
        self._library = library
        self._base_style = base_style or self._base_style
        self._config = config or self._config
        return self._maybe_publish(Reason.MANUAL, stamp_ns)

    # --- inputs ------------------------------------------------------------------------------

    def on_activity(self, stamp_ns, class_id, confidence):
        if not 0 <= class_id < len(ACTIVITY_NAMES):
            raise ValueError(f'activity class_id {class_id!r} is not an activity class id; '
                             f'expected 0..{len(ACTIVITY_NAMES) - 1}')
        if not (math.isfinite(confidence) and 0.0 <= confidence <= 1.0 + _FLOAT32_SLACK):
            raise ValueError(f'activity confidence {confidence!r} is not in [0, 1]')
        self.counts['estimates'] += 1
        if confidence < self._config.min_confidence:
            self.counts['estimates_below_confidence'] += 1
            return None
        if class_id == TRANSIENT:
            self.counts['estimates_transient'] += 1
            self._candidate = None
            return None
        if self._activity is None:
            self._activity = class_id
            reason = (Reason.INITIAL if self._published is None
                      else Reason.ACTIVITY_CHANGE)
            return self._maybe_publish(reason, stamp_ns)
        if class_id == self._activity:
            self._candidate = None
            return None
        if (self._candidate is None or self._candidate[0] != class_id
                or stamp_ns < self._candidate[1]):
            self._candidate = (class_id, stamp_ns, stamp_ns)
        else:
            self._candidate = (class_id, self._candidate[1], stamp_ns)
        if stamp_ns - self._candidate[1] < self._config.min_dwell_s * _NS:
            return None
        self._activity, self._candidate = class_id, None
        return self._maybe_publish(Reason.ACTIVITY_CHANGE, stamp_ns)

    def on_heart_rate(self, stamp_ns, bpm, confidence=1.0):
        self.counts['heart_rates'] += 1
        if (not math.isfinite(bpm) or bpm <= 0 or not math.isfinite(confidence)
                or confidence < self._config.min_hr_confidence):
            self.counts['heart_rates_ignored'] += 1
            return None
        first = math.isnan(self._heart_rate)
        self._heart_rate = bpm
        hr_max = heart_zones.max_heart_rate(self._profile.age)
        proposed = heart_zones.next_zone(self._zone, bpm, hr_max, self._config.hr_zone_margin_bpm)
        if first:
            # The first heart rate sets the zone at once; a prompt made without it gains it.
            self._zone, self._zone_leaving_since = proposed, None
            return self._maybe_publish(Reason.HEART_RATE_ZONE, stamp_ns)
        if proposed == self._zone:
            self._zone_leaving_since = None
            return None
        if self._zone_leaving_since is None or stamp_ns < self._zone_leaving_since:
            self._zone_leaving_since = stamp_ns
        if stamp_ns - self._zone_leaving_since < self._config.hr_zone_dwell_s * _NS:
            return None
        self._zone, self._zone_leaving_since = proposed, None
        return self._maybe_publish(Reason.HEART_RATE_ZONE, stamp_ns)

    def on_profile(self, stamp_ns, profile):
        self.counts['profiles'] += 1
        self._profile = profile
        if not math.isnan(self._heart_rate):
            # Zone bounds follow age: place the current heart rate afresh, without a margin.
            hr_max = heart_zones.max_heart_rate(profile.age)
            self._zone = heart_zones.zone_of(self._heart_rate, hr_max)
            self._zone_leaving_since = None
        return self._maybe_publish(Reason.PROFILE_CHANGE, stamp_ns)

    def on_override(self, stamp_ns, style='', text='', clear=False):
        """Apply an override (``clear`` first, then ``style``, then ``text``)."""
        if style:
            self._library.get(style)  # reject before changing anything
        self.counts['overrides'] += 1
        if clear:
            self._style_override = self._text_override = None
        if style:
            self._style_override = style
        if text and text.strip():
            bounded = bound_text(text, self._config.max_prompt_chars)
            self._text_override = (bounded, bounded != ' '.join(text.split()))
        return self._maybe_publish(Reason.MANUAL, stamp_ns, manual=True)

    # --- state -------------------------------------------------------------------------------

    @property
    def last_prompt(self):
        return self._published

    def status(self):
        """What the decision is based on, for diagnostics."""
        zone = self._zone
        candidate = self._candidate
        held_s = (candidate[2] - candidate[1]) / _NS if candidate else 0.0
        return {
            'style': self.style,
            'activity': ACTIVITY_NAMES[self._activity] if self._activity is not None else '',
            'candidate': ACTIVITY_NAMES[candidate[0]] if candidate else '',
            'candidate_held_s': held_s,
            'dwell_progress': (min(held_s / self._config.min_dwell_s, 1.0)
                               if candidate and self._config.min_dwell_s > 0 else 0.0),
            'heart_rate_bpm': self._heart_rate,
            'hr_zone': heart_zones.ZONE_NAMES[zone] if zone is not None else '',
            'hr_max_bpm': heart_zones.max_heart_rate(self._profile.age),
            'text_override': self._text_override is not None,
            'style_override': self._style_override or '',
            'prompts': self._next_id - 1,
            'last_reason': self._published.reason_name if self._published else '',
            'last_prompt_id': self._published.prompt_id if self._published else 0,
        }

    # --- making prompts ----------------------------------------------------------------------

    def _render_current(self):
        preset = self._library.get(self.style)
        activity = self._activity if self._activity is not None else TRANSIENT
        rendered = render(preset, activity, self._heart_rate, self._profile,
                          include_physiology=self._config.include_physiology,
                          max_chars=self._config.max_prompt_chars)
        if self._activity is None:
            rendered = replace(rendered, activity='')
        return rendered

    def _maybe_publish(self, reason, stamp_ns, manual=False):
        """Make a prompt for the present state if it differs from the last one published."""
        if self._text_override is not None:
            if not manual:
                return None
            text, truncated = self._text_override
            rendered = replace(self._render_current(), text=text, dropped=(), truncated=truncated)
        elif self._activity is None:
            return None
        else:
            rendered = self._render_current()
        last = self._published.rendered if self._published else None
        if last is not None and _music_of(last) == _music_of(rendered):
            return None
        prompt = Prompt(prompt_id=self._next_id, reason=reason, trigger_stamp_ns=int(stamp_ns),
                        rendered=rendered)
        self._next_id += 1
        self._published = prompt
        return prompt


def _music_of(rendered):
    """What the generator hears of a prompt."""
    return (rendered.text, rendered.style, rendered.activity, rendered.target_bpm,
            rendered.energy)
