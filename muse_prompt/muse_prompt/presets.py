"""Style presets: the listener's taste as data (YAML), validated strictly.

A presets file is a mapping ``presets: {name: preset}``. A preset either stands alone (then it
must give every required key) or ``extends`` another preset and overrides some keys; the
``energy`` and ``templates`` mappings are merged key by key, everything else is replaced.

Keys of a preset (``muse_prompt/README.md`` has the full story):

- ``extends``: name of the preset this one builds on (same file, or an earlier file).
- ``description``: free text for people; never rendered.
- ``genre`` (required): the style sentence's genre, e.g. ``Chill techno``.
- ``mood``: e.g. ``warm and nostalgic``; empty = no mood sentence.
- ``instrumentation``: list of instruments; empty = no instrumentation sentence.
- ``energy`` (required, every activity): musical energy in [0, 1] per activity name.
- ``tempo_range_bpm`` (required): ``[low, high]``; the entrained tempo is folded into it.
- ``include_physiology`` / ``include_heart_rate``: whether the listener's body sentence and
  the heart-rate sentence are rendered.
- ``templates`` (required, every sentence slot): the wording, with ``{placeholders}``; an
  empty template drops its sentence.

Errors are :class:`PresetError` naming the file and the key path, e.g.
``presets.jazz.energy.walking``.
"""

import math
import string
from dataclasses import dataclass
from pathlib import Path

import yaml

from muse_prompt.tempo import MAX_TEMPO_BPM, MIN_TEMPO_BPM
from muse_common.activities import ACTIVITY_NAMES

PACKAGE = 'muse_prompt'
DEFAULT_STYLE = 'chill_techno'
BUILTIN_PRESETS_FILE = 'presets.yaml'

# Sentence slots in the order they appear in a prompt.
SENTENCE_SLOTS = ('style', 'mood', 'instrumentation', 'activity', 'physiology', 'heart_rate',
                  'tempo', 'intent', 'transition')

# Placeholders a template may use; each renders as already-rounded text.
PLACEHOLDERS = {
    'genre': 'the preset genre, e.g. "Chill techno"',
    'mood': 'the preset mood',
    'instrumentation': 'the preset instruments joined as "a, b and c"',
    'activity': 'the activity display name, e.g. "Working at Desk"',
    'activity_label': 'the activity name, e.g. "working"',
    'age': 'listener age [years]',
    'sex': 'listener sex, "male" or "female"',
    'height_cm': 'listener height, whole cm',
    'weight_kg': 'listener weight, to 0.5 kg, one decimal',
    'heart_rate_bpm': 'heart rate, to 5 beats/min',
    'target_bpm': 'target tempo, whole BPM',
    'energy': 'energy in [0, 1], two decimals',
    'energy_word': 'energy as a word, e.g. "calm"',
}

_ALL_KEYS = ('extends', 'description', 'genre', 'mood', 'instrumentation', 'energy',
             'tempo_range_bpm', 'include_physiology', 'include_heart_rate', 'templates')
# Keys a preset without ``extends`` must give; the others have defaults.
_REQUIRED_KEYS = ('genre', 'energy', 'tempo_range_bpm', 'templates')
_DEFAULTS = {'description': '', 'mood': '', 'instrumentation': (), 'include_physiology': True,
             'include_heart_rate': True}
_MERGED_KEYS = ('energy', 'templates')


class PresetError(ValueError):
    """A presets file is unusable; the message names the file and the offending key."""

    def __init__(self, path, key, problem):
        self.path = str(path)
        self.key = key
        self.problem = problem
        where = f': {key}' if key else ''
        super().__init__(f"presets file '{self.path}'{where}: {problem}")


class UnknownStyleError(KeyError):
    """A style name that no loaded preset has."""

    def __init__(self, style, known):
        self.style = style
        self.known = tuple(known)
        super().__init__(style)

    def __str__(self):
        return f'unknown style preset {self.style!r}; expected one of {list(self.known)}'


@dataclass(frozen=True)
class StylePreset:
    """One resolved preset: every key has its value (see the module docstring)."""

    name: str
    source: str
    description: str
    genre: str
    mood: str
    instrumentation: tuple
    energy: dict
    tempo_range_bpm: tuple
    include_physiology: bool
    include_heart_rate: bool
    templates: dict

    def energy_for(self, activity):
        return self.energy[activity]


class PresetLibrary:
    """Named presets: the built-in file, then optionally a user file that adds or replaces."""

    def __init__(self, presets):
        if not presets:
            raise ValueError('a preset library needs at least one preset')
        self._presets = dict(presets)

    @property
    def names(self):
        return tuple(self._presets)

    def __contains__(self, name):
        return name in self._presets

    def __len__(self):
        return len(self._presets)

    def get(self, name):
        try:
            return self._presets[name]
        except KeyError:
            raise UnknownStyleError(name, self._presets) from None

    def extended_with(self, path):
        """A new library: these presets plus (replaced by) those of the file at ``path``."""
        presets = dict(self._presets)
        presets.update(_resolve_file(Path(path), self._presets))
        return PresetLibrary(presets)


def builtin_presets_path():
    """The shipped presets.yaml: the package's share directory, or the source tree when the
    package runs uninstalled."""
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    try:
        share = Path(get_package_share_directory(PACKAGE))
    except PackageNotFoundError:
        share = Path(__file__).resolve().parents[1]
    return share / 'config' / BUILTIN_PRESETS_FILE


def load_library(user_presets_file=None):
    """The built-in presets, extended by ``user_presets_file`` when one is given."""
    library = PresetLibrary(_resolve_file(builtin_presets_path(), {}))
    return library.extended_with(user_presets_file) if user_presets_file else library


# --- reading and validating ------------------------------------------------------------------

class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f'duplicate key {key!r}', key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(path):
    try:
        text = path.read_text(encoding='utf-8')
    except FileNotFoundError:
        raise PresetError(path, '', 'file does not exist') from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PresetError(path, '', f'cannot be read: {exc}') from None
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        raise PresetError(path, '', f'not valid YAML: {exc}') from None


def _resolve_file(path, earlier):
    """Validate the file at ``path`` and resolve its presets against ``earlier`` ones."""
    document = _read_yaml(path)
    if not isinstance(document, dict):
        raise PresetError(path, '', f'expected a mapping with the key "presets", got '
                                    f'{_kind(document)}')
    unknown = set(document) - {'presets'}
    if unknown:
        raise PresetError(path, sorted(map(str, unknown))[0],
                          'unknown top-level key; expected only "presets"')
    if 'presets' not in document:
        raise PresetError(path, 'presets', 'missing required key')
    raw = document['presets']
    if not isinstance(raw, dict) or not raw:
        raise PresetError(path, 'presets', f'expected a non-empty mapping of preset names to '
                                           f'presets, got {_kind(raw)}')
    for name, fields in raw.items():
        _check_raw_preset(path, name, fields)

    resolved = {}

    def resolve(name, chain):
        if name in resolved:
            return resolved[name]
        fields = raw[name]
        base_name = fields.get('extends')
        if base_name is None:
            missing = [k for k in _REQUIRED_KEYS if k not in fields]
            if missing:
                raise PresetError(path, f'presets.{name}.{missing[0]}',
                                  'missing required key (a preset without "extends" must give '
                                  f'{", ".join(_REQUIRED_KEYS)})')
            merged = {**_DEFAULTS, **fields}
        else:
            if base_name in chain:
                raise PresetError(path, f'presets.{name}.extends',
                                  f'circular extends: {" -> ".join(chain + [name, base_name])}')
            if base_name in raw and base_name != name:
                base = resolve(base_name, chain + [name])
            elif base_name in earlier:
                base = earlier[base_name]
            else:
                known = sorted(set(raw) - {name} | set(earlier))
                raise PresetError(path, f'presets.{name}.extends',
                                  f'unknown preset {base_name!r}; expected one of {known}')
            merged = {k: getattr(base, k) for k in _ALL_KEYS if k != 'extends'}
            for key, value in fields.items():
                if key in _MERGED_KEYS:
                    merged[key] = {**merged[key], **value}
                elif key != 'extends':
                    merged[key] = value
        missing_energy = [a for a in ACTIVITY_NAMES if a not in merged['energy']]
        if missing_energy:
            raise PresetError(path, f'presets.{name}.energy',
                              f'missing energy for activities {missing_energy}')
        missing_slots = [s for s in SENTENCE_SLOTS if s not in merged['templates']]
        if missing_slots:
            raise PresetError(path, f'presets.{name}.templates',
                              f'missing templates for sentences {missing_slots}')
        preset = StylePreset(
            name=name, source=str(path), description=merged['description'],
            genre=merged['genre'], mood=merged['mood'],
            instrumentation=tuple(merged['instrumentation']),
            energy={a: float(merged['energy'][a]) for a in ACTIVITY_NAMES},
            tempo_range_bpm=tuple(float(v) for v in merged['tempo_range_bpm']),
            include_physiology=merged['include_physiology'],
            include_heart_rate=merged['include_heart_rate'],
            templates={s: merged['templates'][s] for s in SENTENCE_SLOTS})
        resolved[name] = preset
        return preset

    for name in raw:
        resolve(name, [])
    return resolved


def _check_raw_preset(path, name, fields):
    """Type and range checks of one preset's own keys (before inheritance)."""
    where = f'presets.{name}'
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise PresetError(path, where, 'a preset name must be a non-empty string without '
                                       'surrounding spaces')
    if not isinstance(fields, dict):
        raise PresetError(path, where, f'expected a mapping of preset keys, got {_kind(fields)}')
    for key, value in fields.items():
        at = f'{where}.{key}'
        if key not in _ALL_KEYS:
            raise PresetError(path, at, f'unknown key; expected one of {list(_ALL_KEYS)}')
        if key in ('extends', 'genre'):
            _expect(isinstance(value, str) and value.strip(), path, at, 'a non-empty string', value)
        elif key in ('description', 'mood'):
            _expect(isinstance(value, str), path, at, 'a string', value)
        elif key in ('include_physiology', 'include_heart_rate'):
            _expect(isinstance(value, bool), path, at, 'true or false', value)
        elif key == 'instrumentation':
            _expect(isinstance(value, list), path, at, 'a list of strings', value)
            for i, item in enumerate(value):
                _expect(isinstance(item, str) and item.strip(), path, f'{at}[{i}]',
                        'a non-empty string', item)
        elif key == 'energy':
            _expect(isinstance(value, dict), path, at, 'a mapping of activity name to energy',
                    value)
            for activity, energy in value.items():
                if activity not in ACTIVITY_NAMES:
                    raise PresetError(path, f'{at}.{activity}',
                                      f'unknown activity; expected one of {list(ACTIVITY_NAMES)}')
                _expect(_is_number(energy) and 0.0 <= energy <= 1.0, path, f'{at}.{activity}',
                        'a number in [0, 1]', energy)
        elif key == 'tempo_range_bpm':
            _expect(isinstance(value, list) and len(value) == 2 and all(map(_is_number, value))
                    and MIN_TEMPO_BPM <= value[0] <= value[1] <= MAX_TEMPO_BPM, path, at,
                    f'[low, high] with {MIN_TEMPO_BPM:g} <= low <= high <= {MAX_TEMPO_BPM:g} BPM',
                    value)
        elif key == 'templates':
            _expect(isinstance(value, dict), path, at, 'a mapping of sentence slot to template',
                    value)
            for slot, template in value.items():
                if slot not in SENTENCE_SLOTS:
                    raise PresetError(path, f'{at}.{slot}',
                                      f'unknown sentence slot; expected one of {list(SENTENCE_SLOTS)}')
                _check_template(path, f'{at}.{slot}', template)


def _check_template(path, at, template):
    _expect(isinstance(template, str), path, at, 'a string (empty drops the sentence)', template)
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise PresetError(path, at, f'malformed template {template!r}: {exc}') from None
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in PLACEHOLDERS:
            raise PresetError(path, at, f'unknown placeholder {{{field}}}; expected one of '
                                        f'{sorted(PLACEHOLDERS)}')
        if spec or conversion:
            raise PresetError(path, at, f'placeholder {{{field}}} takes no format spec or '
                                        f'conversion (values arrive already rounded)')


def _expect(ok, path, at, expected, value):
    if not ok:
        raise PresetError(path, at, f'expected {expected}, got {_kind(value)} {value!r}')


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _kind(value):
    return 'nothing' if value is None else type(value).__name__
