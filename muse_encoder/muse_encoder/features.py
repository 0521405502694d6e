"""AccelToRGBMel: wrist acceleration windows -> 3-channel log-mel "images" for the activity CNN.

One 8 s window of 3-axis acceleration (in g) is resampled to 64 Hz (512 samples), turned into
three device-invariant motion channels (below), each channel becomes a 64 x 64 log-mel
spectrogram (64 mel bands from 0 to 32 Hz by 64 frames), and the three are stacked as the
channels of one image. Training and the encoder node both call this class, so the model
always sees exactly the features it was trained on.

Device invariance (``representation='invariant'``, the default). Wrist sensors disagree on
conventions: the Empatica E4 reports gravity plus motion in 1/64 g, phone and watch APIs
usually linear acceleration (gravity removed) in m/s^2, on either wrist, in any mounting.
So, after resampling:

1. gravity and posture are removed: the window mean (a constant gravity vector) is
   subtracted and a zero-phase Butterworth high-pass (``gravity_cutoff_hz``) removes slow
   posture drift. What is left is the same whether or not the device removed gravity;
2. the dynamic acceleration is expressed in its own principal axes (eigenvectors of its
   3 x 3 covariance over the window), which rotate with the sensor, so any fixed rotation or
   mirror (the other wrist) gives the same projections up to sign, which the power spectrum
   does not see;
3. the channels are the projection on the principal axis (the direction the wrist moves
   most: the swing or step direction), the magnitude across the two other axes, and the
   magnitude of the whole dynamic vector (the latter two with their window mean removed).

Units are converted to g before all this (:func:`to_g`; ``'auto'`` recognises m/s^2 by a
resting magnitude near 9.8). A ``log_floor`` of 1e-2 g^2 sits above the E4's 1/64 g
quantisation noise and typical sensor noise, so a still wrist looks the same on every device.
What the invariant channels cannot know: the forearm's posture (gravity direction), which
an unknown mounting makes unknowable anyway. ``representation='axes'`` keeps the raw axes.

Why these numbers: an FFT of 128 samples (2 s at 64 Hz, 0.5 Hz bins) resolves gait and
pedalling cadences (0.5-3 Hz) and their harmonics; a hop of 8 samples with ``n_fft - hop``
samples of reflect padding split over both ends gives exactly ``512 / 8 = 64`` frames, each
centred on its own 8-sample block. Below 1 kHz the (Slaney) mel scale is linear, so over
0-32 Hz the 64 bands are evenly spaced triangles, one or two FFT bins wide.

The pipeline is linear up to the power spectrum, so resampling for a given input rate is a
precomputed matrix (the polyphase filter of ``scipy.signal.resample_poly`` applied to the
identity) and the whole batch of windows and axes goes through one matmul, one strided
framing, one rFFT and one mel matmul. The constant filters (that matrix, the Hann window,
the mel filterbank) are designed in plain numpy (:mod:`muse_encoder.dsp`, equal to scipy's and
librosa's to ~1e-13), so the encoder node's process imports neither scipy nor librosa.
"""

from dataclasses import asdict, dataclass
from fractions import Fraction
import math
import threading

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from muse_encoder import dsp

AXES = ('x', 'y', 'z')
REPRESENTATIONS = ('invariant', 'axes', 'gravity')
CHANNELS = {'invariant': ('principal', 'orthogonal_magnitude', 'magnitude'), 'axes': AXES,
            'gravity': ('vertical', 'horizontal_magnitude', 'principal')}

STANDARD_GRAVITY = 9.80665            # m/s^2 per g
E4_COUNTS_PER_G = 64.0                # Empatica E4 wrist ACC: 1/64 g per count
# Input units -> factor to g. 'auto' decides between g and m/s^2 from the magnitude.
UNIT_SCALE = {'g': 1.0, 'm/s^2': 1.0 / STANDARD_GRAVITY, 'e4_counts': 1.0 / E4_COUNTS_PER_G}
UNITS = tuple(UNIT_SCALE) + ('auto',)
# A median magnitude above this (in the input's units) cannot be g on a wrist at rest or in
# everyday motion; with gravity present, m/s^2 gives ~9.8.
AUTO_MS2_THRESHOLD = 4.0


class FeatureInputError(ValueError):
    """Acceleration handed to the feature extractor cannot be turned into features."""


class SampleRateError(FeatureInputError):
    """The sample rate is not a usable positive rate."""


class WindowLengthError(FeatureInputError):
    """A window does not hold the number of samples that the window length asks for."""


class InputShapeError(FeatureInputError):
    """The array is not shaped (T, 3) or (B, T, 3)."""


class NonFiniteInputError(FeatureInputError):
    """The acceleration contains NaN or infinite values."""


class UnitsError(FeatureInputError):
    """The units of the acceleration are not one of UNITS."""


def looks_like_ms2(acc):
    """True if the median magnitude of acceleration (N, 3) or (B, T, 3) says m/s^2, not g.

    Only data that contains gravity can be told apart this way: linear acceleration (gravity
    removed) has small magnitudes in either unit, and then its declared units must be used.
    """
    magnitude = np.linalg.norm(np.asarray(acc, dtype=np.float64).reshape(-1, 3), axis=1)
    return bool(magnitude.size) and float(np.median(magnitude)) > AUTO_MS2_THRESHOLD


def to_g(acc, units):
    """Acceleration in ``units`` (one of UNITS) -> float32 in g."""
    if units not in UNITS:
        raise UnitsError(f'acceleration units must be one of {UNITS}, got {units!r}')
    acc = np.asarray(acc)
    if units == 'auto':
        units = 'm/s^2' if looks_like_ms2(acc) else 'g'
    return (acc * np.float32(UNIT_SCALE[units])).astype(np.float32, copy=False)


@dataclass(frozen=True)
class FeatureParams:
    """Everything that defines the features; stored in every checkpoint."""

    target_rate_hz: float = 64.0
    window_s: float = 8.0
    stride_s: float = 2.0
    n_fft: int = 128
    hop_length: int = 8
    n_mels: int = 64
    fmin_hz: float = 0.0
    fmax_hz: float = 32.0
    window_fn: str = 'hann'
    log_floor: float = 1e-2          # added to mel power before log10 [g^2]; above E4 quantisation noise
    resample_padtype: str = 'line'   # resample_poly padding: 'line' follows gravity's offset and drift
    representation: str = 'invariant'   # 'invariant' (device-independent), 'axes' (raw x, y, z) or 'gravity'
    gravity_cutoff_hz: float = 0.3   # high-pass separating gravity/posture from motion

    @property
    def window_samples(self):
        return int(round(self.window_s * self.target_rate_hz))

    @property
    def n_frames(self):
        return self.window_samples // self.hop_length

    def as_dict(self):
        return asdict(self)


# Input rates below this cannot carry the motion the features look at (gait harmonics up
# to ~8 Hz); above it, the rational resampling factors become unwieldy.
MIN_INPUT_RATE_HZ = 16.0
MAX_INPUT_RATE_HZ = 2000.0


def _rate_ratio(sample_rate):
    """(up, down) of a rational sample rate; raises SampleRateError for unusable rates."""
    if isinstance(sample_rate, (bool, np.bool_)) or not isinstance(
            sample_rate, (int, float, np.integer, np.floating)):
        raise SampleRateError(
            f'sample_rate must be a number in Hz, got {type(sample_rate).__name__} {sample_rate!r}')
    rate = float(sample_rate)
    if not math.isfinite(rate) or not MIN_INPUT_RATE_HZ <= rate <= MAX_INPUT_RATE_HZ:
        raise SampleRateError(
            f'sample_rate must be between {MIN_INPUT_RATE_HZ:g} and {MAX_INPUT_RATE_HZ:g} Hz, '
            f'got {sample_rate!r}')
    fraction = Fraction(rate).limit_denominator(100)
    if abs(float(fraction) - rate) > 1e-9 * rate:
        raise SampleRateError(
            f'sample_rate {rate!r} Hz is not a ratio of small integers (p/q with q <= 100); '
            'resample the stream to a regular rate first')
    return fraction


class AccelToRGBMel:
    """Acceleration in g -> log10 mel power, shape (B, 3, n_mels, n_frames) float32.

    ``features(acc_g, sample_rate)`` takes one window (T, 3) or a batch (B, T, 3), where T is
    exactly ``window_s * sample_rate`` samples. ``sliding_windows`` cuts a longer stream into
    windows every ``stride_s``. Thread-safe: caches are filled under a lock.
    """

    def __init__(self, params=None, **overrides):
        params = params if params is not None else FeatureParams()
        if isinstance(params, dict):
            params = FeatureParams(**params)
        if overrides:
            params = FeatureParams(**{**params.as_dict(), **overrides})
        self._check_params(params)
        self.params = params
        self._analysis_window = dsp.periodic_window(params.window_fn, params.n_fft).astype(np.float32)
        self._mel_basis = dsp.slaney_mel_filterbank(
            params.target_rate_hz, params.n_fft, params.n_mels,
            params.fmin_hz, params.fmax_hz).astype(np.float32)
        self._highpass = dsp.butter_highpass_biquad(params.gravity_cutoff_hz, params.target_rate_hz)
        self._resamplers = {}
        self._lock = threading.Lock()

    @staticmethod
    def _check_params(params):
        if params.window_samples % params.hop_length:
            raise ValueError(f'window of {params.window_samples} samples is not a whole number '
                             f'of hops of {params.hop_length}')
        if not params.hop_length <= params.n_fft <= params.window_samples:
            raise ValueError(f'n_fft {params.n_fft} must lie between hop_length '
                             f'{params.hop_length} and the window ({params.window_samples})')
        if (params.n_fft - params.hop_length) % 2:
            raise ValueError('n_fft - hop_length must be even to pad both ends alike')
        if not 0 <= params.fmin_hz < params.fmax_hz <= params.target_rate_hz / 2:
            raise ValueError(f'need 0 <= fmin < fmax <= Nyquist ({params.target_rate_hz / 2} Hz)')
        if params.representation not in REPRESENTATIONS:
            raise ValueError(f'representation must be one of {REPRESENTATIONS}, got {params.representation!r}')
        if params.window_fn not in dsp.COSINE_WINDOWS:
            raise ValueError(f'window_fn must be one of {tuple(dsp.COSINE_WINDOWS)}, got {params.window_fn!r}')
        if params.resample_padtype not in ('line', 'constant'):
            raise ValueError(f"resample_padtype must be 'line' or 'constant', got {params.resample_padtype!r}")
        if not 0 < params.gravity_cutoff_hz < params.target_rate_hz / 2:
            raise ValueError(f'gravity_cutoff_hz must be in (0, Nyquist), got {params.gravity_cutoff_hz!r}')

    @property
    def channel_names(self):
        return CHANNELS[self.params.representation]

    @property
    def output_shape(self):
        return (len(AXES), self.params.n_mels, self.params.n_frames)

    def window_samples(self, sample_rate):
        """Samples in one window at ``sample_rate`` (which must be usable)."""
        _rate_ratio(sample_rate)
        return int(round(self.params.window_s * float(sample_rate)))

    def stride_samples(self, sample_rate):
        _rate_ratio(sample_rate)
        return int(round(self.params.stride_s * float(sample_rate)))

    def _resampler(self, sample_rate, n_in):
        """Matrix (window_samples, n_in) mapping a window at sample_rate to the target rate
        (and, for the invariant representation, removing gravity and posture), or None."""
        key = (float(sample_rate), n_in)
        with self._lock:
            if key not in self._resamplers:
                self._resamplers[key] = self._linear_stage(sample_rate, n_in)
            return self._resamplers[key]

    def _linear_stage(self, sample_rate, n_in):
        p = self.params
        ratio = Fraction(float(p.target_rate_hz)) / _rate_ratio(sample_rate)
        matrix = None
        if ratio != 1:
            # resample_poly is linear in its input (line padding included), so its response
            # to the identity is the resampling matrix.
            matrix = dsp.resample_poly_matrix(n_in, ratio.numerator, ratio.denominator,
                                              p.resample_padtype)[:p.window_samples]
        if p.representation == 'invariant':
            # Mean removal and the zero-phase high-pass are linear too: fold them into the
            # same matrix, so gravity separation costs nothing at run time.
            # The input's mean goes first too: resampling does not map a constant exactly
            # onto a constant near the window edges.
            n = p.window_samples
            stage = dsp.filtfilt_matrix(*self._highpass, n) @ (np.eye(n) - 1.0 / n)
            matrix = stage if matrix is None else stage @ matrix @ (np.eye(n_in) - 1.0 / n_in)
        return None if matrix is None else np.ascontiguousarray(matrix, dtype=np.float32)

    def _as_batch(self, acc_g, sample_rate):
        acc = np.asarray(acc_g)
        if acc.dtype.kind not in 'fiu':
            raise InputShapeError(f'acceleration must be numeric, got dtype {acc.dtype}')
        if acc.ndim == 2:
            acc = acc[np.newaxis]
        if acc.ndim != 3 or acc.shape[-1] != len(AXES):
            raise InputShapeError(
                f'acceleration must be shaped (T, 3) or (B, T, 3) with axes x, y, z in g; got {np.shape(acc_g)}')
        expected = self.window_samples(sample_rate)
        if acc.shape[1] != expected:
            kind = 'too short' if acc.shape[1] < expected else 'too long'
            raise WindowLengthError(
                f'window is {kind}: {acc.shape[1]} samples at {float(sample_rate):g} Hz, expected exactly '
                f'{expected} ({self.params.window_s:g} s); cut streams with sliding_windows()')
        if acc.shape[0] == 0:
            raise InputShapeError('empty batch: no windows to turn into features')
        acc = acc.astype(np.float32, copy=False)
        if not np.isfinite(acc).all():
            bad = np.argwhere(~np.isfinite(acc))[0]
            raise NonFiniteInputError(
                f'acceleration contains NaN or inf (first at window {bad[0]}, sample {bad[1]}, '
                f'axis {AXES[bad[2]]}); interpolate or drop such windows first')
        return acc

    def features(self, acc_g, sample_rate):
        """Log-mel images of windows: (T, 3) -> (3, M, F), (B, T, 3) -> (B, 3, M, F), float32."""
        single = np.ndim(acc_g) == 2
        acc = self._as_batch(acc_g, sample_rate)
        batch = acc.shape[0]
        # (B, 3, T): one row per (window, axis), so every step below is batched over both.
        signal = np.ascontiguousarray(acc.transpose(0, 2, 1))
        matrix = self._resampler(sample_rate, acc.shape[1])
        if matrix is not None:
            signal = signal @ matrix.T
        p = self.params
        if p.representation == 'invariant':
            signal = self.invariant_channels(signal)
        elif p.representation == 'gravity':
            signal = gravity_channels(signal)
        pad = (p.n_fft - p.hop_length) // 2
        signal = np.pad(signal, ((0, 0), (0, 0), (pad, pad)), mode='reflect')
        frames = sliding_window_view(signal, p.n_fft, axis=-1)[..., ::p.hop_length, :]
        spectrum = np.fft.rfft(frames * self._analysis_window, axis=-1)
        power = spectrum.real ** 2 + spectrum.imag ** 2                # (B, 3, F, n_fft/2+1)
        mel = power.astype(np.float32) @ self._mel_basis.T                # (B, 3, F, M)
        image = np.log10(mel + np.float32(p.log_floor)).transpose(0, 1, 3, 2)  # (B, 3, M, F)
        image = np.ascontiguousarray(image, dtype=np.float32)
        assert image.shape == (batch,) + self.output_shape
        return image[0] if single else image

    __call__ = features

    @staticmethod
    def invariant_channels(dynamic):
        """(B, 3, T) dynamic acceleration (gravity and posture removed by the linear stage)
        -> (B, 3, T) device-invariant channels: principal-axis projection, orthogonal
        magnitude, magnitude (module docstring)."""
        covariance = dynamic @ dynamic.transpose(0, 2, 1)              # (B, 3, 3)
        _, axes = np.linalg.eigh(covariance.astype(np.float64))        # ascending eigenvalues
        projected = axes.transpose(0, 2, 1).astype(np.float32) @ dynamic   # rows: minor .. principal
        principal = projected[:, 2]
        orthogonal = np.sqrt(projected[:, 0] ** 2 + projected[:, 1] ** 2)
        magnitude = np.sqrt(np.sum(dynamic ** 2, axis=1))
        orthogonal -= orthogonal.mean(axis=-1, keepdims=True)
        magnitude -= magnitude.mean(axis=-1, keepdims=True)
        return np.ascontiguousarray(np.stack([principal, orthogonal, magnitude], axis=1))

    def sliding_windows(self, acc_g, sample_rate):
        """Cut a stream (N, 3) into windows (W, T, 3) every stride; returns (windows, starts).

        ``starts`` are the first sample indices of the windows in the input stream.
        """
        acc = np.asarray(acc_g)
        if acc.ndim != 2 or acc.shape[-1] != len(AXES):
            raise InputShapeError(f'a stream must be shaped (N, 3), got {acc.shape}')
        length = self.window_samples(sample_rate)
        stride = self.stride_samples(sample_rate)
        if acc.shape[0] < length:
            raise WindowLengthError(
                f'stream is too short: {acc.shape[0]} samples at {float(sample_rate):g} Hz, '
                f'a window needs {length} ({self.params.window_s:g} s)')
        starts = np.arange(0, acc.shape[0] - length + 1, stride)
        windows = sliding_window_view(acc, length, axis=0)[starts].transpose(0, 2, 1)
        return windows, starts

    def batched_features(self, windows, sample_rate, batch_size=512, progress=None):
        """Features of many windows (W, T, 3) -> (W, 3, M, F), ``batch_size`` windows per call
        of :meth:`features` so the intermediate arrays stay small; ``progress(n)`` is called
        after each batch of n windows."""
        images = np.empty((len(windows),) + self.output_shape, np.float32)
        for first in range(0, len(windows), batch_size):
            batch = windows[first:first + batch_size]
            images[first:first + batch_size] = self.features(batch, sample_rate)
            if progress is not None:
                progress(len(batch))
        return images

    def stream_features(self, acc_g, sample_rate, batch_size=512):
        """Features of every stride of a stream: (images (W, 3, M, F), starts (W,))."""
        windows, starts = self.sliding_windows(acc_g, sample_rate)
        return self.batched_features(windows, sample_rate, batch_size), starts


# ----------------------------------------------------- representation='gravity' (posture kept)

# Below this window-mean magnitude (in g) the stream carries no usable gravity (a device that
# removed it): the vertical is then undefined and the principal axis stands in for it.
MIN_GRAVITY_G = 0.5


def gravity_channels(signal):
    """(B, 3, T) acceleration in g *with gravity*, resampled -> (B, 3, T) channels in the
    frame of the window's own gravity direction: the dynamic acceleration (window mean
    removed, no high-pass, so slow arm arcs of 0.1-0.3 Hz stay) projected on the vertical
    (signed), its horizontal magnitude, and its projection on its principal axis.

    Why: arm exercises differ by which way the arm moves relative to gravity (raising the
    arm vs swinging it horizontally), which ``invariant_channels`` discards. The vertical is
    the window mean measured in the sensor frame, so any fixed rotation or mirror of the
    sensor still gives the same channels (up to sign), as do units and rate; removing
    gravity on the device does not (windows without gravity fall back to the principal axis
    as their "vertical", and such data should use 'invariant').
    """
    gravity = signal.mean(axis=-1, keepdims=True)                      # (B, 3, 1)
    dynamic = signal - gravity
    norm = np.sqrt(np.sum(gravity ** 2, axis=1, keepdims=True))        # (B, 1, 1)
    covariance = dynamic @ dynamic.transpose(0, 2, 1)                  # (B, 3, 3)
    _, axes = np.linalg.eigh(covariance.astype(np.float64))            # ascending eigenvalues
    principal_axis = axes[:, :, 2:].astype(np.float32)                 # (B, 3, 1)
    vertical_axis = np.where(norm >= MIN_GRAVITY_G, gravity / np.maximum(norm, 1e-12), principal_axis)
    vertical = np.sum(vertical_axis * dynamic, axis=1)                 # (B, T)
    horizontal = np.sqrt(np.maximum(np.sum(dynamic ** 2, axis=1) - vertical ** 2, 0.0))
    horizontal -= horizontal.mean(axis=-1, keepdims=True)
    principal = np.sum(principal_axis * dynamic, axis=1)
    return np.ascontiguousarray(np.stack([vertical, horizontal, principal], axis=1), dtype=np.float32)
