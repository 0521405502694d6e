"""AccelToRGBMel: shapes, agreement with the plain librosa path, resampling, device
invariance (rotation, mirror, units, gravity removal, sample rate), bad inputs."""

import librosa
import numpy as np
import pytest
from scipy.signal import butter, resample_poly, sosfiltfilt

from muse_encoder.features import (AccelToRGBMel, FeatureParams, InputShapeError,
                                   NonFiniteInputError, SampleRateError, UnitsError,
                                   WindowLengthError, looks_like_ms2, to_g)


@pytest.fixture(scope='module')
def extractor():
    return AccelToRGBMel()


@pytest.fixture(scope='module')
def axes_extractor():
    return AccelToRGBMel(representation='axes')


def random_rotation(rng):
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def walking_like(n, rate, seed=0):
    """Gravity on z plus a 1.8 Hz gait with harmonics and a little noise, in g."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    gait = 0.3 * np.sin(2 * np.pi * 1.8 * t) + 0.1 * np.sin(2 * np.pi * 3.6 * t + 0.4)
    acc = np.stack([gait, 0.5 * gait, 1.0 + 0.2 * gait], axis=1)
    return (acc + 0.01 * rng.standard_normal((n, 3))).astype(np.float32)


def test_one_window_gives_three_64x64_channels(extractor):
    image = extractor(walking_like(256, 32), 32)
    assert image.shape == (3, 64, 64) and image.dtype == np.float32
    assert np.isfinite(image).all()


def test_a_batch_equals_its_windows_one_by_one(extractor):
    batch = np.stack([walking_like(256, 32, seed) for seed in range(4)])
    images = extractor(batch, 32)
    assert images.shape == (4, 3, 64, 64)
    for i in range(4):
        np.testing.assert_allclose(images[i], extractor(batch[i], 32), rtol=0, atol=1e-5)


def test_features_are_deterministic(extractor):
    window = walking_like(256, 32)
    assert np.array_equal(extractor(window, 32), extractor(window.copy(), 32))


def naive_invariant_channels(window, rate, p):
    """The invariant channels written out per window: resample, remove the mean, high-pass,
    principal axes, projections and magnitudes."""
    window = window.astype(np.float64) - window.mean(axis=0)
    signal = resample_poly(window, int(p.target_rate_hz), rate, axis=0, padtype='line')
    signal -= signal.mean(axis=0)
    signal = sosfiltfilt(butter(2, p.gravity_cutoff_hz, 'highpass', fs=p.target_rate_hz, output='sos'),
                         signal, axis=0)
    _, vectors = np.linalg.eigh(signal.T @ signal)
    projected = signal @ vectors
    orthogonal = np.hypot(projected[:, 0], projected[:, 1])
    magnitude = np.linalg.norm(signal, axis=1)
    return np.stack([projected[:, 2], orthogonal - orthogonal.mean(), magnitude - magnitude.mean()], 1)


@pytest.mark.parametrize('representation', ['axes', 'invariant'])
def test_matches_the_naive_per_channel_librosa_path(extractor, axes_extractor, representation):
    """The vectorised pipeline is the textbook one: resample, (invariant channels), pad, mel
    spectrogram, log10."""
    chosen = extractor if representation == 'invariant' else axes_extractor
    p = chosen.params
    window = walking_like(256, 32, seed=3)
    image = chosen(window, 32)
    pad = (p.n_fft - p.hop_length) // 2
    channels = (naive_invariant_channels(window, 32, p) if representation == 'invariant' else
                resample_poly(window.astype(np.float64), 2, 1, axis=0, padtype='line'))
    for axis in range(3):
        signal = channels[:, axis]
        mel = librosa.feature.melspectrogram(
            y=np.pad(signal, pad, mode='reflect'), sr=p.target_rate_hz, n_fft=p.n_fft,
            hop_length=p.hop_length, center=False, n_mels=p.n_mels, fmin=p.fmin_hz,
            fmax=p.fmax_hz, power=2.0)
        np.testing.assert_allclose(image[axis], np.log10(mel + p.log_floor), atol=2e-3)


def test_gait_energy_lands_in_the_mel_band_of_its_cadence(extractor):
    t = np.arange(256) / 32
    window = np.zeros((256, 3), np.float32)
    window[:, 0] = 0.5 * np.sin(2 * np.pi * 5.0 * t)
    band = extractor(window, 32)[0].mean(axis=1).argmax()
    mel_hz = librosa.mel_frequencies(n_mels=66, fmin=0, fmax=32)[1:-1]  # band centres
    assert abs(mel_hz[band] - 5.0) < 0.6


def test_input_rate_does_not_change_what_the_features_say(extractor):
    """The same band-limited motion recorded at 32, 50 and 64 Hz gives nearly the same image
    where there is energy (below the 16 Hz Nyquist of the slowest rate)."""
    def motion(rate):
        t = np.arange(int(8 * rate)) / rate
        x = 0.4 * np.sin(2 * np.pi * 1.7 * t) + 0.2 * np.sin(2 * np.pi * 4.1 * t + 1)
        return np.stack([x, -x, 1 + 0.5 * x], axis=1).astype(np.float32)
    reference = extractor(motion(64), 64)
    strong = reference > reference.max() - 2   # within 20 dB of the peak
    for rate in (32, 50):
        image = extractor(motion(rate), rate)
        assert np.median(np.abs(image - reference)[strong]) < 0.05, rate


def test_any_rotation_or_mirror_gives_the_same_features(extractor):
    """Either wrist, any mounting: a fixed rotation or reflection of the sensor axes."""
    rng = np.random.default_rng(11)
    window = walking_like(256, 32, seed=4)
    reference = extractor(window, 32)
    for trial in range(5):
        turn = random_rotation(rng)
        if trial % 2:
            turn = turn @ np.diag([1.0, -1.0, 1.0])          # the other wrist
        np.testing.assert_allclose(extractor((window @ turn.T).astype(np.float32), 32), reference, atol=2e-3)


def test_gravity_removed_gives_the_same_features(extractor):
    """Linear acceleration (gravity subtracted, as phone APIs deliver) or gravity in it."""
    window = walking_like(256, 32, seed=5)
    linear = window - np.array([0.0, 0.0, 1.0], np.float32)
    np.testing.assert_allclose(extractor(linear, 32), extractor(window, 32), atol=0.02)


def test_units_are_converted_and_m_s2_is_recognised():
    window = walking_like(256, 32, seed=6)
    in_ms2 = window * 9.80665
    assert looks_like_ms2(in_ms2) and not looks_like_ms2(window)
    np.testing.assert_allclose(to_g(in_ms2, 'auto'), window, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(to_g(in_ms2, 'm/s^2'), window, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(to_g(np.round(window * 64), 'e4_counts'), np.round(window * 64) / 64)
    with pytest.raises(UnitsError, match='units must be one of'):
        to_g(window, 'furlongs')


def test_resampled_rotated_stream_in_m_s2_looks_the_same(extractor):
    """All conventions at once: 50 Hz instead of 32, rotated, in m/s^2, gravity removed."""
    rng = np.random.default_rng(3)
    t32, t50 = np.arange(256) / 32, np.arange(400) / 50

    def motion(t):
        x = 0.4 * np.sin(2 * np.pi * 1.7 * t) + 0.2 * np.sin(2 * np.pi * 3.4 * t + 1)
        return np.stack([x, 0.3 * np.sin(2 * np.pi * 0.85 * t), 0.5 * x], axis=1)
    e4 = (motion(t32) + [0.1, -0.3, 0.95]).astype(np.float32)
    phone = to_g((motion(t50) @ random_rotation(rng).T) * 9.80665, 'm/s^2')
    reference, image = extractor(e4, 32), extractor(phone, 50)
    strong = reference > reference.max() - 2
    assert np.median(np.abs(image - reference)[strong]) < 0.05


def test_sliding_windows_cut_every_stride(extractor):
    stream = walking_like(32 * 60, 32)                      # one minute
    windows, starts = extractor.sliding_windows(stream, 32)
    assert windows.shape == (27, 256, 3)                     # (60 - 8) / 2 + 1
    assert starts.tolist() == list(range(0, 27 * 64, 64))
    np.testing.assert_array_equal(windows[5], stream[5 * 64:5 * 64 + 256])
    images, image_starts = extractor.stream_features(stream, 32, batch_size=10)
    assert images.shape == (27, 3, 64, 64) and np.array_equal(image_starts, starts)
    np.testing.assert_allclose(images[5], extractor(stream[320:576], 32), atol=1e-5)


@pytest.mark.parametrize('rate', [0, -32, float('nan'), float('inf'), 8, 10_000, 31.41592653589793, '32', None, True])
def test_unusable_sample_rates_are_refused_by_name(extractor, rate):
    with pytest.raises(SampleRateError, match='sample_rate'):
        extractor(walking_like(256, 32), rate)


def test_too_short_window_says_how_many_samples_it_needs(extractor):
    with pytest.raises(WindowLengthError, match=r'too short: 200 samples at 32 Hz, expected exactly 256'):
        extractor(walking_like(200, 32), 32)


def test_a_window_of_another_rate_is_refused(extractor):
    with pytest.raises(WindowLengthError, match='too long'):
        extractor(walking_like(512, 64), 32)


def test_too_short_stream_is_refused(extractor):
    with pytest.raises(WindowLengthError, match='stream is too short'):
        extractor.sliding_windows(walking_like(100, 32), 32)


@pytest.mark.parametrize('bad', [np.nan, np.inf, -np.inf])
def test_non_finite_acceleration_is_refused_with_its_position(extractor, bad):
    window = walking_like(256, 32)
    window[17, 2] = bad
    with pytest.raises(NonFiniteInputError, match='sample 17, axis z'):
        extractor(window, 32)


@pytest.mark.parametrize('shape', [(256,), (256, 2), (256, 4), (1, 1, 256, 3), (0, 256, 3)])
def test_wrong_shapes_are_refused(extractor, shape):
    with pytest.raises(InputShapeError):
        extractor(np.zeros(shape, np.float32), 32)


def test_non_numeric_input_is_refused(extractor):
    with pytest.raises(InputShapeError, match='numeric'):
        extractor(np.full((256, 3), 'a'), 32)


def test_inconsistent_parameters_are_refused():
    with pytest.raises(ValueError, match='hops'):
        AccelToRGBMel(FeatureParams(hop_length=7))
    with pytest.raises(ValueError, match='Nyquist'):
        AccelToRGBMel(fmax_hz=40.0)
    with pytest.raises(ValueError, match='representation'):
        AccelToRGBMel(representation='quaternions')


# ----------------------------------------------------------- representation='gravity'

def arm_raise(rate, seed=0):
    """8 s of a slow arm arc (0.25 Hz) with a faster tremor, gravity along the forearm-ish
    axis: the kind of motion whose direction relative to gravity the 'gravity' channels keep."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(8 * rate)) / rate
    angle = 0.6 * np.sin(2 * np.pi * 0.25 * t)
    gravity = np.stack([np.sin(angle), 0.2 * np.ones_like(t), np.cos(angle)], axis=1)
    tremor = 0.05 * np.sin(2 * np.pi * 2.3 * t)
    acc = gravity + np.stack([tremor, 0.5 * tremor, 0 * t], axis=1)
    return (acc + 0.005 * rng.standard_normal(acc.shape)).astype(np.float32)


@pytest.fixture(scope='module')
def gravity_extractor():
    return AccelToRGBMel(representation='gravity')


def test_gravity_representation_gives_three_64x64_channels(gravity_extractor):
    image = gravity_extractor(arm_raise(50), 50)
    assert image.shape == (3, 64, 64) and image.dtype == np.float32 and np.isfinite(image).all()
    assert gravity_extractor.channel_names == ('vertical', 'horizontal_magnitude', 'principal')
    batch = np.stack([arm_raise(50, seed) for seed in range(3)])
    np.testing.assert_allclose(gravity_extractor(batch, 50)[1], gravity_extractor(batch[1], 50), atol=1e-5)


def test_gravity_channels_survive_rotation_mirror_and_units(gravity_extractor):
    """The vertical is measured in the sensor frame, so mounting and units do not matter."""
    rng = np.random.default_rng(21)
    window = arm_raise(50, seed=2)
    reference = gravity_extractor(window, 50)
    for trial in range(4):
        turn = random_rotation(rng) @ np.diag([1.0, -1.0 if trial % 2 else 1.0, 1.0])
        turned = to_g((window @ turn.T) * 9.80665, 'm/s^2')
        np.testing.assert_allclose(gravity_extractor(turned, 50), reference, atol=2e-3)


def test_gravity_channels_survive_resampling(gravity_extractor):
    reference = gravity_extractor(arm_raise(64), 64)
    strong = reference > reference.max() - 2
    for rate in (32, 50):
        image = gravity_extractor(arm_raise(rate), rate)
        assert np.median(np.abs(image - reference)[strong]) < 0.05, rate


def test_gravity_channels_keep_what_invariant_channels_discard(gravity_extractor, extractor):
    """The same swing done vertically or horizontally: the invariant channels (rotation of
    the dynamics) cannot tell them apart, the gravity channels can (energy on the vertical)."""
    t = np.arange(400) / 50
    swing = 0.3 * np.sin(2 * np.pi * 1.0 * t)
    vertical = np.stack([0 * t, 0 * t, 1 + swing], axis=1).astype(np.float32)
    horizontal = np.stack([swing, 0 * t, 1 + 0 * t], axis=1).astype(np.float32)
    np.testing.assert_allclose(extractor(vertical, 50), extractor(horizontal, 50), atol=2e-3)
    band = slice(2, 8)   # the mel bands around 1 Hz
    v, h = gravity_extractor(vertical, 50), gravity_extractor(horizontal, 50)
    assert v[0, band].max() > h[0, band].max() + 2     # 20 dB more on the vertical channel
    assert h[1, band].max() > v[1, band].max() + 2     # and the other way round horizontally


def test_gravity_channels_without_gravity_fall_back_to_the_principal_axis(gravity_extractor):
    window = arm_raise(50, seed=3)
    linear = window - window.mean(axis=0)
    image = gravity_extractor(linear, 50)
    assert np.isfinite(image).all()
    np.testing.assert_allclose(image[0], image[2], atol=1e-4)
