"""The synthetic generator: the real pickle structure, determinism, the protocol, and the
physiology and motion the encoder has to learn from."""

import pickle
import subprocess
import sys

import numpy as np
import pytest

from muse_sensors import dalia, synthetic

MINUTES = 20


@pytest.fixture(scope='module')
def data():
    return synthetic.generate_subject(1, MINUTES, seed=5)


@pytest.fixture(scope='module')
def subject(data):
    return dalia.subject_from_dict(data, 'S1.pkl')


def test_structure_is_the_real_pickle_structure(data):
    assert list(data) == ['rpeaks', 'signal', 'label', 'activity', 'questionnaire', 'subject']
    assert set(data['signal']) == {'wrist', 'chest'}
    assert set(data['signal']['wrist']) == {'ACC', 'BVP', 'EDA', 'TEMP'}
    assert set(data['signal']['chest']) == {'ACC', 'ECG', 'Resp'}
    assert set(data['questionnaire']) == {'AGE', 'Gender', 'HEIGHT', 'WEIGHT', 'SKIN', 'SPORT'}
    seconds = MINUTES * 60
    wrist, chest = data['signal']['wrist'], data['signal']['chest']
    expected = {'ACC': (seconds * 32, 3), 'BVP': (seconds * 64, 1), 'EDA': (seconds * 4, 1),
                'TEMP': (seconds * 4, 1)}
    for key, shape in expected.items():
        assert wrist[key].shape == shape and wrist[key].dtype == np.float64, key
    for key, shape in {'ACC': (seconds * 700, 3), 'ECG': (seconds * 700, 1),
                       'Resp': (seconds * 700, 1)}.items():
        assert chest[key].shape == shape and chest[key].dtype == np.float64, key
    assert data['activity'].shape == (seconds * 4, 1)
    assert data['label'].ndim == 1 and len(data['label']) == (seconds * 64 - 512) // 128 + 1
    assert data['rpeaks'].ndim == 1 and data['rpeaks'].dtype.kind == 'i'
    assert data['subject'] == 'S1'
    # E4 counts: whole numbers of 1/64 g within its +-2 g range.
    acc = wrist['ACC']
    assert np.all(acc == np.round(acc)) and acc.min() >= -128 and acc.max() <= 127


def test_deterministic_for_a_seed():
    a = synthetic.generate_subject(3, 2, seed=9)
    b = synthetic.generate_subject(3, 2, seed=9)
    c = synthetic.generate_subject(3, 2, seed=10)
    d = synthetic.generate_subject(4, 2, seed=9)
    assert pickle.dumps(a) == pickle.dumps(b)
    for other in (c, d):
        assert not np.array_equal(a['signal']['wrist']['ACC'], other['signal']['wrist']['ACC'])


def test_written_file_is_protocol_2_in_dataset_layout(tmp_path):
    path = synthetic.write_subject(tmp_path, 7, 1, seed=2)
    assert path == tmp_path / 'S7' / 'S7.pkl'
    assert path.read_bytes()[:2] == b'\x80\x02'
    assert dalia.load_subject(path).name == 'S7'


def test_protocol_order_with_transients_between(subject):
    runs = [int(a) for i, a in enumerate(subject.activity) if i == 0 or a != subject.activity[i - 1]]
    assert runs == [0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 8, 0]
    seconds = np.bincount(subject.activity, minlength=9) / dalia.ACTIVITY_HZ
    # Lunch is the protocol's longest activity, stairs and table soccer the shortest.
    assert seconds[6] > seconds[5] > seconds[2]
    assert seconds[6] > 2 * seconds[3]


def test_balanced_schedule_gives_each_activity_similar_time():
    s = dalia.subject_from_dict(synthetic.generate_subject(2, 30, seed=1, balanced=True), 'x')
    seconds = np.bincount(s.activity, minlength=9)[1:] / dalia.ACTIVITY_HZ
    assert seconds.max() < 1.6 * seconds.min()


def test_label_is_the_mean_rr_rate_of_each_window(data):
    beats = data['rpeaks'] / 700.0
    for j in (0, 10, len(data['label']) - 1):
        inside = beats[(beats >= 2 * j) & (beats < 2 * j + 8)]
        assert data['label'][j] == pytest.approx(60 / np.mean(np.diff(inside)), rel=0.01)


def test_heart_rate_follows_activity_with_a_lag(subject):
    hr_t = np.arange(len(subject.hr_bpm)) * 2 + 4        # window centres
    activity = np.array([subject.activity_at(t) for t in hr_t])

    def mean_hr(a):
        return subject.hr_bpm[activity == a].mean()

    assert mean_hr(4) > mean_hr(1) + 15       # cycling above sitting
    assert mean_hr(7) > mean_hr(8) + 8        # walking above desk work
    # Lag: right after cycling starts, the heart rate is still well below its plateau.
    start = np.flatnonzero(activity == 4)[0]
    assert subject.hr_bpm[start] < subject.hr_bpm[start + 30] - 5


def dominant_frequency(acc_g, low=0.5, high=4.0):
    magnitude = np.linalg.norm(acc_g, axis=1)
    magnitude = magnitude - magnitude.mean()
    spectrum = np.abs(np.fft.rfft(magnitude * np.hanning(len(magnitude))))
    freqs = np.fft.rfftfreq(len(magnitude), 1 / dalia.ACC_HZ)
    band = (freqs >= low) & (freqs <= high)
    return freqs[band][np.argmax(spectrum[band])]


def segment(subject, activity):
    """The accelerometer samples of the (first) run of ``activity``, edges trimmed."""
    idx = np.flatnonzero(np.repeat(subject.activity, 8) == activity)
    return subject.acc_g[idx[64]:idx[-1] - 64]


def test_motion_signatures(subject):
    walking = segment(subject, 7)
    assert 1.6 <= dominant_frequency(walking) <= 2.2    # gait near 2 Hz
    stairs = segment(subject, 2)
    assert 1.1 <= dominant_frequency(stairs) <= 1.8     # slower steps on stairs

    def motion(a):
        # RMS of movement faster than ~1 Hz on all axes (posture drift removed).
        acc = segment(subject, a).astype(np.float64)
        kernel = np.ones(dalia.ACC_HZ) / dalia.ACC_HZ
        slow = np.stack([np.convolve(acc[:, k], kernel, mode='same') for k in range(3)], 1)
        return np.sqrt(np.mean(np.sum((acc - slow)[32:-32] ** 2, axis=1)))

    assert motion(1) < motion(8) < motion(7)            # sitting < desk work < walking
    assert motion(4) < motion(7)                        # hands rest on the handlebar
    assert motion(3) > motion(1) * 3                    # table soccer bursts


def test_subjects_differ_in_their_motion():
    cadences = []
    for index in range(1, 5):
        s = dalia.subject_from_dict(synthetic.generate_subject(index, 10, seed=3), 'x')
        cadences.append(dominant_frequency(segment(s, 7)))
    assert max(cadences) - min(cadences) > 0.05


def test_no_chest_option_keeps_keys_and_dtypes():
    d = synthetic.generate_subject(1, 1, seed=0, chest=False)
    assert d['signal']['chest']['ECG'].shape == (0, 1)
    assert d['signal']['chest']['ACC'].shape == (0, 3)


@pytest.mark.parametrize('kwargs, words', [
    ({'subject_index': 0, 'minutes': 1}, 'subject_index'),
    ({'subject_index': 1, 'minutes': 0}, 'minutes'),
    ({'subject_index': 1, 'minutes': 0.1}, 'at least 8 s'),
])
def test_bad_arguments(kwargs, words):
    with pytest.raises(ValueError, match=words):
        synthetic.generate_subject(**kwargs)


def test_cli_writes_subjects_with_progress(tmp_path):
    result = subprocess.run(
        [sys.executable, '-m', 'muse_sensors.synthetic', '--out', str(tmp_path), '--subjects', '2',
         '--first', '3', '--minutes', '0.5', '--seed', '4', '--no-chest'],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert 'subjects' in result.stderr and '2/2' in result.stderr   # the tqdm bar
    assert [p.name for p in dalia.find_subjects(tmp_path)] == ['S3.pkl', 'S4.pkl']
    again = synthetic.generate_subject(3, 0.5, seed=4, chest=False)
    loaded = dalia.load_subject(tmp_path / 'S3' / 'S3.pkl')
    np.testing.assert_array_equal(loaded.activity, again['activity'][:, 0])


def test_cli_rejects_bad_arguments(tmp_path):
    result = subprocess.run([sys.executable, '-m', 'muse_sensors.synthetic', '--out',
                             str(tmp_path), '--subjects', '0'],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and '--subjects' in result.stderr


def test_overview_plot(tmp_path, subject):
    from muse_sensors.plots import plot_subject

    png = plot_subject(subject, tmp_path / 'overview.png')
    data = png.read_bytes()
    assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 50_000


def test_domain_randomised_streams_vary_their_device_and_are_reproducible():
    from muse_sensors.synthetic import DOMAIN_RANDOMISED, UNITS_PER_G, generate_wrist_stream
    streams = [generate_wrist_stream(i, 1.0, seed=4) for i in range(1, 13)]
    again = generate_wrist_stream(3, 1.0, seed=4)
    np.testing.assert_array_equal(again.acc, streams[2].acc)
    assert len({s.units for s in streams}) > 1 and len({s.rate_hz for s in streams}) > 1
    assert {s.device['gravity_removed'] for s in streams} == {True, False}
    for s in streams:
        assert s.rate_hz in DOMAIN_RANDOMISED.rates_hz
        assert len(s.acc) == len(s.activity)
        # About a minute at the true rate, less the dropped gaps (the resampling ratio is the
        # true rate's nearest fraction with denominator <= 64: within 0.5 %).
        expected = 60 * s.rate_hz * (1 + s.device['rate_error']) - s.device['dropped_samples']
        assert abs(len(s.acc) - expected) <= 0.005 * expected + 2
        magnitude = np.median(np.linalg.norm(s.acc, axis=1)) / UNITS_PER_G[s.units]
        if s.device['gravity_removed']:
            assert magnitude < 0.5           # linear acceleration: no 1 g offset
        else:
            assert 0.8 < magnitude < 1.3
        if s.units == 'e4_counts':
            np.testing.assert_array_equal(s.acc, np.round(s.acc))   # whole counts


def test_shifted_domain_draws_outside_the_training_ranges():
    from muse_sensors.synthetic import DOMAIN_RANDOMISED, DOMAIN_SHIFTED, generate_wrist_stream
    stream = generate_wrist_stream(1, 1.0, seed=4, domain=DOMAIN_SHIFTED)
    assert stream.rate_hz not in DOMAIN_RANDOMISED.rates_hz
    assert stream.device['cadence_scale'] < DOMAIN_RANDOMISED.cadence_scale[0]
