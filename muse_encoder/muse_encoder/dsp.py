"""The constant filters of the features, designed in plain numpy.

AccelToRGBMel needs four constants: a periodic analysis window, a mel filterbank, the
resampling matrix of a polyphase FIR resampler and the matrix of a zero-phase Butterworth
high-pass. They used to come from ``scipy.signal`` and ``librosa``, which the encoder node
only needed for these few arrays, at the price of ~150 MB of resident memory (scipy.signal
+82 MB, librosa and numba +71 MB) on an edge budget of 150 MB for the whole node. Here they
are written out, each following the same textbook design and the same conventions as the
library it replaces, so the numbers are the same (tests compare them with scipy / librosa
to ~1e-6; those stay training-time and test-time dependencies only):

- :func:`periodic_window`: ``scipy.signal.get_window(name, n, fftbins=True)`` for Hann and
  Hamming;
- :func:`slaney_mel_filterbank`: ``librosa.filters.mel`` (Slaney mel scale, Slaney area
  normalisation: the librosa defaults);
- :func:`resample_poly_matrix`: ``scipy.signal.resample_poly`` (Kaiser-windowed sinc FIR,
  beta 5, ``padtype='line'`` or zero padding) applied to the identity;
- :func:`butter_highpass_biquad` + :func:`filtfilt_matrix`: ``butter(2, fc, 'highpass',
  fs=fs, output='sos')`` and ``sosfiltfilt`` (odd extension, steady-state initial
  conditions) applied to the identity.

Every function returns float64; callers cast.
"""

import math

import numpy as np

# Periodic generalised cosine windows w[k] = a0 - a1 cos(2 pi k / n).
COSINE_WINDOWS = {'hann': (0.5, 0.5), 'hamming': (0.54, 0.46)}


def periodic_window(name, n):
    """The periodic (DFT-even) window ``name`` of ``n`` samples, as used for spectra."""
    if name not in COSINE_WINDOWS:
        raise ValueError(f'window must be one of {tuple(COSINE_WINDOWS)}, got {name!r}')
    a0, a1 = COSINE_WINDOWS[name]
    return a0 - a1 * np.cos(2 * np.pi * np.arange(n) / n)


# ----------------------------------------------------------------------------- mel filterbank

# Slaney's mel scale (Auditory Toolbox): linear below 1 kHz (200/3 Hz per mel), logarithmic above.
_SLANEY_HZ_PER_MEL = 200.0 / 3
_SLANEY_LOG_START_HZ = 1000.0
_SLANEY_LOG_START_MEL = _SLANEY_LOG_START_HZ / _SLANEY_HZ_PER_MEL
_SLANEY_LOG_STEP = math.log(6.4) / 27.0


def hz_to_slaney_mel(hz):
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _SLANEY_HZ_PER_MEL
    above = hz >= _SLANEY_LOG_START_HZ
    logarithmic = _SLANEY_LOG_START_MEL + np.log(np.maximum(hz, _SLANEY_LOG_START_HZ)
                                                 / _SLANEY_LOG_START_HZ) / _SLANEY_LOG_STEP
    return np.where(above, logarithmic, linear)


def slaney_mel_to_hz(mel):
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * _SLANEY_HZ_PER_MEL
    above = mel >= _SLANEY_LOG_START_MEL
    logarithmic = _SLANEY_LOG_START_HZ * np.exp(
        _SLANEY_LOG_STEP * (np.maximum(mel, _SLANEY_LOG_START_MEL) - _SLANEY_LOG_START_MEL))
    return np.where(above, logarithmic, linear)


def slaney_mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax):
    """(n_mels, n_fft // 2 + 1) triangular filters evenly spaced on the Slaney mel scale
    between ``fmin`` and ``fmax``, each scaled to unit area in Hz (2 / its width), as
    ``librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax)`` with its defaults."""
    bins = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = slaney_mel_to_hz(np.linspace(hz_to_slaney_mel(fmin), hz_to_slaney_mel(fmax), n_mels + 2))
    widths = np.diff(edges)
    distance = edges[:, np.newaxis] - bins[np.newaxis, :]          # (n_mels + 2, bins)
    rising = -distance[:-2] / widths[:-1, np.newaxis]
    falling = distance[2:] / widths[1:, np.newaxis]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return weights * (2.0 / (edges[2:] - edges[:-2]))[:, np.newaxis]


# ----------------------------------------------------------------------------- resampling

KAISER_BETA = 5.0              # scipy.signal.resample_poly's default window ('kaiser', 5.0)
HALF_LENGTH_PER_RATE = 10      # its filter: 2 * 10 * max(up, down) + 1 taps


def lowpass_fir(taps, cutoff):
    """Windowed-sinc low-pass of ``taps`` (odd) taps, ``cutoff`` relative to Nyquist,
    Kaiser window (beta 5), unit gain at DC: ``scipy.signal.firwin(taps, cutoff,
    window=('kaiser', 5.0))``."""
    m = np.arange(taps) - (taps - 1) / 2
    h = cutoff * np.sinc(cutoff * m) * np.kaiser(taps, KAISER_BETA)
    return h / h.sum()


def _upfirdn_output_length(taps, n_in, up, down):
    return ((n_in - 1) * up + taps - 1) // down + 1


def resample_poly_matrix(n_in, up, down, padtype='line'):
    """Matrix (n_out, n_in), n_out = ceil(n_in up / down), of ``scipy.signal.resample_poly(x,
    up, down, padtype=padtype)`` with its default window: upsample by ``up`` (zeros between
    samples), filter with a Kaiser-windowed sinc, keep every ``down``-th sample, aligned so
    that output 0 sits on input 0. ``padtype``: 'line' extends the input beyond both ends on
    the straight line through its first and last samples (so an offset such as gravity or a
    drift does not ring at the edges); 'constant' pads with zeros."""
    if padtype not in ('line', 'constant'):
        raise ValueError(f"padtype must be 'line' or 'constant', got {padtype!r}")
    divisor = math.gcd(up, down)
    up, down = up // divisor, down // divisor
    if up == down == 1:
        return np.eye(n_in)
    n_out = -(-n_in * up // down)
    rate = max(up, down)
    half = HALF_LENGTH_PER_RATE * rate
    h = lowpass_fir(2 * half + 1, 1.0 / rate) * up
    # Zero-pad the filter so that the output samples fall on the input grid (as scipy does).
    pre_pad = down - half % down
    post_pad = 0
    pre_remove = (half + pre_pad) // down
    while _upfirdn_output_length(len(h) + pre_pad + post_pad, n_in, up, down) < n_out + pre_remove:
        post_pad += 1
    h = np.concatenate([np.zeros(pre_pad), h, np.zeros(post_pad)])

    # Output j is the filter output at upsampled position j * down; input sample i (also
    # i < 0 and i >= n_in: the extension beyond the ends) sits at upsampled position i * up.
    extra = -(-len(h) // up) + 1          # extension samples the filter can reach on each side
    outputs = np.arange(pre_remove, pre_remove + n_out)
    lag = outputs[:, np.newaxis] * down - np.arange(-extra, n_in + extra)[np.newaxis, :] * up
    taps = np.where((lag >= 0) & (lag < len(h)), h[np.clip(lag, 0, len(h) - 1)], 0.0)
    matrix = taps[:, extra:extra + n_in].copy()
    if padtype == 'line' and n_in > 1:
        # Beyond the ends the input continues on the line through its first and last samples:
        # x[-o] = x[0] - o s and x[n - 1 + o] = x[n - 1] + o s, with s = (x[n - 1] - x[0]) / (n - 1),
        # which only involves x[0] and x[n - 1].
        o = np.arange(1, extra + 1) / (n_in - 1)
        left = taps[:, extra - 1::-1]                  # columns of x[-1], x[-2], ...
        right = taps[:, extra + n_in:]                 # columns of x[n], x[n + 1], ...
        matrix[:, 0] += left @ (1 + o) - right @ o
        matrix[:, -1] += right @ (1 + o) - left @ o
    return matrix


# ----------------------------------------------------------------------------- high-pass

def butter_highpass_biquad(cutoff_hz, sample_rate):
    """(b, a) of the 2nd-order Butterworth high-pass at ``cutoff_hz``: the analog prototype
    s^2 / (s^2 + sqrt(2) w s + w^2) through the bilinear transform with the cutoff pre-warped
    (w = tan(pi fc / fs)), as ``scipy.signal.butter(2, fc, 'highpass', fs=fs)``."""
    if not 0 < cutoff_hz < sample_rate / 2:
        raise ValueError(f'cutoff must lie in (0, Nyquist = {sample_rate / 2} Hz), got {cutoff_hz!r}')
    k = math.tan(math.pi * cutoff_hz / sample_rate)
    norm = 1.0 + math.sqrt(2.0) * k + k * k
    b = np.array([1.0, -2.0, 1.0]) / norm
    a = np.array([1.0, 2.0 * (k * k - 1.0) / norm, (1.0 - math.sqrt(2.0) * k + k * k) / norm])
    return b, a


def steady_state(b, a):
    """Initial state of a direct-form-II-transposed filter for a unit step input, so a signal
    starting at x0 starts with state x0 * steady_state (``scipy.signal.lfilter_zi``)."""
    b, a = np.asarray(b, np.float64) / a[0], np.asarray(a, np.float64) / a[0]
    order = len(a) - 1
    companion = np.zeros((order, order))
    companion[0] = -a[1:]
    companion[1:, :-1] += np.eye(order - 1)
    return np.linalg.solve(np.eye(order) - companion.T, b[1:] - a[1:] * b[0])


def lfilter_columns(b, a, x, state):
    """IIR filter ``b/a`` along axis 0 of ``x`` (direct form II transposed), starting from
    ``state`` (order, columns); returns the output."""
    b, a = np.asarray(b, np.float64) / a[0], np.asarray(a, np.float64) / a[0]
    order = len(a) - 1
    z = np.array(state, dtype=np.float64)
    y = np.empty_like(x, dtype=np.float64)
    for n in range(len(x)):
        y[n] = b[0] * x[n] + z[0]
        for i in range(order - 1):
            z[i] = b[i + 1] * x[n] - a[i + 1] * y[n] + z[i + 1]
        z[order - 1] = b[order] * x[n] - a[order] * y[n]
    return y


def filtfilt_matrix(b, a, n):
    """Matrix (n, n) of the zero-phase filter ``b/a`` on n samples, forward then backward,
    as ``scipy.signal.sosfiltfilt`` / ``filtfilt`` with their defaults: the signal extended
    at both ends by an odd reflection of ``3 (2 sections + 1)`` samples (9 for one biquad)
    and each pass started in the steady state of its first sample."""
    sections = (len(a) - 1 + 1) // 2                 # second-order sections of the filter
    pad = 3 * (2 * sections + 1)
    if n <= pad:
        raise ValueError(f'need more than {pad} samples to filter forward and backward, got {n}')
    x = np.eye(n)
    extended = np.concatenate([2 * x[:1] - x[pad:0:-1], x, 2 * x[-1:] - x[-2:-pad - 2:-1]])
    zi = steady_state(b, a)[:, np.newaxis]
    forward = lfilter_columns(b, a, extended, zi * extended[:1])
    backward = lfilter_columns(b, a, forward[::-1], zi * forward[-1:])[::-1]
    return backward[pad:-pad]
