"""PPG-DaLiA: the facts of the dataset and a strict loader for its per-subject pickles.

The dataset (Reiss et al., "Deep PPG", Sensors 19(14):3079, 2019; UCI id 495) ships one
synchronised pickle per subject, ``PPG_FieldStudy/S<i>/S<i>.pkl``, written by Python 2
(load with ``encoding='latin1'``). Its layout, as documented by the dataset's readme and
confirmed by public loaders (see ``muse_sensors/README.md`` for the sources)::

    {'rpeaks':        int array (R,)        R-peak sample indices into the 700 Hz chest ECG
     'signal': {'wrist': {'ACC':  (N, 3)    Empatica E4, 32 Hz, units of 1/64 g
                          'BVP':  (2N, 1)   64 Hz, photoplethysmogram (device units)
                          'EDA':  (N/8, 1)  4 Hz, microsiemens
                          'TEMP': (N/8, 1)  4 Hz, degrees Celsius},
                'chest': {'ACC':  (M, 3)    RespiBAN, 700 Hz, g
                          'ECG':  (M, 1)    700 Hz, mV
                          'Resp': (M, 1)    700 Hz, % (chest band stretch)}},
     'label':         float (L,)            reference heart rate [bpm] per 8 s window, 2 s shift
     'activity':      (N/8, 1)              activity id at 4 Hz, 0..8 (muse_common.activities)
     'questionnaire': {'AGE', 'Gender', 'HEIGHT', 'WEIGHT', 'SKIN', 'SPORT'}
     'subject':       'S<i>'}

``label[j]`` is the ECG-derived heart rate of BVP samples ``[128 j, 128 j + 512)``, i.e. of
the data-time window ``[2 j, 2 j + 8)`` s, so ``L = floor((N_bvp - 512) / 128) + 1``.

This module imports no rclpy: the encoder's training code, the converter and the replay
node all read subjects through :func:`load_subject`.
"""

import math
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from muse_common.activities import NUM_ACTIVITIES
from muse_common.profile import Profile


ACC_HZ = 32          # wrist accelerometer (Empatica E4)
BVP_HZ = 64          # wrist photoplethysmogram
EDA_HZ = 4           # wrist electrodermal activity
TEMP_HZ = 4          # wrist skin temperature
ACTIVITY_HZ = 4      # activity labels
CHEST_HZ = 700       # RespiBAN chest signals (ECG, Resp, ACC) and the rpeaks indices
HR_WINDOW_S = 8      # reference heart rate: window length ...
HR_SHIFT_S = 2       # ... and shift
ACC_UNITS_PER_G = 64.0   # E4 accelerometer counts per g
G = 9.80665          # standard gravity [m/s^2]

TOP_LEVEL_KEYS = ('rpeaks', 'signal', 'label', 'activity', 'questionnaire', 'subject')
WRIST_KEYS = ('ACC', 'BVP', 'EDA', 'TEMP')


class DaliaFormatError(ValueError):
    """A file is not a well-formed PPG-DaLiA subject; the message names the file and field."""

    def __init__(self, path, field_name, problem):
        self.path = Path(path)
        self.field = field_name
        self.problem = problem
        where = f" field '{field_name}'" if field_name else ''
        super().__init__(f'{self.path}:{where} {problem}')


def hr_label_count(n_bvp):
    """Number of reference heart-rate windows over ``n_bvp`` BVP samples (0 if under 8 s)."""
    window, shift = HR_WINDOW_S * BVP_HZ, HR_SHIFT_S * BVP_HZ
    return 0 if n_bvp < window else (n_bvp - window) // shift + 1


@dataclass
class Subject:
    """One PPG-DaLiA subject, in the units MUSE uses.

    ``acc_g`` is the wrist accelerometer converted from 1/64 g counts to g (float32, (N, 3),
    32 Hz); ``bvp`` (64 Hz), ``eda`` and ``temp`` (4 Hz) are 1-D float64; ``activity`` holds
    int ids at 4 Hz; ``hr_bpm`` the reference heart rate per 8 s window shifted by 2 s.
    Data time 0 is the first wrist sample; ``duration_s`` is the accelerometer's length.
    """
    name: str
    path: Path
    acc_g: np.ndarray
    bvp: np.ndarray
    eda: np.ndarray
    temp: np.ndarray
    activity: np.ndarray
    hr_bpm: np.ndarray
    profile: Profile = field(default_factory=Profile)
    duration_s: float = 0.0

    def activity_at(self, t_s):
        """Activity id at data time ``t_s``: sample ``floor(4 t)``, the 4 Hz label whose
        interval ``[k/4, (k+1)/4)`` contains t. Times beyond the ends clamp to the first or
        last label."""
        k = int(math.floor(t_s * ACTIVITY_HZ))
        return int(self.activity[min(max(k, 0), len(self.activity) - 1)])

    def heart_rate_at(self, t_s):
        """Reference heart rate known at data time ``t_s``: the label of the latest 8 s
        window that ends at or before t (window j ends at ``2 j + 8``), i.e. what a causal
        observer has at t. NaN before the first window closes (t < 8 s)."""
        j = self.hr_index_at(t_s)
        return math.nan if j < 0 else float(self.hr_bpm[j])

    def hr_index_at(self, t_s):
        """Index of the latest heart-rate window ending at or before ``t_s`` (-1 if none)."""
        if len(self.hr_bpm) == 0 or t_s < HR_WINDOW_S:
            return -1
        return min(int(math.floor((t_s - HR_WINDOW_S) / HR_SHIFT_S + 1e-9)), len(self.hr_bpm) - 1)

    @staticmethod
    def hr_window_end_s(j):
        """Data time at which heart-rate window ``j`` closes."""
        return HR_SHIFT_S * j + HR_WINDOW_S


# Only numpy's own reconstruction helpers may be called while unpickling: a subject file is
# data, and a foreign pickle must not run code.
_ALLOWED_GLOBALS = {
    ('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
    ('numpy.core.multiarray', 'scalar'), ('numpy._core.multiarray', 'scalar'),
    ('numpy', 'ndarray'), ('numpy', 'dtype'), ('_codecs', 'encode'),
    ('copy_reg', '_reconstructor'), ('copyreg', '_reconstructor'),
    ('__builtin__', 'object'), ('builtins', 'object'), ('__builtin__', 'bytes'), ('builtins', 'bytes'),
    ('collections', 'OrderedDict'),
}


class _DataOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f'the pickle references {module}.{name}, which a PPG-DaLiA subject never contains')


def read_pickle(path):
    """Unpickle a Python-2 era data pickle safely (numpy arrays and builtins only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'{path}: no such PPG-DaLiA subject file')
    if path.stat().st_size == 0:
        raise DaliaFormatError(path, None, 'is empty (expected a PPG-DaLiA S<i>.pkl pickle)')
    with open(path, 'rb') as f:
        # A dict pickle starts with PROTO (protocol 2+), MARK or EMPTY_DICT (protocols 0/1);
        # anything else is not a pickle at all, rather than a damaged one.
        head = f.read(1)
        if head not in (b'\x80', b'(', b'}'):
            raise DaliaFormatError(path, None, f'is not a pickle (starts with {head!r}; expected '
                                   'a PPG-DaLiA S<i>.pkl)')
        f.seek(0)
        try:
            return _DataOnlyUnpickler(f, encoding='latin1').load()
        except EOFError as exc:
            raise DaliaFormatError(path, None, f'is truncated (pickle ended early: {exc})') from exc
        except pickle.UnpicklingError as exc:
            problem = str(exc)
            if 'truncated' in problem or 'ran out' in problem.lower():
                problem = f'is truncated ({problem})'
            else:
                problem = f'is not a PPG-DaLiA pickle ({problem})'
            raise DaliaFormatError(path, None, problem) from exc
        except (ValueError, TypeError, AttributeError, IndexError, KeyError,
                UnicodeDecodeError, MemoryError) as exc:
            raise DaliaFormatError(path, None, f'is a corrupt or truncated pickle ({exc!r})') from exc


def _mapping(path, container, key, where):
    if not isinstance(container, dict):
        raise DaliaFormatError(path, where, f'is a {type(container).__name__}, expected a dict')
    if key not in container:
        raise DaliaFormatError(path, f'{where}.{key}' if where else key,
                               f'is missing (found keys: {sorted(map(str, container))})')
    return container[key]


def _array(path, value, field_name, *, columns=None, integral=False):
    """A numeric array of shape (n,) or (n, 1) [or (n, columns)], finite, as float64."""
    if not isinstance(value, np.ndarray):
        raise DaliaFormatError(path, field_name,
                               f'is a {type(value).__name__}, expected a numpy array')
    if value.dtype.kind not in 'biuf':
        raise DaliaFormatError(path, field_name, f'has dtype {value.dtype}, expected numbers')
    if columns is None:
        if value.ndim == 2 and value.shape[1] == 1:
            value = value[:, 0]
        if value.ndim != 1:
            raise DaliaFormatError(path, field_name,
                                   f'has shape {value.shape}, expected (n,) or (n, 1)')
    elif value.ndim != 2 or value.shape[1] != columns:
        raise DaliaFormatError(path, field_name,
                               f'has shape {value.shape}, expected (n, {columns})')
    if value.shape[0] == 0:
        raise DaliaFormatError(path, field_name, 'is empty')
    out = value.astype(np.float64, copy=False)
    if not np.all(np.isfinite(out)):
        raise DaliaFormatError(path, field_name, 'contains NaN or infinite values')
    if integral and not np.all(out == np.round(out)):
        raise DaliaFormatError(path, field_name, 'contains non-integer values, expected ids')
    return out


def _check_length(path, field_name, n, expected, rate_hz, acc_n):
    # Devices stop within a sample of each other; anything beyond one second of mismatch is
    # a different recording or a cut file.
    if abs(n - expected) > rate_hz:
        raise DaliaFormatError(
            path, field_name,
            f'has {n} samples, expected {expected} ({rate_hz} Hz for the {acc_n} samples of '
            f'32 Hz wrist ACC)')


def _profile(path, quest):
    def number(key, kind, unknown):
        value = _mapping(path, quest, key, 'questionnaire')
        if isinstance(value, np.ndarray) and value.size == 1:
            value = value.item()
        if isinstance(value, str):
            value = value.strip()
            if value == '':
                return unknown
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise DaliaFormatError(path, f'questionnaire.{key}',
                                   f'is {value!r}, expected a number') from None
        if math.isnan(number):
            return unknown
        if number < 0:
            raise DaliaFormatError(path, f'questionnaire.{key}', f'is {number}, expected >= 0')
        return kind(round(number)) if kind is int else kind(number)

    gender = _mapping(path, quest, 'Gender', 'questionnaire')
    if isinstance(gender, bytes):
        gender = gender.decode('latin1')
    if not isinstance(gender, str):
        raise DaliaFormatError(path, 'questionnaire.Gender',
                               f"is {gender!r}, expected 'm' or 'f'")
    sex = {'m': 'm', 'male': 'm', 'f': 'f', 'female': 'f', '': ''}.get(gender.strip().lower())
    if sex is None:
        raise DaliaFormatError(path, 'questionnaire.Gender', f"is {gender!r}, expected 'm' or 'f'")
    return Profile(age=number('AGE', int, 0), sex=sex,
                   height_cm=number('HEIGHT', float, math.nan),
                   weight_kg=number('WEIGHT', float, math.nan),
                   skin_type=number('SKIN', int, 0), sport=number('SPORT', int, 0))


def subject_from_dict(data, path):
    """Validate an unpickled PPG-DaLiA dict and convert it to a :class:`Subject`."""
    path = Path(path)
    if not isinstance(data, dict):
        raise DaliaFormatError(path, None, f'holds a {type(data).__name__}, expected the '
                               f'PPG-DaLiA dict with keys {list(TOP_LEVEL_KEYS)}')
    for key in TOP_LEVEL_KEYS:
        _mapping(path, data, key, '')
    signal = data['signal']
    wrist = _mapping(path, signal, 'wrist', 'signal')
    for key in WRIST_KEYS:
        _mapping(path, wrist, key, 'signal.wrist')

    acc_raw = _array(path, wrist['ACC'], 'signal.wrist.ACC', columns=3)
    n_acc = acc_raw.shape[0]
    bvp = _array(path, wrist['BVP'], 'signal.wrist.BVP')
    eda = _array(path, wrist['EDA'], 'signal.wrist.EDA')
    temp = _array(path, wrist['TEMP'], 'signal.wrist.TEMP')
    activity = _array(path, data['activity'], 'activity', integral=True)
    _check_length(path, 'signal.wrist.BVP', len(bvp), n_acc * BVP_HZ // ACC_HZ, BVP_HZ, n_acc)
    _check_length(path, 'signal.wrist.EDA', len(eda), n_acc * EDA_HZ // ACC_HZ, EDA_HZ, n_acc)
    _check_length(path, 'signal.wrist.TEMP', len(temp), n_acc * TEMP_HZ // ACC_HZ, TEMP_HZ, n_acc)
    _check_length(path, 'activity', len(activity), n_acc * ACTIVITY_HZ // ACC_HZ, ACTIVITY_HZ, n_acc)
    bad = (activity < 0) | (activity >= NUM_ACTIVITIES)
    if bad.any():
        raise DaliaFormatError(
            path, 'activity', f'has ids {sorted(set(activity[bad].astype(int).tolist()))[:5]} '
            f'outside 0..{NUM_ACTIVITIES - 1}')

    label = _array(path, data['label'], 'label')
    expected = hr_label_count(len(bvp))
    # A window or two may be lost where the ECG and E4 recordings end a little apart.
    if not expected - 2 <= len(label) <= expected:
        raise DaliaFormatError(
            path, 'label', f'has {len(label)} windows, expected {expected} = floor((N_bvp - 512)'
            f' / 128) + 1 for N_bvp = {len(bvp)}')
    if np.any(label <= 0):
        raise DaliaFormatError(path, 'label', 'contains heart rates <= 0 bpm')

    name = data['subject']
    if isinstance(name, bytes):
        name = name.decode('latin1')
    if not isinstance(name, str) or not name.strip():
        raise DaliaFormatError(path, 'subject', f"is {name!r}, expected a name like 'S1'")
    profile = _profile(path, data['questionnaire'])

    return Subject(
        name=name.strip(), path=path, acc_g=(acc_raw / ACC_UNITS_PER_G).astype(np.float32),
        bvp=bvp, eda=eda, temp=temp, activity=activity.astype(np.int64), hr_bpm=label,
        profile=profile, duration_s=n_acc / ACC_HZ)


def load_subject(path):
    """Load and validate one PPG-DaLiA subject pickle.

    Raises FileNotFoundError for a missing file and :class:`DaliaFormatError` (naming the
    file and the field) for anything that is not a well-formed subject.
    """
    path = Path(path)
    return subject_from_dict(read_pickle(path), path)


def _natural_key(path):
    return [int(part) if part.isdigit() else part for part in re.split(r'(\d+)', path.stem)] + [str(path)]


def find_subjects(folder):
    """Subject pickles under ``folder``: the dataset's layout ``S<i>/S<i>.pkl`` and flat
    ``*.pkl`` files, in natural order (S2 before S10)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f'{folder}: no such folder of PPG-DaLiA subjects')
    found = {p.resolve(): p for p in folder.glob('*.pkl') if p.is_file()}
    for p in folder.glob('*/*.pkl'):
        if p.is_file() and p.stem == p.parent.name:
            found.setdefault(p.resolve(), p)
    return sorted(found.values(), key=_natural_key)
