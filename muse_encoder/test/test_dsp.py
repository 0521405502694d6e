"""The numpy designs of the feature constants equal scipy's and librosa's (which stay
test- and training-time dependencies only), and AccelToRGBMel's matrices are theirs."""

import librosa
import numpy as np
import pytest
from scipy.signal import butter, get_window, resample_poly, sosfiltfilt

from muse_encoder import dsp
from muse_encoder.features import AccelToRGBMel

TOLERANCE = 1e-6


@pytest.mark.parametrize('name', sorted(dsp.COSINE_WINDOWS))
def test_periodic_window_is_scipys(name):
    np.testing.assert_allclose(dsp.periodic_window(name, 128), get_window(name, 128, fftbins=True),
                               rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize('sr, n_fft, n_mels, fmin, fmax', [
    (64.0, 128, 64, 0.0, 32.0),            # the features' own
    (16000, 512, 40, 20.0, 8000.0)])       # across Slaney's 1 kHz knee: the log part too
def test_mel_filterbank_is_librosas(sr, n_fft, n_mels, fmin, fmax):
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, dtype=np.float64)
    np.testing.assert_allclose(dsp.slaney_mel_filterbank(sr, n_fft, n_mels, fmin, fmax), ref,
                               rtol=0, atol=TOLERANCE * np.abs(ref).max())


@pytest.mark.parametrize('padtype', ['line', 'constant'])
@pytest.mark.parametrize('rate', [16, 20, 25, 32, 40, 50, 80, 100, 64.5, 2000])
def test_resampling_matrix_is_resample_poly_on_the_identity(rate, padtype):
    from fractions import Fraction
    ratio = Fraction(64) / Fraction(rate)
    n_in = int(round(8 * rate))
    mine = dsp.resample_poly_matrix(n_in, ratio.numerator, ratio.denominator, padtype)
    x = np.random.default_rng(0).standard_normal((n_in, 3)) + [0.1, -0.3, 1.0]   # with an offset
    ref = resample_poly(x, ratio.numerator, ratio.denominator, axis=0, padtype=padtype)
    assert mine.shape == (len(ref), n_in)
    np.testing.assert_allclose(mine @ x, ref, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize('cutoff, fs', [(0.3, 64.0), (2.0, 50.0)])
def test_butterworth_high_pass_and_zero_phase_filtering_are_scipys(cutoff, fs):
    sos = butter(2, cutoff, 'highpass', fs=fs, output='sos')
    b, a = dsp.butter_highpass_biquad(cutoff, fs)
    np.testing.assert_allclose(np.concatenate([b, a]), sos[0], rtol=0, atol=1e-12)
    x = np.random.default_rng(1).standard_normal((512, 3)) + [0.0, 0.0, 1.0]
    np.testing.assert_allclose(dsp.filtfilt_matrix(b, a, 512) @ x, sosfiltfilt(sos, x, axis=0),
                               rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize('rate', [32, 50])
def test_feature_constants_are_the_scipy_librosa_ones(rate):
    """The exact matrices the features use, against the scipy/librosa construction they replace."""
    features = AccelToRGBMel()
    p = features.params
    n_in = features.window_samples(rate)
    n = p.window_samples
    resampled = resample_poly(np.eye(n_in), 64, rate, axis=0, padtype='line')[:n]
    stage = sosfiltfilt(butter(2, p.gravity_cutoff_hz, 'highpass', fs=64.0, output='sos'),
                        np.eye(n) - 1.0 / n, axis=0)
    ref = stage @ resampled @ (np.eye(n_in) - 1.0 / n_in)
    np.testing.assert_allclose(features._resampler(rate, n_in), ref, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(features._mel_basis, librosa.filters.mel(
        sr=64.0, n_fft=p.n_fft, n_mels=p.n_mels, fmin=p.fmin_hz, fmax=p.fmax_hz), rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(features._analysis_window, get_window('hann', p.n_fft, fftbins=True),
                               rtol=0, atol=TOLERANCE)


def test_unsupported_designs_are_refused():
    with pytest.raises(ValueError, match='window'):
        AccelToRGBMel(window_fn='blackman')
    with pytest.raises(ValueError, match='padtype'):
        AccelToRGBMel(resample_padtype='mean')
    with pytest.raises(ValueError, match='Nyquist'):
        dsp.butter_highpass_biquad(40.0, 64.0)
