"""The prompt text: a style preset's sentences filled with rounded activity, body and tempo
values, bounded in length.

MusicGen conditions on its prompt through a T5 text encoder whose tokenizer stops at 512
tokens, and it was trained on short descriptions, so a prompt is kept under a character budget
(``DEFAULT_MAX_PROMPT_CHARS``; English T5 SentencePiece tokens average about 4 characters, so
500 characters are roughly 110-140 tokens). Over budget, optional sentences are dropped in
the fixed order ``TRIM_ORDER``; the style, activity and tempo sentences are always kept, and
a text still too long is cut at a word boundary.

Numbers are rounded before they enter the text (heart rate to 5 beats/min, weight to 0.5 kg,
height to whole cm, tempo to whole BPM), so sensor noise does not change the words, and the
same inputs always give the same text.
"""

import math
import string
from dataclasses import dataclass

from muse_prompt.tempo import round_half_up, target_bpm
from muse_common.activities import ACTIVITY_DISPLAY_NAMES, ACTIVITY_NAMES
from muse_common.profile import Profile

DEFAULT_MAX_PROMPT_CHARS = 500
MIN_MAX_PROMPT_CHARS = 60

HEART_RATE_STEP_BPM = 5.0
WEIGHT_STEP_KG = 0.5

# Optional sentences, dropped first to last when a prompt is over budget.
TRIM_ORDER = ('intent', 'physiology', 'transition', 'heart_rate', 'instrumentation', 'mood')

# Upper bounds of energy words, checked in order.
ENERGY_WORDS = ((0.2, 'very calm'), (0.4, 'calm'), (0.6, 'moderate'), (0.8, 'lively'),
                (1.0, 'intense'))

_SEX_WORDS = {'m': 'male', 'f': 'female'}


@dataclass(frozen=True)
class RenderedPrompt:
    """A prompt's text and the numbers it reflects."""

    text: str
    style: str
    activity: str               # activity name, e.g. "walking"
    activity_class_id: int
    heart_rate_bpm: float       # rounded as in the text; NaN = unknown
    target_bpm: float
    energy: float
    dropped: tuple = ()         # sentence slots dropped to meet the budget
    truncated: bool = False     # the kept sentences still did not fit and were cut


def round_heart_rate(bpm):
    """Heart rate as the prompt reflects it: to 5 beats/min; NaN when unknown or not positive."""
    if bpm is None or not math.isfinite(bpm) or bpm <= 0:
        return math.nan
    return round_half_up(bpm, HEART_RATE_STEP_BPM)


def energy_word(energy):
    for upper, word in ENERGY_WORDS:
        if energy <= upper:
            return word
    raise ValueError(f'energy {energy!r} is outside [0, 1]')


def join_words(items):
    """'a', 'a and b', 'a, b and c'."""
    items = list(items)
    return items[0] if len(items) == 1 else ', '.join(items[:-1]) + ' and ' + items[-1]


def placeholder_values(preset, activity_id, heart_rate_bpm, profile):
    """Text for every placeholder; None where the value is unknown (its sentence is dropped)."""
    activity = ACTIVITY_NAMES[activity_id]
    hr = round_heart_rate(heart_rate_bpm)
    energy = preset.energy_for(activity)
    weight = profile.weight_kg
    height = profile.height_cm
    known_weight = math.isfinite(weight) and weight > 0
    known_height = math.isfinite(height) and height > 0
    return {
        'genre': preset.genre,
        'mood': preset.mood or None,
        'instrumentation': join_words(preset.instrumentation) if preset.instrumentation else None,
        'activity': ACTIVITY_DISPLAY_NAMES[activity_id],
        'activity_label': activity,
        'age': str(profile.age) if profile.age > 0 else None,
        'sex': _SEX_WORDS.get(profile.sex),
        'height_cm': f'{round_half_up(height):.0f}' if known_height else None,
        'weight_kg': f'{round_half_up(weight, WEIGHT_STEP_KG):.1f}' if known_weight else None,
        'heart_rate_bpm': f'{hr:.0f}' if math.isfinite(hr) else None,
        'target_bpm': f'{target_bpm(activity, hr, preset.tempo_range_bpm):.0f}',
        'energy': f'{energy:.2f}',
        'energy_word': energy_word(energy),
    }


def render(preset, activity_id, heart_rate_bpm=math.nan, profile=Profile(), *,
           include_physiology=True, max_chars=DEFAULT_MAX_PROMPT_CHARS):
    """The prompt for ``activity_id`` (ActivityEstimate class id) in ``preset``.

    ``heart_rate_bpm`` NaN and the ``Profile`` defaults mean unknown; a sentence whose
    placeholders are unknown is left out. ``include_physiology=False`` leaves the body and
    heart-rate sentences out whatever the preset says (a privacy switch).
    """
    if not 0 <= activity_id < len(ACTIVITY_NAMES):
        raise ValueError(f'activity_id {activity_id!r} is not an activity class id; expected '
                         f'0..{len(ACTIVITY_NAMES) - 1}')
    _check_budget(max_chars)
    values = placeholder_values(preset, activity_id, heart_rate_bpm, profile)
    enabled = {
        'physiology': include_physiology and preset.include_physiology,
        'heart_rate': include_physiology and preset.include_heart_rate,
    }
    sentences = {}
    for slot, template in preset.templates.items():
        if not enabled.get(slot, True) or not template:
            continue
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
        if any(values[f] is None for f in fields):
            continue
        sentences[slot] = ' '.join(template.format(**values).split())

    dropped = []
    for slot in TRIM_ORDER:
        if _length(sentences) <= max_chars:
            break
        if sentences.pop(slot, None) is not None:
            dropped.append(slot)
    text = ' '.join(sentences.values())
    bounded = bound_text(text, max_chars)
    activity = ACTIVITY_NAMES[activity_id]
    return RenderedPrompt(
        text=bounded, style=preset.name, activity=activity, activity_class_id=activity_id,
        heart_rate_bpm=round_heart_rate(heart_rate_bpm), target_bpm=float(values['target_bpm']),
        energy=preset.energy_for(activity), dropped=tuple(dropped), truncated=bounded != text)


def bound_text(text, max_chars):
    """``text`` with runs of white space collapsed, cut at the last word boundary that fits
    ``max_chars`` (a single over-long word is cut inside)."""
    _check_budget(max_chars)
    text = ' '.join(text.split())
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars + 1].rsplit(' ', 1)[0] if ' ' in text[:max_chars + 1] else ''
    return (cut or text[:max_chars]).rstrip(' ,;:')


def _check_budget(max_chars):
    if not isinstance(max_chars, int) or max_chars < MIN_MAX_PROMPT_CHARS:
        raise ValueError(f'max_chars must be an integer >= {MIN_MAX_PROMPT_CHARS}, got '
                         f'{max_chars!r}')


def _length(sentences):
    return sum(map(len, sentences.values())) + max(len(sentences) - 1, 0)
