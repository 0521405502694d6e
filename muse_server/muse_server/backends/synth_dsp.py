"""Vectorised DSP building blocks of the ``synth`` backend: band-limited wavetables,
envelopes, filtered-noise tables, and the stateful block processors of the master bus
(partitioned-convolution reverb, feedback echo, RMS compressor).

numpy only: the music server must run on a machine that has nothing but numpy and
websockets. No per-sample Python loops; recursive filters are avoided where numpy cannot
vectorise them (recursion across a block boundary is done block-wise with carried state,
recursion inside a block is replaced by FIR or FFT equivalents).
"""

from __future__ import annotations

import math
import threading

import numpy as np

TABLE_SIZE = 2048                 # samples per single-cycle wavetable
MAX_HARMONICS = 64
# Harmonic counts a table may have; a note gets the largest one below its Nyquist limit, so
# tables are shared between notes (a "mip-map" of band limits).
HARMONIC_LEVELS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64)
BRIGHTNESS_LEVELS = 9             # brightness is quantised to this many tables per shape
MAX_REQUESTS = 20000              # bound of the (shape, brightness, frequency) lookup memo

TWO_PI = 2.0 * math.pi
DB_PER_NEPER = 20.0 / math.log(10.0)


def midi_to_hz(pitch):
    return 440.0 * 2.0 ** ((np.asarray(pitch, dtype=np.float64) - 69.0) / 12.0)


def db_to_gain(db):
    return 10.0 ** (np.asarray(db, dtype=np.float64) / 20.0)


def rms_db(x, floor_db=-120.0):
    """RMS level of ``x`` in dB relative to full scale (a full-scale sine is -3 dBFS)."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return floor_db
    ms = float(np.mean(x * x))
    return max(10.0 * math.log10(ms), floor_db) if ms > 0 else floor_db


# ---------------------------------------------------------------------------------------------
# Oscillators


def _harmonic_amplitudes(shape, brightness, count):
    """Amplitudes of harmonics 1..count of a waveform ``shape`` darkened by ``brightness``.

    ``brightness`` 1 keeps the textbook spectrum; lower values roll the upper harmonics off
    exponentially, the way a low-pass filter over an analogue oscillator would.
    """
    k = np.arange(1, count + 1, dtype=np.float64)
    if shape == 'saw':
        amps = 1.0 / k
    elif shape == 'square':
        amps = np.where(k % 2 == 1, 1.0 / k, 0.0)
    elif shape == 'triangle':
        amps = np.where(k % 2 == 1, np.where((k - 1) % 4 == 0, 1.0, -1.0) / (k * k), 0.0)
    elif shape == 'sine':
        amps = (k == 1).astype(np.float64)
    elif shape == 'piano':        # a string struck at 1/7.5 of its length: that node is missing
        amps = np.abs(np.sin(np.pi * k / 7.5)) / k ** 1.2
    else:
        raise ValueError(f'unknown waveform shape {shape!r}; expected saw, square, triangle, '
                         'sine or piano')
    return amps * np.exp(-(k - 1.0) * 0.45 * (1.0 - brightness))


def periodic_table(cycle):
    """A lookup table for one cycle of a waveform (TABLE_SIZE samples): row 0 the values,
    row 1 the step to the next value (wrapping), for linear interpolation in one multiply-add."""
    return np.stack([cycle, np.roll(cycle, -1) - cycle])


_PHASES = np.arange(TABLE_SIZE, dtype=np.float64) / TABLE_SIZE
SINE = periodic_table(np.sin(TWO_PI * _PHASES))


def lookup(table, cycles):
    """Read a :func:`periodic_table` at phases ``cycles`` (in cycles, any real value)."""
    pos = cycles * TABLE_SIZE
    index = pos.astype(np.int64)
    frac = pos - index
    index &= TABLE_SIZE - 1            # wraps negative indices too (two's complement)
    return table[0].take(index) + frac * table[1].take(index)


def sine(cycles):
    """sin(2 pi cycles) from a table: about twice as fast as np.sin, error below -110 dB."""
    return lookup(SINE, cycles)


class WavetableBank:
    """Single-cycle band-limited tables, built on first use and shared by every stream.

    Thread-safe: several sessions render at once on the server's worker threads.
    """

    def __init__(self, sample_rate):
        self.sample_rate = sample_rate
        self._tables = {}
        self._by_request = {}      # (shape, brightness, freq) -> table: the per-note fast path
        self._lock = threading.Lock()

    def table(self, shape, brightness, freq):
        """The table for ``shape`` at ``brightness`` in [0, 1] whose harmonics all stay below
        0.45 x the sample rate at fundamental ``freq`` [Hz]."""
        request = (shape, brightness, freq)
        table = self._by_request.get(request)
        if table is None:
            if len(self._by_request) >= MAX_REQUESTS:    # energies vary prompt to prompt
                self._by_request = {}
            table = self._by_request[request] = self._build(shape, brightness, freq)
        return table

    def _build(self, shape, brightness, freq):
        limit = min(int(0.45 * self.sample_rate / max(float(freq), 1.0)), MAX_HARMONICS)
        harmonics = HARMONIC_LEVELS[0]
        for level in HARMONIC_LEVELS:
            if level <= limit:
                harmonics = level
        b_level = int(round(min(max(brightness, 0.0), 1.0) * (BRIGHTNESS_LEVELS - 1)))
        key = (shape, b_level, harmonics)
        table = self._tables.get(key)
        if table is None:
            amps = _harmonic_amplitudes(shape, b_level / (BRIGHTNESS_LEVELS - 1), harmonics)
            k = np.arange(1, harmonics + 1, dtype=np.float64)
            cycle = amps @ np.sin(TWO_PI * np.outer(k, _PHASES))
            table = periodic_table(cycle / max(np.max(np.abs(cycle)), 1e-9))
            with self._lock:
                table = self._tables.setdefault(key, table)
        return table


def soft_clip(x, knee=0.8):
    """Identity below ``knee``, then a tanh curve that approaches but never reaches 1:
    continuous with a continuous slope, so it limits peaks without audible clicks."""
    magnitude = np.abs(x)
    over = magnitude > knee
    if not over.any():
        return x
    room = 1.0 - knee
    limited = knee + room * np.tanh((magnitude - knee) / room)
    return np.where(over, np.sign(x) * limited, x)


# ---------------------------------------------------------------------------------------------
# Noise


def band_shape(freqs, low_hz=None, high_hz=None, order=2, tilt_db_per_octave=0.0, ref_hz=1000.0):
    """Magnitude response of Butterworth-like high/low-pass edges and a spectral tilt."""
    freqs = np.maximum(freqs, 1.0)
    gain = np.ones_like(freqs)
    if low_hz:
        gain /= np.sqrt(1.0 + (low_hz / freqs) ** (2 * order))
    if high_hz:
        gain /= np.sqrt(1.0 + (freqs / high_hz) ** (2 * order))
    if tilt_db_per_octave:
        gain *= db_to_gain(tilt_db_per_octave * np.log2(freqs / ref_hz))
    return gain


NOISE_RMS = 0.35    # noise tables peak near 1.5: a drum hit's short burst then reads as loud
                    # as a tonal voice of unit peak


def filtered_noise(rng, n, sample_rate, **shape):
    """``n`` samples of white noise shaped in the frequency domain by :func:`band_shape`,
    scaled to an RMS of NOISE_RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum *= band_shape(np.fft.rfftfreq(n, 1.0 / sample_rate), **shape)
    noise = np.fft.irfft(spectrum, n)
    return noise * (NOISE_RMS / max(float(np.sqrt(np.mean(noise * noise))), 1e-12))


# The drum kit's noise colours (filtered once per backend; a hit reads a slice at a random
# offset, so no two hits are identical and nothing is filtered per note).
NOISE_SHAPES = {
    'white': {},
    'snare': dict(low_hz=700.0, high_hz=9000.0, tilt_db_per_octave=-1.5),
    'snare_dark': dict(low_hz=300.0, high_hz=3500.0, tilt_db_per_octave=-1.5),
    'clap': dict(low_hz=900.0, high_hz=3500.0, order=2),
    'hat': dict(low_hz=7000.0, order=3, tilt_db_per_octave=1.0),
    'hat_dark': dict(low_hz=3000.0, high_hz=7000.0, order=2),
    'crash': dict(low_hz=3000.0, order=2, tilt_db_per_octave=-1.0),
    'hiss': dict(low_hz=800.0, high_hz=6000.0, order=1),
}


def crackle(rng, n, sample_rate, pops_per_second=9.0):
    """Vinyl crackle: sparse clicks of random size, each a 3 ms decaying impulse."""
    out = np.zeros(n)
    count = max(int(n / sample_rate * pops_per_second), 1)
    np.add.at(out, rng.integers(0, n, size=count), rng.uniform(-1.0, 1.0, size=count))
    click = np.exp(-np.arange(int(0.003 * sample_rate)) / (0.0004 * sample_rate))
    # circular convolution, so the table loops without a seam
    out = np.fft.irfft(np.fft.rfft(out) * np.fft.rfft(click, n), n)
    return out / max(np.max(np.abs(out)), 1e-12)


def make_noise_tables(rng, sample_rate, seconds=3.0):
    """The kit's noise tables (each ``seconds`` long), plus the vinyl crackle (unit peak)."""
    n = int(seconds * sample_rate)
    tables = {name: filtered_noise(rng, n, sample_rate, **shape)
              for name, shape in NOISE_SHAPES.items()}
    tables['crackle'] = crackle(rng, n, sample_rate)
    return tables


def make_reverb_ir(rng, sample_rate, rt60, predelay=0.012, damping=0.5):
    """A diffuse room impulse response: exponentially decaying noise whose high bands decay
    faster (``damping`` 0: evenly, 1: highs die three times sooner), scaled to unit energy so
    a send level is a level ratio. Returns (taps,).

    The response stops once it has decayed by 45 dB (three quarters of the RT60, faded out):
    under a mix the rest is inaudible, and every partition saved is convolution work saved.
    """
    n = int((predelay + min(rt60, 6.0) * 0.75) * sample_rate)
    t = np.arange(n, dtype=np.float64) / sample_rate
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    edges = (0.0, 400.0, 1500.0, 5000.0, sample_rate)
    ir = np.zeros(n)
    for i, (low, high) in enumerate(zip(edges[:-1], edges[1:])):
        band_rt60 = rt60 / (1.0 + damping * 2.0 * i / (len(edges) - 2))
        band = np.fft.irfft(np.where((freqs >= low) & (freqs < high), spectrum, 0.0), n)
        ir += band * np.exp(-6.9 * t / band_rt60)
    start = int(predelay * sample_rate)
    ir[:start] = 0.0
    ramp = int(0.008 * sample_rate)
    ir[start:start + ramp] *= np.linspace(0.0, 1.0, ramp)
    tail = n // 10
    ir[-tail:] *= np.linspace(1.0, 0.0, tail)
    return ir / math.sqrt(float(np.sum(ir * ir)))


# ---------------------------------------------------------------------------------------------
# Stateful block processors (state carried from block to block, so a stream is seamless)


class BlockConvolver:
    """Uniformly partitioned overlap-save convolution of one input with several impulse
    responses (one per output channel): latency-free, cost per block independent of the
    impulse response length apart from one complex multiply-add per partition.

    ``spectra`` are the responses prepared by :meth:`prepare` (shareable between streams).
    """

    def __init__(self, spectra, block):
        self.block = block
        self._spectra = spectra                      # (channels, K, block + 1), reversed in K
        self._partitions = spectra.shape[1]
        self._history = np.zeros((2 * self._partitions, block + 1), dtype=np.complex64)
        self._slot = self._partitions - 1
        self._filled = 0               # partitions of history holding input (the rest is 0)
        self._previous = np.zeros(block)

    @staticmethod
    def prepare(irs, block):
        """Frequency-domain partitions of ``irs`` (channels, taps), ordered for :meth:`process`."""
        irs = np.atleast_2d(np.asarray(irs, dtype=np.float64))
        partitions = -(-irs.shape[1] // block)
        padded = np.zeros((irs.shape[0], partitions, block))
        padded.reshape(irs.shape[0], -1)[:, :irs.shape[1]] = irs
        # single precision halves the memory traffic of the multiply-add; a reverb tail
        # needs no more than 24 bits
        spectra = np.fft.rfft(padded, n=2 * block, axis=-1)[:, ::-1, :]
        return np.ascontiguousarray(spectra.astype(np.complex64))

    def push(self, x):
        """Feed one block of input without computing output (warming the reverb with audio
        that was played before this stream)."""
        spectrum = np.fft.rfft(np.concatenate([self._previous, x]))
        self._previous = np.array(x, dtype=np.float64)
        self._slot = (self._slot + 1) % self._partitions
        self._filled = min(self._filled + 1, self._partitions)
        self._history[self._slot] = spectrum
        self._history[self._slot + self._partitions] = spectrum

    def process(self, x):
        """Convolve one block (block,) and return (channels, block)."""
        self.push(x)
        # Only the partitions that have seen input contribute: a new stream's first blocks
        # cost a fraction of a full convolution.
        skip = self._partitions - self._filled
        recent = self._history[self._slot + 1 + skip:self._slot + 1 + self._partitions]
        out = (recent[None] * self._spectra[:, skip:]).sum(axis=1)
        return np.fft.irfft(out, n=2 * self.block, axis=-1)[:, self.block:]


class FeedbackEcho:
    """Tempo-synced echo: w[n] = x[n - D] + feedback * lowpass(w)[n - D] (wet only), with a
    two-tap low-pass in the loop so repeats grow darker, like tape."""

    def __init__(self, delay, feedback):
        if delay < 2:
            raise ValueError(f'echo delay must be >= 2 samples, got {delay}')
        self.delay = int(delay)
        self.feedback = float(feedback)
        self._x = np.zeros(self.delay)               # x[n - D .. n - 1]
        self._w = np.zeros(self.delay + 1)           # w[n - D - 1 .. n - 1]

    def process(self, x):
        out = np.empty(len(x))
        done = 0
        while done < len(x):                         # sub-blocks no longer than the delay
            step = min(self.delay, len(x) - done)
            chunk = x[done:done + step]
            w = self._x[:step] + 0.5 * self.feedback * (self._w[1:step + 1] + self._w[:step])
            self._x = np.concatenate([self._x[step:], chunk])
            self._w = np.concatenate([self._w[step:], w])
            out[done:done + step] = w
            done += step
        return out


class MovingAverage:
    """Running mean over the last ``window`` samples, continuing across blocks."""

    def __init__(self, window, initial=0.0):
        self.window = max(int(window), 1)
        self._history = np.full(self.window, float(initial))

    def process(self, x):
        joined = np.concatenate([self._history, x])
        sums = np.concatenate([[0.0], np.cumsum(joined)])
        # Output i averages joined[i + 1 .. i + window], the window ending at x[i]. The
        # cumulative sum restarts every block, so rounding errors never accumulate.
        out = (sums[self.window + 1:] - sums[1:len(sums) - self.window]) / self.window
        self._history = joined[-self.window:]
        return out


class RmsCompressor:
    """Feed-forward compressor on a 20 ms RMS detector, gain smoothed by a second 10 ms
    window: smooth enough not to distort, fast enough to tame drum peaks. Linked across
    channels. The gain curve is evaluated every ``hop`` samples (the smoother interpolates),
    which keeps its power function off the per-sample path."""

    def __init__(self, sample_rate, threshold_db, ratio=3.0, window_s=0.02, smooth_s=0.01,
                 hop=16):
        self.threshold_ms = 10.0 ** (threshold_db / 10.0)   # threshold as a mean square
        self.exponent = -0.5 * (1.0 - 1.0 / ratio)
        self.hop = hop
        self._detector = MovingAverage(window_s * sample_rate)
        self._smoother = MovingAverage(smooth_s * sample_rate, initial=1.0)

    def process(self, x):
        """Compress ``x`` (channels, n), n a multiple of ``hop``; return the result."""
        mean_square = self._detector.process(np.mean(x * x, axis=0))[self.hop - 1::self.hop]
        gain = np.maximum(mean_square / self.threshold_ms, 1.0) ** self.exponent
        return x * self._smoother.process(np.repeat(gain, self.hop))
