"""Tests of the ``synth`` music backend: the fragment contract, seamless streaming,
determinism, and that the prompt's tempo, energy and style are audible in the audio, measured
with standard music-analysis features (librosa) rather than read back from the composer."""

import math

import librosa
import numpy as np
import pytest

from muse_server.backends import BackendError, PromptSpec, check_fragment, create_backend
from muse_server.backends.synth import (GLIDE_BARS, KEY_CONFIDENCE, SynthBackend,
                                              SynthConfigError, fold_tempo, loudness_target_db,
                                              render)
from muse_server.backends.synth_compose import BARS_PER_SECTION, BEATS_PER_BAR
from muse_server.backends.synth_dsp import (BlockConvolver, FeedbackEcho, MovingAverage,
                                                  rms_db, sine, soft_clip)
from muse_server.backends.synth_styles import DEFAULT_STYLE, STYLES, resolve_style
from muse_server.backends.synth_theory import Key, estimate_key, voice_chord

SR = 32000
HOP = 64                      # onset-envelope hop: 2 ms, fine enough for 1 % tempo resolution


@pytest.fixture(scope='module')
def backend():
    return SynthBackend(seed=7, fragment_s=0.5)


def prompt(style='chill_techno', energy=0.6, bpm=112.0, prompt_id=1, text=''):
    return PromptSpec(prompt_id=prompt_id, text=text, style=style, energy=energy, target_bpm=bpm)


def mono(audio):
    return audio.astype(np.float64).mean(axis=1)


def onset_envelope(y, **mel):
    return librosa.onset.onset_strength(y=y, sr=SR, hop_length=HOP, **mel)


# -- the fragment contract --------------------------------------------------------------------


@pytest.mark.parametrize('style', sorted(STYLES))
def test_fragments_are_float32_blocks_in_range(backend, style):
    with backend.open_stream(prompt(style)) as stream:
        for _ in range(6):
            fragment = stream.next_fragment()
            assert fragment.dtype == np.float32
            assert fragment.shape == (16000, 1)           # 0.5 s at 32 kHz, mono
            assert np.isfinite(fragment).all()
            assert np.max(np.abs(fragment)) < 1.0          # soft-limited, never clipped
            np.testing.assert_array_equal(check_fragment(fragment, 1), fragment)
        assert rms_db(fragment) > -40.0                    # music, not silence


def test_other_rates_channels_and_fragment_sizes():
    backend = SynthBackend(sample_rate=16000, channels=2, fragment_s=0.3, seed=3)
    with backend.open_stream(prompt('jazz')) as stream:
        fragment = stream.next_fragment()
    assert fragment.shape == (4800, 2)
    left, right = fragment[:, 0].astype(float), fragment[:, 1].astype(float)
    # the dry mix is shared, the rooms differ per channel: correlated but not identical
    assert not np.array_equal(left, right)
    assert np.corrcoef(left, right)[0, 1] > 0.5


def test_backend_is_registered_and_rejects_unknown_options():
    backend = create_backend('synth', fragment_s=0.25, seed=1)
    assert isinstance(backend, SynthBackend)
    assert backend.name == 'synth' and backend.sample_rate == 32000 and backend.channels == 1
    with pytest.raises(BackendError, match='rejected options'):
        create_backend('synth', fragment_s=0.25, sampel_rate=16000)


# -- seamless streaming -----------------------------------------------------------------------


def concatenated(backend, spec, fragments, context=None):
    with backend.open_stream(spec, context) as stream:
        parts = [stream.next_fragment() for _ in range(fragments)]
    return np.concatenate(parts), np.cumsum([len(p) for p in parts])[:-1]


def test_fragment_size_does_not_change_the_audio():
    """The stream is one signal cut into fragments: cutting it differently gives the same
    samples, so a fragment boundary cannot carry a click the uncut signal does not have."""
    fine, _ = concatenated(SynthBackend(seed=11, fragment_s=0.137), prompt('upbeat_pop'), 60)
    coarse, _ = concatenated(SynthBackend(seed=11, fragment_s=1.0), prompt('upbeat_pop'), 9)
    n = min(len(fine), len(coarse))
    assert n > 8 * SR
    np.testing.assert_array_equal(fine[:n], coarse[:n])


def boundary_excess(audio, boundaries, window=320):
    """How far each boundary's second difference exceeds what the signal does around it.

    A continuous signal's sample-to-sample change is explained by its local slope; what a
    click adds is a jump in the slope, i.e. a large second difference x[b] - 2x[b-1] + x[b-2].
    Music has large second differences of its own (hat noise, drum attacks), so each boundary
    is compared with the largest second difference within +-10 ms (320 samples) of it,
    excluding the two samples the boundary touches. Returns that ratio per boundary: a
    seamless boundary is just another sample (ratio <= 1 unless it happens to be the local
    maximum), a splice is not.
    """
    x = mono(audio)
    d2 = np.abs(x[2:] - 2.0 * x[1:-1] + x[:-2])            # d2[i] belongs to sample i + 2
    ratios = []
    for b in boundaries:
        at = d2[b - 2:b].max()                              # samples b and b + 1
        around = np.concatenate([d2[b - 2 - window:b - 2], d2[b:b + window]])
        ratios.append(at / (around.max() + 1e-6))
    return np.array(ratios)


@pytest.mark.parametrize('style', ['chill_techno', 'ambient', 'jazz'])
def test_fragment_boundaries_have_no_jump_beyond_the_local_slope(backend, style):
    audio, boundaries = concatenated(backend, prompt(style), 24)
    # 1.5 x the local maximum: a boundary sample may be the local maximum by chance (ratio
    # just above 1); a click adds a step on top of the signal's own slope.
    assert boundary_excess(audio, boundaries).max() < 1.5


def test_boundary_check_detects_a_splice(backend):
    """The continuity measure can fail: gluing fragments of two different streams (what a
    restart without state would do) is flagged at most boundaries."""
    with backend.open_stream(prompt('ambient', prompt_id=1)) as a, \
            backend.open_stream(prompt('ambient', prompt_id=2)) as b:
        parts = [(a if i % 2 else b).next_fragment() for i in range(24)]
    boundaries = np.cumsum([len(p) for p in parts])[:-1]
    flagged = boundary_excess(np.concatenate(parts), boundaries) >= 1.5
    assert flagged.mean() > 0.6


# -- determinism ------------------------------------------------------------------------------


def test_same_seed_same_music_other_seed_other_music():
    spec = prompt('lofi_hiphop')
    first, _ = concatenated(SynthBackend(seed=5), spec, 8)
    again, _ = concatenated(SynthBackend(seed=5), spec, 8)
    other, _ = concatenated(SynthBackend(seed=6), spec, 8)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 0.05


def test_concurrent_streams_do_not_disturb_each_other(backend):
    """Sessions share the backend (and its note cache): interleaving two streams gives each
    the audio it has alone."""
    alone_a, _ = concatenated(SynthBackend(seed=7), prompt('chill_techno', prompt_id=3), 6)
    alone_b, _ = concatenated(SynthBackend(seed=7), prompt('jazz', prompt_id=4), 6)
    with backend.open_stream(prompt('chill_techno', prompt_id=3)) as a, \
            backend.open_stream(prompt('jazz', prompt_id=4)) as b:
        mixed_a, mixed_b = [], []
        for _ in range(6):
            mixed_b.append(b.next_fragment())
            mixed_a.append(a.next_fragment())
    np.testing.assert_array_equal(np.concatenate(mixed_a), alone_a)
    np.testing.assert_array_equal(np.concatenate(mixed_b), alone_b)


# -- tempo ------------------------------------------------------------------------------------


@pytest.mark.parametrize('style', ['chill_techno', 'upbeat_pop', 'ambient'])
@pytest.mark.parametrize('bpm', [84.0, 120.0, 148.0])
def test_beat_rate_matches_target_bpm(backend, style, bpm):
    """These styles mark every beat in the low end (kick, or ambient's pulse at high energy):
    librosa's tempo estimate (its standard 120-BPM prior, nothing told about the target) on
    the onsets below 120 Hz finds the target tempo within 2 %."""
    y = mono(render(backend, prompt(style, energy=0.85, bpm=bpm), 20.0))
    # 8 bands: a 2048-point FFT at 32 kHz has only 8 bins below 120 Hz; more bands would be empty.
    measured = librosa.feature.tempo(onset_envelope=onset_envelope(y, fmax=120, n_mels=8),
                                     sr=SR, hop_length=HOP)[0]
    assert measured == pytest.approx(bpm, rel=0.02)


def beat_autocorrelation(y, bpm):
    """Normalised autocorrelation of the onset envelope at the beat lag and at lags 4 %
    shorter and longer."""
    env = onset_envelope(y)
    env = env - env.mean()
    ac = np.correlate(env, env, 'full')[len(env) - 1:] / np.dot(env, env)
    lag = 60.0 / bpm * SR / HOP

    def peak(at):
        i = int(round(at))
        return ac[i - 2:i + 3].max()
    return peak(lag), max(peak(lag * 0.96), peak(lag * 1.04))


@pytest.mark.parametrize('style', ['lofi_hiphop', 'jazz', 'chill_techno', 'upbeat_pop'])
@pytest.mark.parametrize('bpm', [76.0, 132.0])
def test_onsets_repeat_at_the_beat_period(backend, style, bpm):
    """Swung styles have no kick on every beat; their whole onset pattern still repeats
    exactly at the beat period: a sharp autocorrelation peak at the target beat lag, well
    above the lags 4 % off (a tempo 4 % wrong would put the peak there)."""
    y = mono(render(backend, prompt(style, energy=0.7, bpm=bpm), 20.0))
    at_beat, off_beat = beat_autocorrelation(y, bpm)
    assert at_beat > 0.3
    assert at_beat > off_beat + 0.1


def test_tempo_outside_the_musical_range_is_folded_by_octaves(backend):
    assert fold_tempo(20.0) == 40.0
    assert fold_tempo(300.0) == 150.0
    assert fold_tempo(500.0) == 125.0
    assert fold_tempo(100.0) == 100.0
    with backend.open_stream(prompt(bpm=25.0)) as stream:
        assert stream.bpm == 50.0


# -- energy -----------------------------------------------------------------------------------


def band_onsets_per_s(y):
    """Note density: onsets detected separately in six mel bands, per second. A bass note
    and a hat at the same instant are two events; counting per band keeps a busy groove from
    saturating the count once every eighth-note slot holds something."""
    bands = librosa.onset.onset_strength_multi(y=y, sr=SR, channels=[0, 12, 24, 40, 64, 96, 128])
    count = sum(len(librosa.onset.onset_detect(onset_envelope=band, sr=SR, normalize=False,
                                               delta=1.0)) for band in bands)
    return count / (len(y) / SR)


def features(audio):
    y = mono(audio)
    return {
        'rms_db': rms_db(y),
        'onsets_per_s': band_onsets_per_s(y),
        'centroid_hz': float(np.median(librosa.feature.spectral_centroid(y=y, sr=SR))),
    }


@pytest.mark.parametrize('style', sorted(STYLES))
def test_high_energy_is_louder_denser_and_brighter(style):
    """Averaged over two seeds (a single piece's sections vary): louder (dynamics), more note
    onsets (density, drum intensity) and a higher spectral centroid (brightness)."""
    def mean_features(energy):
        runs = [features(render(SynthBackend(seed=seed, fragment_s=1.0),
                                prompt(style, energy=energy), 16.0)) for seed in (7, 8)]
        return {key: float(np.mean([run[key] for run in runs])) for key in runs[0]}
    calm, lively = mean_features(0.1), mean_features(0.9)
    assert lively['rms_db'] > calm['rms_db'] + 4.0, (calm, lively)
    assert lively['onsets_per_s'] > calm['onsets_per_s'] * 1.1, (calm, lively)
    assert lively['centroid_hz'] > calm['centroid_hz'] * 1.1, (calm, lively)


@pytest.mark.parametrize('style', sorted(STYLES))
def test_loudness_meets_the_target_for_every_style(style):
    """The styles' level tables are calibrated (synth.measure_style_levels, on other seeds):
    a listener switching style at the same energy hears no jump in level."""
    backend = SynthBackend(seed=21, fragment_s=1.0)
    for energy in (0.2, 0.5, 0.8):
        audio = render(backend, prompt(style, energy=energy, bpm=100.0), 16.0)
        assert rms_db(audio) == pytest.approx(loudness_target_db(energy), abs=2.0)


# -- style ------------------------------------------------------------------------------------


def style_fingerprint(audio, bpm):
    """Timbre (mean and spread of 20 MFCCs) and rhythm (onset autocorrelation at 1/4 to 4
    beats: the groove's pattern), each standardised later."""
    y = mono(audio)
    mfcc = librosa.feature.mfcc(y=y, sr=SR, n_mfcc=20)
    env = onset_envelope(y)
    env = env - env.mean()
    ac = np.correlate(env, env, 'full')[len(env) - 1:] / np.dot(env, env)
    lag = 60.0 / bpm * SR / HOP
    rhythm = [ac[int(round(lag * m)) - 2:int(round(lag * m)) + 3].max()
              for m in (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0)]
    return {'timbre': np.concatenate([mfcc.mean(axis=1), mfcc.std(axis=1)]),
            'rhythm': np.array(rhythm)}


def test_styles_are_identified_from_the_audio():
    """Styles sound measurably different: every rendering (6 styles x 3 seeds, all at the
    same tempo and energy) is closest to the centroid of its own style's other renderings
    (leave-one-out nearest centroid on standardised timbre and rhythm features)."""
    names, seeds, bpm = sorted(STYLES), (1, 2, 3), 100.0
    prints = {(name, seed): style_fingerprint(
        render(SynthBackend(seed=seed, fragment_s=1.0), prompt(name, energy=0.6, bpm=bpm), 12.0),
        bpm) for name in names for seed in seeds}
    scale = {group: np.std([p[group] for p in prints.values()], axis=0) + 1e-9
             for group in ('timbre', 'rhythm')}

    def distance(a, b):       # each group weighs the same, whatever its number of features
        return sum(np.linalg.norm((a[g] - b[g]) / scale[g]) / math.sqrt(len(scale[g]))
                   for g in scale)
    for (name, seed), fingerprint in prints.items():
        centroids = {other: {g: np.mean([prints[(other, s)][g] for s in seeds
                                         if (other, s) != (name, seed)], axis=0) for g in scale}
                     for other in names}
        nearest = min(names, key=lambda other: distance(fingerprint, centroids[other]))
        assert nearest == name, (name, seed, nearest)


@pytest.mark.parametrize('style, text, expected', [
    ('chill_techno', '', 'chill_techno'),
    ('Lofi Hip-Hop', '', 'lofi_hiphop'),
    ('UPBEAT POP', '', 'upbeat_pop'),
    ('bossa_nova_deluxe', 'Smooth jazz music. Mood: relaxed.', 'jazz'),
    ('my_own_preset', 'Cinematic orchestral music. Instrumentation: strings, timpani.', 'cinematic'),
    ('', 'Lo-fi hip hop music. Instrumentation: warm Rhodes piano, vinyl crackle.', 'lofi_hiphop'),
    ('', 'Ambient music. Mood: spacious and airy.', 'ambient'),
    ('polka', 'Something nobody has a preset for.', DEFAULT_STYLE),
    ('', '', DEFAULT_STYLE),
])
def test_style_resolution_and_fallback(style, text, expected):
    assert resolve_style(style, text).name == expected


def test_unknown_style_plays_its_fallback(backend):
    unknown = prompt('space_polka', text='Cinematic orchestral music, epic strings.')
    with backend.open_stream(unknown) as stream:
        assert stream.style == 'cinematic'
        fallback = stream.next_fragment()
    with backend.open_stream(prompt('cinematic')) as stream:
        np.testing.assert_array_equal(stream.next_fragment(), fallback)


# -- evolution --------------------------------------------------------------------------------


def test_music_evolves_rather_than_looping_a_bar(backend):
    """Over 16 bars the harmony moves (several different chord roots in the bass) and no
    8-bar section repeats the one before sample for sample."""
    spec = prompt('chill_techno', energy=0.7, bpm=120.0)
    bar = int(BEATS_PER_BAR * 60.0 / 120.0 * SR)
    audio = mono(render(backend, spec, 16 * bar / SR + 0.1))
    bars = audio[:16 * bar].reshape(16, bar)
    chroma = np.array([librosa.feature.chroma_stft(y=b, sr=SR).mean(axis=1) for b in bars])
    assert len(set(chroma.argmax(axis=1))) >= 3
    section = BARS_PER_SECTION * bar
    first, second = audio[:section], audio[section:2 * section]
    assert np.corrcoef(first, second)[0, 1] < 0.95
    distinct = {np.round(b[::64], 3).tobytes() for b in bars}
    assert len(distinct) == 16


# -- prompt changes: context ------------------------------------------------------------------


def test_estimated_key_signature_matches_the_key_played(backend):
    """On 4 s of context (the server's default) the estimated key signature is the one
    played, or where a degree of it never sounded in those 4 s, the neighbouring signature
    that fits the notes heard equally well (differing in one note); mostly the former."""
    exact = 0
    cases = [(name, pid) for name in sorted(STYLES) for pid in (1, 2, 3)]
    for name, pid in cases:
        with backend.open_stream(prompt(name, prompt_id=pid)) as stream:
            audio = np.concatenate([stream.next_fragment() for _ in range(16)])
            played = stream.key.pitch_classes()
        estimate, in_key = estimate_key(mono(audio)[-4 * SR:], SR)
        assert len(estimate.pitch_classes() - played) <= 1, (name, pid, estimate)
        assert in_key > KEY_CONFIDENCE
        exact += estimate.pitch_classes() == played
    assert exact >= 0.75 * len(cases)


def test_new_style_keeps_the_key_family_of_the_context(backend):
    with backend.open_stream(prompt('chill_techno', prompt_id=1)) as stream:
        context = np.concatenate([stream.next_fragment() for _ in range(8)])
        old_key = stream.key
    with backend.open_stream(prompt('upbeat_pop', prompt_id=2), context) as stream:
        assert stream.key_source == 'context'
        assert stream.key.mode == 'major'
        # the old key signature, or its neighbour where 4 s did not tell them apart
        assert len(stream.key.pitch_classes() - old_key.pitch_classes()) <= 1
    with backend.open_stream(prompt('upbeat_pop', prompt_id=2)) as fresh:
        assert fresh.key_source == 'seed'


def test_new_stream_starts_at_the_contexts_loudness_and_glides_to_its_own():
    backend = SynthBackend(seed=9, fragment_s=0.25)
    spec = prompt('lofi_hiphop', energy=0.8, bpm=90.0, prompt_id=2)
    quiet_context = render(backend, prompt('lofi_hiphop', energy=0.8, bpm=90.0), 3.0) \
        * np.float32(10 ** (-14 / 20))
    alone = render(backend, spec, 12.0)
    after = render(backend, spec, 12.0, context=quiet_context)
    head = slice(0, SR // 2)
    assert rms_db(after[head]) < rms_db(alone[head]) - 6.0
    glide_end = int(GLIDE_BARS * BEATS_PER_BAR * 60.0 / 90.0 * SR)
    tail = slice(glide_end + SR, glide_end + 4 * SR)
    assert rms_db(after[tail]) == pytest.approx(rms_db(alone[tail]), abs=0.5)


def test_context_reverb_rings_into_the_new_stream(backend):
    """The old music's room keeps ringing into the new stream. The context is a 5.5 kHz
    tone, a frequency calm ambient music barely has: its reverberation stands out at the
    start of the new stream, then dies away as a room does."""
    t = np.arange(3 * SR) / SR
    tone = (0.14 * np.sin(2 * np.pi * 5500.0 * t)).astype(np.float32)[:, None]
    spec = prompt('ambient', energy=0.2, prompt_id=2)
    fresh = mono(render(backend, spec, 4.0))
    grown = mono(render(backend, spec, 4.0, context=tone))

    def tone_db(y, start_s, seconds=0.25):
        segment = y[int(start_s * SR):int((start_s + seconds) * SR)]
        spectrum = np.abs(np.fft.rfft(segment * np.hanning(len(segment))))
        freqs = np.fft.rfftfreq(len(segment), 1.0 / SR)
        return 20 * np.log10(spectrum[np.abs(freqs - 5500.0) < 20.0].max() + 1e-12)

    assert tone_db(grown, 0.0) > tone_db(fresh, 0.0) + 10.0
    assert tone_db(grown, 0.0) > tone_db(grown, 3.0) + 15.0


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize('fields, message', [
    (dict(target_bpm=-90.0), 'target_bpm'),
    (dict(target_bpm=float('nan')), 'target_bpm'),
    (dict(target_bpm=float('inf')), 'target_bpm'),
    (dict(energy=1.5), 'energy'),
    (dict(energy=-0.1), 'energy'),
    (dict(energy=float('nan')), 'energy'),
])
def test_bad_prompt_values_are_rejected_with_the_field_named(fields, message):
    with pytest.raises(ValueError, match=message):
        PromptSpec(prompt_id=1, text='', **fields)


@pytest.mark.parametrize('context, message', [
    (np.zeros((100, 2), np.float32), r'shape \(n, 1\)'),
    (np.zeros((2, 100, 1), np.float32), r'shape \(n, 1\)'),
    (np.zeros((100, 1), np.int16), 'float samples'),
    (np.full((SR, 1), np.nan, np.float32), 'NaN'),
    ([0.0, 0.1], 'numpy array'),
])
def test_bad_context_is_rejected(backend, context, message):
    with pytest.raises(BackendError, match=message):
        backend.open_stream(prompt(), context)


def test_empty_context_is_a_fresh_start(backend):
    with backend.open_stream(prompt(), np.zeros((0, 1), np.float32)) as stream:
        assert stream.key_source == 'seed'
        assert stream.next_fragment().shape == (16000, 1)


def test_prompt_must_be_a_promptspec(backend):
    with pytest.raises(BackendError, match='PromptSpec'):
        backend.open_stream({'prompt_id': 1, 'text': 'techno'})


@pytest.mark.parametrize('options, message', [
    (dict(sample_rate=0), 'sample_rate'),
    (dict(sample_rate=32000.0), 'sample_rate'),
    (dict(channels=0), 'channels'),
    (dict(channels=True), 'channels'),
    (dict(fragment_s=0.0), 'fragment_s'),
    (dict(fragment_s=float('nan')), 'fragment_s'),
    (dict(seed=-1), 'seed'),
    (dict(seed='abc'), 'seed'),
])
def test_bad_options_are_rejected_with_the_option_named(options, message):
    with pytest.raises(SynthConfigError, match=message) as error:
        SynthBackend(**options)
    assert isinstance(error.value, ValueError) and isinstance(error.value, BackendError)


def test_closed_stream_refuses_to_play(backend):
    stream = backend.open_stream(prompt())
    stream.next_fragment()
    stream.close()
    stream.close()                                     # idempotent
    with pytest.raises(BackendError, match='closed'):
        stream.next_fragment()


# -- building blocks --------------------------------------------------------------------------


def test_block_convolver_equals_direct_convolution():
    rng = np.random.default_rng(0)
    block = 64
    ir = rng.standard_normal(300) * np.exp(-np.arange(300) / 80.0)
    x = rng.standard_normal(block * 10)
    convolver = BlockConvolver(BlockConvolver.prepare(ir[None], block), block)
    out = np.concatenate([convolver.process(x[i:i + block])[0] for i in range(0, len(x), block)])
    np.testing.assert_allclose(out, np.convolve(x, ir)[:len(x)], atol=1e-4)


def test_feedback_echo_equals_its_difference_equation():
    rng = np.random.default_rng(1)
    delay, feedback = 50, 0.6
    x = rng.standard_normal(700)
    w = np.zeros(len(x))
    for n in range(len(x)):           # the definition, one sample at a time
        xd = x[n - delay] if n >= delay else 0.0
        w1 = w[n - delay] if n >= delay else 0.0
        w2 = w[n - delay - 1] if n >= delay + 1 else 0.0
        w[n] = xd + 0.5 * feedback * (w1 + w2)
    echo = FeedbackEcho(delay, feedback)
    out = np.concatenate([echo.process(x[i:i + 128]) for i in range(0, len(x), 128)])
    np.testing.assert_allclose(out, w, atol=1e-12)


def test_moving_average_continues_across_blocks():
    x = np.random.default_rng(2).standard_normal(1000)
    average = MovingAverage(37)
    out = np.concatenate([average.process(x[i:i + 100]) for i in range(0, 1000, 100)])
    expected = np.convolve(x, np.ones(37) / 37)[:1000]
    np.testing.assert_allclose(out, expected, atol=1e-12)


def test_sine_table_and_soft_clip():
    cycles = np.linspace(-3.0, 3.0, 10001)
    np.testing.assert_allclose(sine(cycles), np.sin(2 * np.pi * cycles), atol=1e-5)
    x = np.linspace(-4.0, 4.0, 8001)
    y = soft_clip(x)
    assert np.abs(y).max() < 1.0
    np.testing.assert_array_equal(y[np.abs(x) <= 0.8], x[np.abs(x) <= 0.8])
    assert np.all(np.diff(y) >= 0)                     # monotonic: no folding distortion
    assert np.all(np.diff(y[np.abs(x) < 2.0]) > 0)
    assert np.abs(np.diff(y)).max() <= (x[1] - x[0]) * 1.0001   # slope never above 1


def test_keys_and_voicing():
    a_minor = Key(9, 'minor')
    assert a_minor.relative('major') == Key(0, 'major')
    assert Key(0, 'major').relative('minor') == a_minor
    assert a_minor.chord(4, 3, raised_dominant=True) == (4, 8, 11)      # E major in A minor
    assert Key(0, 'major').chord(1, 4) == (2, 5, 9, 0)                   # D minor seven
    voicing = voice_chord((7, 11, 2), [60, 64, 67], 52, 76)              # C -> G
    assert sorted(p % 12 for p in voicing) == [2, 7, 11]
    assert sum(abs(a - b) for a, b in zip(sorted(voicing), [60, 64, 67])) <= 4
    with pytest.raises(ValueError, match='mode'):
        Key(0, 'lydian')
