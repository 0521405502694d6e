"""ActivityEncoder on the packaged checkpoint, static-input defaults, temporal smoothing."""

import math

import numpy as np
import pytest

from muse_encoder.features import NonFiniteInputError, SampleRateError, WindowLengthError
from muse_encoder.inference import ActivityEncoder, ProbabilitySmoother
from muse_encoder.statics import STATIC_INPUTS, Statics, sex_female_from_code
from muse_common import activities
from muse_sensors import dalia
from muse_sensors.synthetic import write_subject


@pytest.fixture(scope='module')
def encoder():
    return ActivityEncoder(threads=1)


@pytest.fixture(scope='module')
def subject(tmp_path_factory):
    """A subject the default checkpoint never saw (index and seed outside its training set)."""
    folder = tmp_path_factory.mktemp('subjects')
    return dalia.load_subject(write_subject(folder, 41, 4, seed=2024, balanced=True, chest=False))


def test_one_window_gives_probabilities_embedding_and_timing(encoder, subject):
    prediction = encoder.predict(subject.acc_g[:256], dalia.ACC_HZ)
    assert prediction.probabilities.shape == (9,)
    assert prediction.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    assert prediction.embedding.shape == (encoder.embedding_dim,)
    assert prediction.label == activities.ACTIVITY_NAMES[prediction.class_id]
    assert prediction.confidence == pytest.approx(prediction.probabilities.max())
    assert prediction.feature_ms > 0 and prediction.model_ms > 0
    assert prediction.total_ms == pytest.approx(prediction.feature_ms + prediction.model_ms)


def test_unknown_statics_are_filled_with_the_training_means(encoder, subject):
    prediction = encoder.predict(subject.acc_g[:256], dalia.ACC_HZ, Statics(heart_rate_bpm=95))
    assert prediction.defaulted == STATIC_INPUTS[1:]
    expected = [95.0] + [encoder.static_defaults[name] for name in STATIC_INPUTS[1:]]
    np.testing.assert_allclose(prediction.statics_used, expected, rtol=1e-6)


def test_implausible_statics_count_as_unknown():
    statics = Statics(heart_rate_bpm=0, age_years=0, sex_female=sex_female_from_code(0),
                      height_cm=float('nan'), weight_kg=-3)
    assert statics.unknown() == STATIC_INPUTS
    assert Statics(sex_female=sex_female_from_code(2)).sex_female == 1.0
    assert Statics(sex_female=sex_female_from_code(1)).sex_female == 0.0
    assert math.isnan(sex_female_from_code(7))


def test_batch_and_single_window_agree(encoder, subject):
    windows, _ = encoder.features.sliding_windows(subject.acc_g[:32 * 20], dalia.ACC_HZ)
    statics = np.tile(Statics().vector(encoder.static_defaults), (len(windows), 1))
    probabilities, embeddings = encoder.predict_batch(windows, dalia.ACC_HZ, statics)
    for i, window in enumerate(windows):
        one = encoder.predict(window, dalia.ACC_HZ)
        np.testing.assert_allclose(one.probabilities, probabilities[i], atol=1e-5)
        np.testing.assert_allclose(one.embedding, embeddings[i], atol=1e-4)


def test_default_checkpoint_recognises_an_unseen_subject(encoder, subject):
    """Not a benchmark of accuracy, a guard that features, statics and weights fit together:
    a broken pipeline (wrong units, axes or normalisation) lands near chance (1/8)."""
    windows, starts = encoder.features.sliding_windows(subject.acc_g, dalia.ACC_HZ)
    truth, predicted = [], []
    for window, start in zip(windows, starts):
        t_end = (start + 256) / dalia.ACC_HZ
        label = np.bincount(subject.activity[start // 8:start // 8 + 32]).argmax()
        if label == 0:
            continue
        person = Statics(subject.heart_rate_at(t_end), subject.profile.age,
                         sex_female_from_code(subject.profile.sex_code),
                         subject.profile.height_cm, subject.profile.weight_kg)
        truth.append(label)
        predicted.append(encoder.predict(window, dalia.ACC_HZ, person).class_id)
    assert np.mean(np.array(truth) == np.array(predicted)) > 0.7


def test_bad_windows_raise_typed_errors(encoder, subject):
    with pytest.raises(WindowLengthError):
        encoder.predict(subject.acc_g[:100], dalia.ACC_HZ)
    with pytest.raises(SampleRateError):
        encoder.predict(subject.acc_g[:256], 0)
    window = subject.acc_g[:256].copy()
    window[3] = np.nan
    with pytest.raises(NonFiniteInputError):
        encoder.predict(window, dalia.ACC_HZ)


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match='backend'):
        ActivityEncoder(backend='tensorrt')


def onehot(c, p=0.9, n=9):
    v = np.full(n, (1 - p) / (n - 1))
    v[c] = p
    return v


def test_no_smoothing_follows_every_window():
    smoother = ProbabilitySmoother('none')
    assert [smoother.update(onehot(c))[0] for c in (1, 2, 1)] == [1, 2, 1]


def test_ema_ignores_a_single_outlier_window_but_follows_a_real_change():
    smoother = ProbabilitySmoother('ema', alpha=0.4)
    published = [smoother.update(onehot(c))[0] for c in [7] * 5 + [2] + [7] * 3 + [4] * 4]
    assert published[:9] == [7] * 9           # the lone 'stairs' window does not flap the label
    assert published[-1] == 4                 # a lasting change gets through
    _, confidence, smoothed = smoother.update(onehot(4))
    assert smoothed.sum() == pytest.approx(1.0, abs=1e-5) and confidence == smoothed.max()


def test_majority_vote_and_its_tie_rule():
    smoother = ProbabilitySmoother('majority', window=3)
    assert [smoother.update(onehot(c))[0] for c in (1, 2, 1, 2, 2)] == [1, 2, 1, 2, 2]
    smoother.reset()
    assert [smoother.update(onehot(c))[0] for c in (5, 5, 3)] == [5, 5, 5]


def test_smoothing_settings_are_validated():
    for method, alpha, window in (('median', 0.5, 3), ('ema', 0.0, 3), ('ema', 1.5, 3), ('majority', 0.5, 0)):
        with pytest.raises(ValueError):
            ProbabilitySmoother(method, alpha, window)
    with pytest.raises(ValueError, match='finite'):
        ProbabilitySmoother('ema').update([0.5, float('nan')])


# Heavy packages the node's process must not load: torch (the ONNX backend replaces it),
# scipy and librosa/numba (~150 MB; the feature constants are built in numpy), pandas.
EDGE_FORBIDDEN = ('torch', 'scipy', 'librosa', 'numba', 'pandas', 'sklearn')


def test_the_nodes_inference_path_imports_no_heavy_package():
    """A fresh process that imports the node's module and runs what its worker runs (features
    + CNN in onnxruntime + the default smoother) loads none of EDGE_FORBIDDEN."""
    import subprocess
    import sys
    code = ('import sys, numpy as np\n'
            'import muse_encoder.activity_encoder_node\n'
            'from muse_encoder.inference import ActivityEncoder, ProbabilitySmoother\n'
            'e = ActivityEncoder(threads=1)\n'
            's = ProbabilitySmoother()\n'
            'for rate in (32, 50):\n'
            '    p = e.predict(np.zeros((8 * rate, 3), np.float32) + [0, 0, 1], rate)\n'
            '    s.update(p.probabilities, 1.0)\n'
            'assert e.backend == "onnx" and p.probabilities.shape == (9,)\n'
            f'print([m for m in {EDGE_FORBIDDEN!r} if m in sys.modules])\n')
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == '[]'


def test_default_model_gives_the_same_answer_on_any_device_convention(encoder, subject):
    """The same motion as an E4 on the right wrist (32 Hz, g, gravity) and as a watch on the
    left wrist in another mounting (50 Hz, m/s^2, gravity subtracted)."""
    from scipy.signal import resample_poly
    from muse_encoder.features import to_g
    rng = np.random.default_rng(8)
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    turn = (q * np.sign(np.diag(r))) @ np.diag([1.0, -1.0, 1.0])
    e4 = subject.acc_g[:32 * 120]
    gravity = np.median(e4, axis=0)
    watch = resample_poly((e4 - gravity) @ turn.T, 25, 16, axis=0, padtype='line') * 9.80665
    watch = to_g(watch, 'm/s^2')
    e4_windows, _ = encoder.features.sliding_windows(e4, 32.0)
    watch_windows, _ = encoder.features.sliding_windows(watch, 50.0)
    n = min(len(e4_windows), len(watch_windows))
    statics = np.tile(Statics().vector(encoder.static_defaults), (n, 1))
    a, _ = encoder.predict_batch(e4_windows[:n], 32.0, statics)
    b, _ = encoder.predict_batch(watch_windows[:n].astype(np.float32), 50.0, statics)
    assert np.mean(a.argmax(axis=1) == b.argmax(axis=1)) >= 0.9
