"""Synthetic PPG-DaLiA subjects, written in exactly the dataset's pickle format.

The real data cannot be downloaded here, so tests, the demo and the default encoder are
built on subjects made by this module. What it models, and why:

* The PPG-DaLiA protocol (sitting, stairs, table soccer, cycling, driving, lunch break,
  walking, working, in that order, with transient periods between them) with per-subject
  jitter on the durations; ``balanced=True`` gives equal time to every activity, in random
  order, for classifier training.
* Wrist motion as physics: each activity sets a forearm posture (pitch/roll/yaw, so gravity
  lands on the right axes) plus body accelerations in a forward/left/up frame; the sensor
  reads ``R(t)^T (a + g)``. The activity signatures are the ones a wrist sees: gait near
  2 Hz with harmonics and arm swing at the stride frequency (walking), slower steps with
  vertical emphasis and landings (stairs), pedalling at 0.9-1.5 Hz with quiet hands and road
  vibration (cycling), steering rotations and engine/road vibration (driving), hand-to-mouth
  gestures and cutting (lunch), keystrokes, mouse and reaching (working), fast flicks
  (table soccer), stillness with fidgets (sitting) and stop-and-go handling (transient).
  Each subject draws its own cadences, amplitudes, postures and sensor mount, so windows
  vary across subjects and seeds. The E4's 1/64 g quantisation and +-2 g range apply.
* Heart rate follows the activity through a first-order lag (rise ~20-35 s, recovery
  ~40-70 s) plus slow noise and respiratory sinus arrhythmia; R-peaks are drawn from it,
  ``label`` is computed from them the way the dataset's reference is (mean R-R interval in
  8 s windows shifted by 2 s) and BVP carries a pulse per beat with motion artefacts.
* 700 Hz chest signals (ECG with PQRST per R-peak, respiration, chest ACC) are generated
  cheaply from the same beats, in the real shapes and dtypes.

Deterministic: the same (subject_index, minutes, seed, balanced) gives identical arrays.
"""

import argparse
import math
import pickle
import sys
from pathlib import Path

import numpy as np

from muse_common import activities
from muse_sensors import dalia

# PPG-DaLiA protocol: activity and nominal duration [min] (readme, "Data collection protocol").
PROTOCOL = ((1, 10.0), (2, 5.0), (3, 5.0), (4, 8.0), (5, 15.0), (6, 30.0), (7, 10.0), (8, 20.0))
TRANSIENT_NOMINAL_MIN = 3.0

# Heart-rate rise above rest per activity [bpm] (transient, sitting, ..., working).
HR_OFFSET_BPM = np.array([15.0, 0.0, 45.0, 25.0, 50.0, 8.0, 12.0, 30.0, 3.0])
OUTDOOR = np.array([0, 0, 0, 0, 1, 0, 0, 1, 0], dtype=float)    # cools the skin
AROUSAL = np.array([0.4, 0.0, 0.8, 0.9, 0.7, 0.4, 0.2, 0.5, 0.2])  # drives skin conductance

PICKLE_PROTOCOL = 2   # the dataset's files come from Python 2


# ----------------------------------------------------------------------------- helpers

def _shaped_noise(rng, n, fs, gain):
    """Gaussian noise whose spectrum is weighted by ``gain(freqs [Hz])``, unit std."""
    if n < 2:
        return np.zeros(n)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum *= gain(np.fft.rfftfreq(n, 1.0 / fs))
    out = np.fft.irfft(spectrum, n)
    std = out.std()
    return out / std if std > 0 else out


def _smooth_noise(rng, n, fs, cutoff_hz):
    """Gaussian noise low-passed at ``cutoff_hz`` (Gaussian spectral roll-off, no DC), unit std."""
    return _shaped_noise(rng, n, fs, lambda f: np.exp(-0.5 * (f / cutoff_hz) ** 2) * (f > 0))


def _band_noise(rng, n, fs, low_hz, high_hz):
    """Gaussian noise band-limited to [low_hz, high_hz], unit std."""
    return _shaped_noise(rng, n, fs, lambda f: (f >= low_hz) & (f <= high_hz))


def _edge_ramp(n, width, offset=0):
    """Fade-in and fade-out weights of ``n`` samples: 0 -> 1 over ``width`` samples at each
    end (starting from ``offset / width``), 1 in between."""
    distance = np.minimum(np.arange(n), np.arange(n)[::-1]) + offset
    return np.minimum(1.0, distance / width)


def _moving_average(x, width):
    """Centred moving average over ``width`` samples (fewer for short signals), same length."""
    width = max(1, min(int(width), len(x)))
    return np.convolve(x, np.ones(width) / width, mode='same')


def _events(rng, n, fs, rate_hz):
    """Sample indices of a Poisson process with ``rate_hz`` events per second."""
    count = rng.poisson(rate_hz * n / fs)
    return np.sort(rng.integers(0, max(n, 1), size=count))


def _raised_cosine(length):
    """A 0..1..0 pulse of ``length`` samples."""
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(length) / max(length - 1, 1))


def _add_pulse(target, start, shape, scale=1.0):
    """Add ``scale * shape`` into ``target`` from ``start``, clipped to the array."""
    end = min(start + len(shape), len(target))
    if start < end:
        target[start:end] += scale * shape[:end - start]


def _cadence_phase(rng, n, fs, freq_hz, drift=0.03):
    """Phase [rad] of a rhythm near ``freq_hz`` whose rate wanders by ``drift`` (relative)."""
    rate = freq_hz * (1.0 + drift * _smooth_noise(rng, n, fs, 0.05))
    return 2 * np.pi * np.cumsum(rate) / fs + rng.uniform(0, 2 * np.pi)


def _deg(x):
    return np.deg2rad(x)


class _Motion:
    """Forearm angles (roll, pitch, yaw [rad]) and body acceleration (forward, left, up [g])
    for one activity segment, plus the segment's base posture kept apart so posture changes
    between segments can be ramped without smoothing the fast motion."""

    def __init__(self, n):
        self.n = n
        self.base = np.zeros(3)                 # roll, pitch, yaw of the resting posture
        self.angles = np.zeros((n, 3))          # dynamic angles around the base
        self.acc = np.zeros((n, 3))             # forward, left, up


# --------------------------------------------------------------- subject-level traits

def _traits(rng):
    """Per-subject constants: how this person moves, wears the sensor and responds."""
    return {
        'walk_hz': rng.uniform(1.72, 2.1),       # steps per second
        'stairs_hz': rng.uniform(1.25, 1.65),
        'pedal_hz': rng.uniform(0.9, 1.5),       # crank revolutions per second
        'swing_deg': rng.uniform(14, 30),        # arm swing while walking
        'impact_g': rng.uniform(0.18, 0.34),     # step impacts at the wrist
        'vigour': rng.uniform(0.8, 1.25),        # overall motion amplitude
        'noise_g': rng.uniform(0.004, 0.012),    # sensor noise
        'posture_deg': rng.normal(0, 8, size=(activities.NUM_ACTIVITIES, 3)),
        'mount_deg': rng.normal(0, 8, size=3),   # strap misalignment
        'eat_rate': rng.uniform(1 / 14, 1 / 6),  # bites per second
        'type_rate': rng.uniform(3.5, 7.0),      # keystrokes per second while typing
        'road_g': rng.uniform(0.04, 0.09),       # bicycle road vibration
        'flick_rate': rng.uniform(0.5, 1.1),     # table soccer shots per second
    }


# ------------------------------------------------------------- activity motion models

FS = dalia.ACC_HZ


def _sitting(rng, n, tr):
    m = _Motion(n)
    m.base = _deg(np.array([45.0, -20.0, 0.0]))     # forearm resting on the thigh
    m.angles += _deg(4.0) * np.stack([_smooth_noise(rng, n, FS, 0.02) for _ in range(3)], 1)
    # Occasional posture shifts and fidgets: a few seconds of slow, larger movement.
    for start in _events(rng, n, FS, 1 / 40):
        length = int(rng.uniform(1.0, 3.0) * FS)
        shape = _raised_cosine(length)
        for axis in range(2):
            _add_pulse(m.angles[:, axis], start, shape, _deg(rng.normal(0, 15)))
        wobble = np.sin(2 * np.pi * rng.uniform(1, 2) * np.arange(length) / FS) * shape
        _add_pulse(m.acc[:, rng.integers(0, 3)], start, wobble, rng.uniform(0.03, 0.1))
    m.acc[:, 2] += 0.003 * np.sin(2 * np.pi * 0.25 * np.arange(n) / FS)  # breathing
    return m


def _gait(rng, n, step_hz, impact_g, swing_deg, harmonics):
    """Shared by walking, stairs and transient walking: steps at ``step_hz`` with harmonic
    impacts (up), forward/back arm-swing acceleration and swing angle at the stride rate."""
    m = _Motion(n)
    phase = _cadence_phase(rng, n, FS, step_hz)
    up = np.zeros(n)
    for k, weight in enumerate(harmonics, start=1):
        up += weight * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    m.acc[:, 2] = impact_g * up
    stride = phase / 2
    m.acc[:, 0] = 0.6 * impact_g * np.sin(stride + 0.3) + 0.15 * impact_g * np.sin(phase)
    m.acc[:, 1] = 0.2 * impact_g * np.sin(stride + rng.uniform(0, np.pi))
    m.angles[:, 1] = _deg(swing_deg) * np.sin(stride)
    m.angles[:, 0] = _deg(0.3 * swing_deg) * np.sin(stride + 1.0)
    return m


def _walking(rng, n, tr):
    m = _gait(rng, n, tr['walk_hz'], tr['impact_g'], tr['swing_deg'], (1.0, 0.45, 0.2, 0.1))
    m.base = _deg(np.array([10.0, -78.0, 0.0]))
    # Turns now and then: centripetal acceleration and heading change.
    for start in _events(rng, n, FS, 1 / 25):
        shape = _raised_cosine(int(rng.uniform(2, 4) * FS))
        _add_pulse(m.acc[:, 1], start, shape, rng.choice([-1, 1]) * rng.uniform(0.1, 0.25))
    return m


def _stairs(rng, n, tr):
    m = _Motion(n)
    m.base = _deg(np.array([15.0, -70.0, 0.0]))
    pos = 0
    ascending = bool(rng.integers(0, 2))
    while pos < n:
        flight = int(rng.uniform(7, 13) * FS)
        landing = int(rng.uniform(2, 4) * FS)
        seg = min(flight, n - pos)
        # Descending lands harder (stronger harmonics); ascending lifts the body each step.
        harmonics = (1.0, 0.35, 0.15) if ascending else (0.9, 0.6, 0.3, 0.15)
        swing = tr['swing_deg'] * (0.15 if rng.random() < 0.5 else 0.35)  # hand on the rail
        impact = tr['impact_g'] * (1.35 if ascending else 1.6)
        flight_motion = _gait(rng, seg, tr['stairs_hz'] * rng.uniform(0.95, 1.05), impact,
                              swing, harmonics)
        flight_motion.acc[:, 0] *= 0.5   # little forward arm swing on stairs
        window = _edge_ramp(seg, 0.5 * FS)
        m.acc[pos:pos + seg] += flight_motion.acc * window[:, None]
        m.angles[pos:pos + seg] += flight_motion.angles * window[:, None]
        m.angles[pos:pos + seg, 1] += _deg(rng.normal(0, 5))
        pos += seg
        seg = min(landing, n - pos)
        if seg > 0:
            # Landing: a few slow steps while turning round (centripetal pull, rotation).
            shape = _raised_cosine(seg)
            turn = rng.choice([-1, 1])
            m.acc[pos:pos + seg, 1] += turn * rng.uniform(0.15, 0.3) * shape
            m.acc[pos:pos + seg, 2] += 0.15 * tr['impact_g'] * np.sin(
                2 * np.pi * 0.8 * tr['stairs_hz'] * np.arange(seg) / FS)
            m.angles[pos:pos + seg, 2] += turn * _deg(60) * shape
            pos += seg
        ascending = not ascending
    return m


def _table_soccer(rng, n, tr):
    m = _Motion(n)
    m.base = _deg(np.array([-35.0, 0.0, 20.0]))
    # Sliding the rods in and out and shifting on the feet between shots.
    m.acc[:, 0] += 0.12 * _smooth_noise(rng, n, FS, 1.5)
    m.acc[:, 1] += 0.08 * _smooth_noise(rng, n, FS, 1.0)
    m.angles[:, 0] += _deg(12) * _smooth_noise(rng, n, FS, 0.8)
    for start in _events(rng, n, FS, tr['flick_rate']):
        length = int(rng.uniform(0.2, 0.5) * FS)
        freq = rng.uniform(3.0, 6.0)
        tt = np.arange(length) / FS
        decay = np.exp(-tt / (0.4 * length / FS)) * _raised_cosine(length) ** 0.5
        spin = np.sin(2 * np.pi * freq * tt) * decay
        _add_pulse(m.angles[:, 0], start, spin, _deg(rng.uniform(40, 100)))
        _add_pulse(m.acc[:, 0], start, spin, rng.uniform(0.4, 1.3))
        _add_pulse(m.acc[:, 1], start, np.cos(2 * np.pi * freq * tt) * decay, rng.uniform(0.2, 0.6))
    return m


def _cycling(rng, n, tr):
    m = _Motion(n)
    m.base = _deg(np.array([-20.0, -25.0, 10.0]))
    crank = _cadence_phase(rng, n, FS, tr['pedal_hz'], drift=0.05)
    m.acc[:, 1] += 0.05 * np.sin(crank)                       # body sways once per revolution
    m.acc[:, 2] += 0.04 * np.sin(2 * crank + 0.5)             # one push per pedal stroke
    m.acc[:, 0] += 0.02 * np.sin(2 * crank)
    m.angles[:, 0] += _deg(2.5) * np.sin(crank + 0.7)
    roughness = 1.0 + 0.4 * _smooth_noise(rng, n, FS, 0.05)
    m.acc[:, 2] += tr['road_g'] * np.clip(roughness, 0.3, None) * _band_noise(rng, n, FS, 5.0, 15.0)
    m.acc[:, 0] += 0.4 * tr['road_g'] * _band_noise(rng, n, FS, 5.0, 15.0)
    for start in _events(rng, n, FS, 1 / 6):                  # kerbs and potholes
        tt = np.arange(int(0.5 * FS)) / FS
        _add_pulse(m.acc[:, 2], start, np.exp(-tt / 0.08) * np.sin(2 * np.pi * 9 * tt),
                   rng.uniform(0.2, 0.6))
    m.angles[:, 2] += _deg(3) * _smooth_noise(rng, n, FS, 0.2)   # steering
    m.acc[:, 0] += 0.05 * _smooth_noise(rng, n, FS, 0.05)       # speeding up, braking
    return m


def _driving(rng, n, tr):
    m = _Motion(n)
    m.base = _deg(np.array([-50.0, 10.0, 30.0]))
    m.angles[:, 0] += _deg(6) * _smooth_noise(rng, n, FS, 0.15)   # lane keeping
    for start in _events(rng, n, FS, 1 / 30):                     # turns
        length = int(rng.uniform(3, 7) * FS)
        shape = _raised_cosine(length)
        turn = rng.choice([-1, 1])
        _add_pulse(m.angles[:, 0], start, shape, turn * _deg(rng.uniform(40, 90)))
        _add_pulse(m.acc[:, 1], start, shape, turn * rng.uniform(0.1, 0.3))
    for start in _events(rng, n, FS, 1 / 60):                     # gear lever, mirrors
        length = int(rng.uniform(1.5, 3.5) * FS)
        _add_pulse(m.angles[:, 1], start, _raised_cosine(length), _deg(rng.uniform(-35, -15)))
    m.acc[:, 0] += 0.1 * _smooth_noise(rng, n, FS, 0.04)         # accelerating, braking
    m.acc[:, 2] += 0.02 * _band_noise(rng, n, FS, 1.0, 3.0)      # body bounce on the springs
    m.acc[:, 2] += rng.uniform(0.01, 0.025) * _band_noise(rng, n, FS, 8.0, 15.9)  # engine, road
    m.acc[:, 1] += 0.008 * _band_noise(rng, n, FS, 8.0, 15.9)
    return m


def _lunch_break(rng, n, tr):
    m = _Motion(n)
    m.base = _deg(np.array([70.0, 10.0, 0.0]))      # holding cutlery, thumb up
    m.angles[:, :2] += _deg(6) * np.stack([_smooth_noise(rng, n, FS, 0.4) for _ in range(2)], 1)
    # Hands are rarely still at a meal: handling food, cups and cutlery all the time.
    m.acc += 0.06 * np.stack([_band_noise(rng, n, FS, 0.8, 4.0) for _ in range(3)], 1)
    for start in _events(rng, n, FS, tr['eat_rate']):             # hand to mouth and back
        length = int(rng.uniform(1.5, 3.0) * FS)
        shape = _raised_cosine(length)
        _add_pulse(m.angles[:, 1], start, shape, _deg(rng.uniform(55, 90)))
        _add_pulse(m.angles[:, 0], start, shape, _deg(rng.uniform(10, 40)))
        _add_pulse(m.acc[:, 2], start, np.gradient(shape) * FS / 10, rng.uniform(0.05, 0.12))
    for start in _events(rng, n, FS, 1 / 8):                      # cutting, scooping
        length = int(rng.uniform(1.5, 4.0) * FS)
        cut = np.sin(2 * np.pi * rng.uniform(2.5, 4.0) * np.arange(length) / FS)
        _add_pulse(m.acc[:, 0], start, cut * _raised_cosine(length) ** 0.3, rng.uniform(0.06, 0.15))
    return m


def _working(rng, n, tr):
    m = _Motion(n)
    m.base = _deg(np.array([-5.0, 5.0, 0.0]))       # palm down on keyboard or mouse
    # Alternate typing, mouse work and reading (hands still) in stretches of seconds.
    pos = 0
    while pos < n:
        length = min(int(rng.uniform(5, 30) * FS), n - pos)
        mode = rng.choice(['type', 'mouse', 'read'], p=[0.55, 0.35, 0.1])
        if mode == 'type':
            strokes = pos + _events(rng, length, FS, tr['type_rate'])
            for s in strokes:
                tt = np.arange(4) / FS
                _add_pulse(m.acc[:, 2], s, np.exp(-tt / 0.03), -rng.uniform(0.02, 0.06))
                _add_pulse(m.acc[:, 0], s, np.exp(-tt / 0.03), rng.normal(0, 0.02))
            m.acc[pos:pos + length, :2] += 0.01 * np.stack(
                [_band_noise(rng, length, FS, 3.0, 10.0) for _ in range(2)], 1)
        elif mode == 'mouse':
            m.angles[pos:pos + length, 0] += _deg(-20)
            m.acc[pos:pos + length, 0] += 0.03 * _smooth_noise(rng, length, FS, 1.5)
            m.acc[pos:pos + length, 1] += 0.03 * _smooth_noise(rng, length, FS, 1.5)
        else:
            m.angles[pos:pos + length, 1] += _deg(rng.uniform(10, 40))
        pos += length
    m.angles[:, :2] += _deg(3) * np.stack([_smooth_noise(rng, n, FS, 0.1) for _ in range(2)], 1)
    for start in _events(rng, n, FS, 1 / 50):                     # reaching for something
        length = int(rng.uniform(1.0, 2.5) * FS)
        shape = _raised_cosine(length)
        _add_pulse(m.angles[:, 1], start, shape, _deg(rng.uniform(15, 40)))
        _add_pulse(m.acc[:, 0], start, np.gradient(shape) * FS / 10, rng.uniform(0.05, 0.15))
    # Ramp the per-mode posture offsets so mode switches are movements, not jumps.
    for axis in range(2):
        m.angles[:, axis] = _moving_average(m.angles[:, axis], 0.5 * FS)
    return m


def _transient(rng, n, tr):
    m = _Motion(n)
    m.base = _deg(np.array([10.0, -75.0, 0.0]))
    pos = 0
    previous = None
    while pos < n:
        # Never two walks in a row: transient walking is stop-and-go, not a steady gait.
        if previous == 'walk':
            choices, weights = ['stand', 'handle'], np.array([0.45, 0.55])
        else:
            choices, weights = ['walk', 'stand', 'handle'], np.array([0.45, 0.25, 0.3])
        mode = rng.choice(choices, p=weights / weights.sum())
        previous = mode
        length = min(int(rng.uniform(2, 4.5 if mode == 'walk' else 6) * FS), n - pos)
        if mode == 'walk':
            # Short, hesitant walks: slower and weaker than steady walking.
            walk = _gait(rng, length, tr['walk_hz'] * rng.uniform(0.75, 0.9),
                         tr['impact_g'] * rng.uniform(0.5, 0.8), tr['swing_deg'] * 0.6,
                         (1.0, 0.3, 0.1))
            ramp = _edge_ramp(length, 0.7 * FS)
            m.acc[pos:pos + length] += walk.acc * ramp[:, None]
            m.angles[pos:pos + length] += walk.angles * ramp[:, None]
        elif mode == 'handle':
            # Carrying, opening doors, putting devices away: slow large arm movements.
            shape = _raised_cosine(length)
            for axis in range(3):
                m.angles[pos:pos + length, axis] += _deg(rng.uniform(20, 60)) * shape * \
                    _smooth_noise(rng, length, FS, rng.uniform(0.4, 1.0))
            m.acc[pos:pos + length] += 0.12 * shape[:, None] * np.stack(
                [_smooth_noise(rng, length, FS, 2.0) for _ in range(3)], 1)
        else:
            m.angles[pos:pos + length, 1] += _deg(rng.normal(0, 10))
            m.acc[pos:pos + length, 2] += 0.01 * _smooth_noise(rng, length, FS, 0.5)
        pos += length
    return m


_MODELS = (_transient, _sitting, _stairs, _table_soccer, _cycling, _driving, _lunch_break,
           _walking, _working)


# -------------------------------------------------------------------- the timeline

def _schedule(rng, total_s, balanced):
    """Activity segments [(activity_id, duration_s)] filling ``total_s`` seconds."""
    if balanced:
        order = list(rng.permutation(np.arange(1, activities.NUM_ACTIVITIES)))
        main = [(int(a), rng.uniform(0.8, 1.2)) for a in order]
        # Transient gets about one activity's share in all, split over its periods.
        transient_weight = rng.uniform(0.8, 1.2, size=len(main) + 1) / (len(main) + 1)
    else:
        main = [(a, minutes * rng.uniform(0.75, 1.25)) for a, minutes in PROTOCOL]
        transient_weight = TRANSIENT_NOMINAL_MIN * rng.uniform(0.4, 1.6, size=len(main) + 1)
    # Transient periods at the start, between activities and at the end.
    plan = [(0, transient_weight[0])]
    for (activity, weight), tw in zip(main, transient_weight[1:]):
        plan += [(activity, weight), (0, tw)]
    weights = np.array([w for _, w in plan])
    durations = weights / weights.sum() * total_s
    # Whole 4 Hz label steps; the remainder goes to the last segment.
    quarter = np.floor(durations * dalia.ACTIVITY_HZ) / dalia.ACTIVITY_HZ
    quarter[-1] += total_s - quarter.sum()
    return [(a, float(d)) for (a, _), d in zip(plan, quarter) if d > 0]


def _rotation_matrices(roll, pitch, yaw):
    """(n, 3, 3) matrices whose columns are the sensor axes in the body frame
    (forward, left, up): yaw about up, then pitch (x upwards), then roll about x."""
    cr, sr = np.cos(roll), np.sin(roll)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cy, sy = np.cos(yaw), np.sin(yaw)
    n = len(roll)
    rz = np.zeros((n, 3, 3)); ry = np.zeros((n, 3, 3)); rx = np.zeros((n, 3, 3))
    rz[:, 0, 0], rz[:, 0, 1], rz[:, 1, 0], rz[:, 1, 1], rz[:, 2, 2] = cy, -sy, sy, cy, 1
    # Pitch up by +p: x=(1,0,0) -> (cos p, 0, sin p).
    ry[:, 0, 0], ry[:, 0, 2], ry[:, 2, 0], ry[:, 2, 2], ry[:, 1, 1] = cp, -sp, sp, cp, 1
    rx[:, 1, 1], rx[:, 1, 2], rx[:, 2, 1], rx[:, 2, 2], rx[:, 0, 0] = cr, -sr, sr, cr, 1
    return rz @ ry @ rx


def _wrist_acc_g(rng, activity_acc, tr):
    """Wrist acceleration in g (n, 3) for a per-sample activity sequence at 32 Hz."""
    n = len(activity_acc)
    base = np.zeros((n, 3))
    angles = np.zeros((n, 3))
    body = np.zeros((n, 3))
    change = np.flatnonzero(np.diff(activity_acc)) + 1
    bounds = np.concatenate([[0], change, [n]])
    fade = int(0.5 * FS)
    for start, end in zip(bounds[:-1], bounds[1:]):
        activity = int(activity_acc[start])
        motion = _MODELS[activity](rng, end - start, tr)
        seg = end - start
        edge = _edge_ramp(seg, fade, offset=1)
        base[start:end] = motion.base + _deg(tr['posture_deg'][activity])
        angles[start:end] = motion.angles * edge[:, None]
        body[start:end] = tr['vigour'] * motion.acc * edge[:, None]
    # Posture changes between activities take a second or two, not one sample.
    ramp = int(1.5 * FS)
    padded = np.pad(base, ((ramp, ramp), (0, 0)), mode='edge')
    base = np.stack([_moving_average(padded[:, k], ramp)[ramp:-ramp] for k in range(3)], 1)
    total = base + angles
    rot = _rotation_matrices(total[:, 0], total[:, 1], total[:, 2])
    specific_force = body + np.array([0.0, 0.0, 1.0])       # gravity reaction points up
    reading = np.einsum('nji,nj->ni', rot, specific_force)   # R^T f
    mount = _rotation_matrices(*[np.full(1, _deg(a)) for a in tr['mount_deg']])[0]
    reading = reading @ mount                                # strap misalignment
    reading += tr['noise_g'] * rng.standard_normal((n, 3))
    return reading


def _heart_rate(rng, activity_4hz, rest_bpm, fitness):
    """Instantaneous heart rate [bpm] at 4 Hz: first-order response to the activity."""
    dt = 1.0 / dalia.ACTIVITY_HZ
    target = rest_bpm + HR_OFFSET_BPM[activity_4hz] * fitness
    tau_up, tau_down = rng.uniform(20, 35), rng.uniform(40, 70)
    hr = np.empty(len(target))
    level = target[0]
    for k, goal in enumerate(target):
        tau = tau_up if goal > level else tau_down
        level += dt / tau * (goal - level)
        hr[k] = level
    n = len(hr)
    t = np.arange(n) * dt
    hr += 2.5 * _smooth_noise(rng, n, dalia.ACTIVITY_HZ, 0.02)
    hr += 1.5 * np.sin(2 * np.pi * rng.uniform(0.2, 0.3) * t)     # respiratory sinus arrhythmia
    return np.clip(hr, 40, 195)


def _beat_times(rng, hr_4hz, duration_s):
    """R-peak times [s] whose local rate follows ``hr_4hz``, with beat-to-beat jitter."""
    dt = 1.0 / dalia.ACTIVITY_HZ
    beats_cum = np.concatenate([[0.0], np.cumsum(hr_4hz / 60.0 * dt)])
    t_grid = np.arange(len(beats_cum)) * dt
    offset = rng.uniform(0, 1)
    k = np.arange(math.ceil(beats_cum[-1] - offset)) + offset
    times = np.interp(k, beats_cum, t_grid)
    rr = np.diff(times)
    jitter = rng.normal(0, 0.012, size=len(times))
    times = times + np.clip(jitter, -0.1 * np.min(rr, initial=1.0), 0.1 * np.min(rr, initial=1.0))
    return times[(times >= 0) & (times < duration_s)]


def reference_heart_rate(beat_times_s, duration_s):
    """The dataset's reference: 60 / mean R-R interval of the beats in each 8 s window
    ``[2 j, 2 j + 8)`` s; one value per window over ``duration_s`` seconds of BVP."""
    n_windows = dalia.hr_label_count(int(round(duration_s * dalia.BVP_HZ)))
    starts = np.arange(n_windows) * dalia.HR_SHIFT_S
    first = np.searchsorted(beat_times_s, starts)
    last = np.searchsorted(beat_times_s, starts + dalia.HR_WINDOW_S) - 1
    span = beat_times_s[np.clip(last, 0, None)] - beat_times_s[np.clip(first, 0, len(beat_times_s) - 1)]
    count = last - first
    with np.errstate(divide='ignore', invalid='ignore'):
        bpm = np.where(count > 0, 60.0 * count / np.where(span > 0, span, 1.0), np.nan)
    return bpm


def _pulse_phase(times_s, beat_times_s):
    """Beat index + fraction of the way to the next beat, for each time."""
    return np.interp(times_s, beat_times_s, np.arange(len(beat_times_s)),
                     left=-1.0, right=len(beat_times_s))


def _bvp(rng, beats, hr_4hz, acc_g, duration_s):
    n = int(duration_s * dalia.BVP_HZ)
    t = np.arange(n) / dalia.BVP_HZ
    transit = 0.22 - 0.0006 * (np.interp(beats, np.arange(len(hr_4hz)) / 4, hr_4hz) - 70)
    frac = np.mod(_pulse_phase(t, beats + transit), 1.0)
    # Systolic peak then dicrotic wave, band-limited like the E4's BVP (zero mean).
    wave = np.exp(-0.5 * ((frac - 0.18) / 0.08) ** 2) + 0.35 * np.exp(-0.5 * ((frac - 0.5) / 0.09) ** 2)
    wave -= wave.mean()
    amplitude = rng.uniform(40, 120) * (1 + 0.1 * np.sin(2 * np.pi * 0.25 * t))
    motion = np.linalg.norm(acc_g, axis=1)
    motion = np.interp(t, np.arange(len(motion)) / dalia.ACC_HZ,
                       motion - _moving_average(motion, dalia.ACC_HZ))
    artefact = rng.uniform(80, 250) * motion
    wander = 8 * _smooth_noise(rng, n, dalia.BVP_HZ, 0.1)
    return -amplitude * wave + artefact + wander + rng.normal(0, 1.5, n)


def _eda(rng, activity_4hz):
    n = len(activity_4hz)
    fs = dalia.EDA_HZ
    tonic = rng.uniform(0.2, 3.0) * (1 + 0.3 * _smooth_noise(rng, n, fs, 0.002))
    arousal = _moving_average(AROUSAL[activity_4hz], 120 * fs)
    level = np.clip(tonic * (1 + 0.5 * arousal), 0.05, None)
    rate = (1 / 60 + arousal / 20)
    phasic = np.zeros(n)
    tt = np.arange(30 * fs) / fs
    response = (1 - np.exp(-tt / 0.7)) * np.exp(-tt / rng.uniform(3, 6))
    for k in np.flatnonzero(rng.random(n) < rate / fs):
        _add_pulse(phasic, k, response, rng.uniform(0.03, 0.3))
    return np.round(level + phasic + rng.normal(0, 0.003, n), 6)


def _temp(rng, activity_4hz):
    n = len(activity_4hz)
    fs = dalia.TEMP_HZ
    cooling = np.zeros(n)
    level = 0.0
    alpha = 1.0 / (300 * fs)   # skin temperature settles over ~5 min
    for k, outdoor in enumerate(OUTDOOR[activity_4hz]):
        level += alpha * (outdoor - level)
        cooling[k] = level
    base = rng.uniform(31.5, 34.0) + 0.3 * _smooth_noise(rng, n, fs, 0.001)
    return np.round(base - 2.0 * cooling + rng.normal(0, 0.02, n), 2)


def _chest(rng, beats, activity_4hz, acc_g, duration_s, breath_hz):
    """RespiBAN ACC (g), ECG (mV) and Resp (%) at 700 Hz, cheaply from the same beats."""
    m = int(duration_s * dalia.CHEST_HZ)
    t = np.arange(m) / dalia.CHEST_HZ
    frac = np.mod(_pulse_phase(t, beats), 1.0)
    # PQRST as bumps on the beat cycle (R at 0 and 1): P, Q, R, S, T.
    dist_r = np.minimum(frac, 1 - frac)
    ecg = 1.2 * np.exp(-0.5 * (dist_r / 0.012) ** 2)
    ecg += -0.15 * np.exp(-0.5 * ((frac - 0.975) / 0.008) ** 2)
    ecg += -0.3 * np.exp(-0.5 * ((frac - 0.03) / 0.01) ** 2)
    ecg += 0.3 * np.exp(-0.5 * ((frac - 0.35) / 0.05) ** 2)
    ecg += 0.12 * np.exp(-0.5 * ((frac - 0.85) / 0.025) ** 2)
    breath_phase = 2 * np.pi * np.cumsum(np.interp(t, np.arange(len(breath_hz)) / 4, breath_hz)) / dalia.CHEST_HZ
    resp = rng.uniform(2, 5) * np.sin(breath_phase)
    ecg += 0.08 * np.sin(breath_phase + 1.0) + rng.normal(0, 0.01, m)
    resp += rng.normal(0, 0.02, m)
    # The torso sees the body's accelerations, not the arm's: a smoothed wrist signal.
    t_acc = np.arange(len(acc_g)) / dalia.ACC_HZ
    torso = np.stack([_moving_average(acc_g[:, k] - acc_g[:, k].mean(), 8) for k in range(3)], 1)
    upright = np.array([0.95, 0.05, -0.3])
    chest_acc = np.empty((m, 3))
    for k in range(3):
        chest_acc[:, k] = upright[k] + 0.3 * np.interp(t, t_acc, torso[:, k])
    chest_acc += rng.normal(0, 0.003, (m, 3))
    return chest_acc, ecg[:, None], resp[:, None]


def _questionnaire(rng):
    male = bool(rng.integers(0, 2))
    height = rng.normal(179, 7) if male else rng.normal(166, 6)
    weight = rng.normal(23.5, 2.5) * (height / 100) ** 2
    # Values as the dataset's questionnaire dict holds them: gender a short string, the
    # rest numbers (age, skin type and sport scale integers).
    return {'WEIGHT': round(float(weight), 1), 'Gender': ' m' if male else ' f',
            'AGE': int(rng.integers(21, 56)), 'HEIGHT': round(float(height), 1),
            'SKIN': int(rng.choice([1, 2, 3, 4, 5], p=[0.1, 0.35, 0.35, 0.15, 0.05])),
            'SPORT': int(rng.integers(1, 7))}


def generate_subject(subject_index, minutes, seed=0, balanced=False, chest=True):
    """One synthetic subject as the PPG-DaLiA pickle dict (see :mod:`muse_sensors.dalia`).

    ``minutes`` of data (whole seconds); ``balanced`` gives every activity equal time in
    random order instead of the protocol; ``chest=False`` leaves the 700 Hz chest arrays
    empty (same keys and dtypes, a fraction of the size) when only wrist data is needed.
    """
    if not isinstance(subject_index, (int, np.integer)) or subject_index < 1:
        raise ValueError(f'subject_index must be an integer >= 1, got {subject_index!r}')
    if not minutes > 0:
        raise ValueError(f'minutes must be > 0, got {minutes!r}')
    duration_s = int(round(minutes * 60))
    if duration_s < dalia.HR_WINDOW_S:
        raise ValueError(f'minutes must cover at least {dalia.HR_WINDOW_S} s, got {minutes!r}')
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(subject_index)])
    traits = _traits(rng)
    quest = _questionnaire(rng)

    segments = _schedule(rng, duration_s, balanced)
    n_act = duration_s * dalia.ACTIVITY_HZ
    activity = np.concatenate([np.full(int(round(d * dalia.ACTIVITY_HZ)), a) for a, d in segments])
    activity = activity[:n_act] if len(activity) >= n_act else np.pad(
        activity, (0, n_act - len(activity)), mode='edge')
    activity_acc = np.repeat(activity, dalia.ACC_HZ // dalia.ACTIVITY_HZ)

    acc_g = _wrist_acc_g(rng, activity_acc, traits)
    acc_counts = np.clip(np.round(acc_g * dalia.ACC_UNITS_PER_G), -128, 127)

    rest = rng.uniform(58, 76) + (4 if quest['Gender'].strip() == 'f' else 0)
    fitness = rng.uniform(0.8, 1.2) * (1.1 - 0.03 * quest['SPORT'])
    hr = _heart_rate(rng, activity, rest, fitness)
    beats = _beat_times(rng, hr, duration_s)
    label = reference_heart_rate(beats, duration_s)

    bvp = _bvp(rng, beats, hr, acc_g, duration_s)
    eda = _eda(rng, activity)
    temp = _temp(rng, activity)
    breath_hz = 0.22 + 0.15 * (hr - rest) / 60.0
    if chest:
        chest_acc, ecg, resp = _chest(rng, beats, activity, acc_g, duration_s, breath_hz)
    else:
        chest_acc, ecg, resp = np.zeros((0, 3)), np.zeros((0, 1)), np.zeros((0, 1))
    rpeaks = np.round(beats * dalia.CHEST_HZ).astype(np.int64)

    return {
        'rpeaks': rpeaks,
        'signal': {
            'chest': {'ACC': chest_acc, 'ECG': ecg, 'Resp': resp},
            'wrist': {'ACC': acc_counts.astype(np.float64),
                      'BVP': np.round(bvp, 2)[:, None],
                      'EDA': eda[:, None], 'TEMP': temp[:, None]},
        },
        'label': label.astype(np.float64),
        'activity': activity.astype(np.float64)[:, None],
        'questionnaire': quest,
        'subject': f'S{int(subject_index)}',
    }


def write_subject(folder, subject_index, minutes, seed=0, balanced=False, chest=True):
    """Write ``<folder>/S<i>/S<i>.pkl`` (pickle protocol 2, as the dataset) and return it."""
    data = generate_subject(subject_index, minutes, seed, balanced=balanced, chest=chest)
    path = Path(folder) / data['subject'] / f"{data['subject']}.pkl"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix('.pkl.tmp')
    with open(tmp, 'wb') as f:
        pickle.dump(data, f, protocol=PICKLE_PROTOCOL)
    tmp.replace(path)
    return path


def main(argv=None):
    """CLI ``muse_make_subjects``: write N synthetic subjects with a progress bar."""
    from tqdm import tqdm

    parser = argparse.ArgumentParser(
        prog='muse_make_subjects',
        description='Write synthetic PPG-DaLiA subjects (S<i>/S<i>.pkl, the dataset format).')
    parser.add_argument('--out', required=True, type=Path, help='output folder')
    parser.add_argument('--subjects', type=int, default=15, help='number of subjects (default 15)')
    parser.add_argument('--first', type=int, default=1, help='index of the first subject (default 1)')
    parser.add_argument('--minutes', type=float, default=30.0, help='minutes per subject (default 30)')
    parser.add_argument('--seed', type=int, default=0, help='random seed (default 0)')
    parser.add_argument('--balanced', action='store_true',
                        help='equal time per activity in random order, instead of the protocol')
    parser.add_argument('--no-chest', action='store_true',
                        help='leave the 700 Hz chest signals empty (much smaller files)')
    parser.add_argument('--plot', action='store_true',
                        help='also draw S<i>/S<i>_overview.png (activity, ACC, HR, spectra)')
    args = parser.parse_args(argv)
    if args.subjects < 1 or args.first < 1:
        parser.error('--subjects and --first must be >= 1')
    if args.minutes * 60 < dalia.HR_WINDOW_S:
        parser.error(f'--minutes must cover at least {dalia.HR_WINDOW_S} s')
    indices = range(args.first, args.first + args.subjects)
    for index in tqdm(indices, desc='subjects', unit='subject', file=sys.stderr):
        path = write_subject(args.out, index, args.minutes, args.seed, balanced=args.balanced,
                             chest=not args.no_chest)
        tqdm.write(f'{path} ({path.stat().st_size / 1e6:.1f} MB)', file=sys.stderr)
        if args.plot:
            from muse_sensors.plots import plot_subject
            png = plot_subject(dalia.load_subject(path), path.with_name(f'{path.stem}_overview.png'))
            tqdm.write(f'{png}', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
