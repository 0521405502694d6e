"""Test signals for the player: phase-continuous sines cut into fragments, and the bound on
how far consecutive samples of such signals (and of their crossfades) can be apart."""

import numpy as np

from muse_player.jitter_buffer import Fragment


def stepped_sine(freqs, frames_each, rate, amplitude=0.5, phase=0.0):
    """One sine per entry of ``freqs``, each ``frames_each`` long, phase-continuous across
    the steps; returns (fragments' audio list, the phase after the last sample)."""
    pieces = []
    for freq in freqs:
        step = 2 * np.pi * freq / rate
        phases = phase + step * np.arange(frames_each)
        pieces.append((amplitude * np.sin(phases)).astype(np.float32)[:, None])
        phase = phase + step * frames_each
    return pieces, phase


def fragments(prompt_id, pieces, rate, first_seq=0, is_last=False, prompt_stamp=None):
    """Fragments of one stream (``is_first`` on the first, ``is_last`` optional)."""
    out = []
    for k, audio in enumerate(pieces):
        seq = first_seq + k
        out.append(Fragment(prompt_id, seq, audio, rate, is_first=(k == 0),
                            is_last=is_last and k == len(pieces) - 1,
                            prompt_stamp=prompt_stamp))
    return out


def max_step(freq, rate, amplitude):
    """Largest difference of consecutive samples of a sine: 2 A sin(pi f / rate)."""
    return 2 * amplitude * np.sin(np.pi * min(freq, rate / 2) / rate)


def crossfade_step_bound(max_freq, rate, amplitude, fade_frames):
    """Bound on |y[n+1] - y[n]| for y = g_out x_old + g_in x_new with equal-power gains.

    |dy| <= g_out |dx_old| + g_in |dx_new| + |dg_out| |x_old| + |dg_in| |x_new|
         <= sqrt(2) s + 2 A (pi / 2) / L,
    with s the sines' own largest step, A their amplitude and L the fade length (the gains'
    slope is at most pi / (2 L) per frame, and g_out + g_in <= sqrt(2)).
    """
    return np.sqrt(2) * max_step(max_freq, rate, amplitude) + amplitude * np.pi / fade_frames


def dominant_freq(x, rate):
    """Frequency of the strongest spectral peak (Hann window, parabolic interpolation)."""
    n = len(x)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(n), n=4 * n))
    k = int(np.argmax(spectrum[1:-1])) + 1
    a, b, c = np.log(spectrum[k - 1:k + 2] + 1e-12)
    k += 0.5 * (a - c) / (a - 2 * b + c)
    return k * rate / (4 * n)
