"""Tests of the ``synth`` music backend: the fragment contract, seamless streaming,
determinism, that the prompt's tempo, energy and style are audible in the audio (measured
with standard music-analysis features, librosa, rather than read back from the composer), and
that retargeting a running stream changes the music on a bar line without a new piece."""

import math

import librosa
import numpy as np
import pytest

from muse_server.backends import BackendError, PromptSpec, check_fragment, create_backend
from muse_server.backends.synth import (FORK_GRID_BEATS, KEY_CONFIDENCE, TEMPO_RAMP_BARS, TRANSITION_BARS,
                                        SynthBackend, SynthConfigError, fold_tempo,
                                        loudness_target_db, render, rms_db, soft_clip)
from muse_server.backends.synth_compose import BARS_PER_SECTION, BEATS_PER_BAR
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
        for index in range(6):
            fragment = stream.next_fragment()
            assert fragment.dtype == np.float32
            # 0.5 s at 32 kHz, mono; the first FIRST_FRAGMENT_S (0.32 s), ready sooner
            assert fragment.shape == ((10240 if index == 0 else 16000), 1)
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
    # FluidSynth's stereo: instruments panned, the reverb decorrelated: related, not identical
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
    """Sessions share the backend (and its pool of loaded synthesizers): interleaving two
    streams gives each the audio it has alone."""
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
    """The output is levelled to the energy's loudness whatever the instruments: a listener
    switching style at the same energy hears no jump in level."""
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
    """On 4 s of context (the server's default) the estimated key signature is mostly the one
    played, or where a degree of it never sounded in those 4 s, the neighbouring signature
    that fits the notes heard equally well (differing in one note). Sampled instruments
    (drum kits with pitched toms, reverb) make it a noisier estimate than of pure tones: it
    only serves a stream opened with context (the server's restart after a failure); prompt
    changes hand the key over instead."""
    exact = near = 0
    cases = [(name, pid) for name in sorted(STYLES) for pid in (1, 2, 3)]
    for name, pid in cases:
        with backend.open_stream(prompt(name, prompt_id=pid)) as stream:
            audio = np.concatenate([stream.next_fragment() for _ in range(16)])
            played = stream.key.pitch_classes()
        estimate, in_key = estimate_key(mono(audio)[-4 * SR:], SR)
        near += len(estimate.pitch_classes() - played) <= 1 and in_key > KEY_CONFIDENCE
        exact += estimate.pitch_classes() == played
    assert near >= 0.7 * len(cases) and exact >= 0.5 * len(cases), (near, exact)


def test_new_style_keeps_the_key_family_of_the_context(backend):
    with backend.open_stream(prompt('cinematic', prompt_id=1)) as stream:
        context = np.concatenate([stream.next_fragment() for _ in range(8)])
        old_key = stream.key
    with backend.open_stream(prompt('upbeat_pop', prompt_id=2), context) as stream:
        assert stream.key_source == 'context'
        assert stream.key.mode == 'major'
        # the old key signature, or its neighbour where 4 s did not tell them apart
        assert len(stream.key.pitch_classes() - old_key.pitch_classes()) <= 1
    with backend.open_stream(prompt('upbeat_pop', prompt_id=2)) as fresh:
        assert fresh.key_source == 'seed'


# -- prompt changes: retarget -----------------------------------------------------------------


def retargeted(backend, first, then, before=8, after=24):
    """Fragments of one stream playing ``first``, retargeted to ``then`` after ``before``."""
    with backend.open_stream(first) as stream:
        parts = [stream.next_fragment() for _ in range(before)]
        assert stream.retarget(then) is True
        parts += [stream.next_fragment() for _ in range(after)]
        return np.concatenate(parts), np.cumsum([len(p) for p in parts])[:-1], stream


def test_a_prompt_whose_music_did_not_change_changes_nothing(backend):
    """A new prompt that differs only in words (the heart-rate sentence, say) but not in
    style, tempo or energy: the stream plays on sample for sample as if nothing happened."""
    first = prompt('lofi_hiphop', energy=0.5, bpm=90.0, text='Heart rate 98 bpm.')
    then = PromptSpec(prompt_id=2, text='Heart rate 103 bpm.', style='lofi_hiphop', energy=0.5,
                      target_bpm=90.0, heart_rate_bpm=103.0)
    steered, _, _ = retargeted(backend, first, then)
    plain, _ = concatenated(backend, first, 32)
    np.testing.assert_array_equal(steered, plain)


def test_same_style_retarget_keeps_the_piece_and_reaches_the_new_tempo(backend):
    """Energy and tempo change: the key stays, the change starts on the next bar line (the
    first 8 fragments and the rest of the bar are the unchanged piece), and after the ramp the
    low-end beat is at the new tempo."""
    first, then = prompt('chill_techno', energy=0.6, bpm=120.0), \
        prompt('chill_techno', energy=0.9, bpm=136.0, prompt_id=2)
    audio, boundaries, stream = retargeted(backend, first, then, before=8, after=40)
    plain, _ = concatenated(backend, first, 12)
    with backend.open_stream(first) as alone:
        key = alone.key
    assert stream.key == key and stream.bpm == 136.0
    bar = int(BEATS_PER_BAR * 60.0 / 120.0 * SR)
    change = 2 * bar                              # 4 s = 2 bars at 120 BPM: the next bar line
    sent = boundaries[7]                          # what the first 8 fragments held
    assert sent < change
    np.testing.assert_array_equal(audio[:sent], plain[:sent])
    # to the bar line the same notes play (the level already follows the new energy)
    y, x = mono(audio[sent:change]), mono(plain[sent:change])
    assert np.corrcoef(y, x)[0, 1] > 0.95
    settled = change + (TEMPO_RAMP_BARS + 1) * bar
    y = mono(audio[settled:])
    measured = librosa.feature.tempo(onset_envelope=onset_envelope(y, fmax=120, n_mels=8),
                                     sr=SR, hop_length=HOP)[0]
    assert measured == pytest.approx(136.0, rel=0.02)
    assert boundary_excess(audio, boundaries).max() < 1.5


def test_style_change_hands_the_key_over_in_an_arranged_transition(backend):
    """Techno (minor) to pop (major): the pop band plays in the relative major of the techno
    key (handed over, not estimated), its drums enter on a bar line TRANSITION_BARS after the
    change, and the audio stays continuous."""
    first, then = prompt('chill_techno', energy=0.6, bpm=120.0), \
        prompt('upbeat_pop', energy=0.6, bpm=120.0, prompt_id=2)
    audio, boundaries, stream = retargeted(backend, first, then, before=8, after=40)
    with backend.open_stream(first) as alone:
        key = alone.key
    assert stream.style == 'upbeat_pop'
    assert stream.key == key.relative('major')
    assert boundary_excess(audio, boundaries).max() < 1.5
    # The change lands on the bar line after the 4 s played (bar 3 at the latest) and the
    # transition lasts TRANSITION_BARS; afterwards the music is pop: closer in timbre (MFCCs
    # without the level, c0) to a pop stream than to the techno it came from.
    bar = int(BEATS_PER_BAR * 60.0 / 120.0 * SR)
    after = mono(audio[(3 + TRANSITION_BARS) * bar + SR // 2:])
    pop = mono(render(backend, then, 8.0))
    techno = mono(render(backend, first, 8.0))

    def timbre(y):
        return librosa.feature.mfcc(y=y, sr=SR, n_mfcc=20)[1:].mean(axis=1)
    assert np.linalg.norm(timbre(after) - timbre(pop)) < np.linalg.norm(timbre(after) - timbre(techno))


def forked(backend, first, then, at_s, before_s=5.0, after_s=4.0):
    """-> (audio before the fork as first played, the stream's audio from its fork at
    ``at_s`` on, the un-forked audio from there, the stream)."""
    stream = backend.open_stream(first)
    played = np.concatenate([stream.next_fragment() for _ in range(int(before_s * 2))])
    at = stream.fork(then, int(at_s * SR))
    assert at == int(at_s * SR)
    after = np.concatenate([stream.next_fragment() for _ in range(int(after_s * 2))])
    plain, _ = concatenated(backend, first, int((at_s + after_s) * 2) + 2)
    return played, after, plain[at:at + len(after)], stream


def test_a_fork_replans_from_the_first_eighth_note_after_its_offset(backend):
    """A fork re-renders from the requested sample: up to the first eighth at or after it the
    old notes play on (the same audio but for small reverb/sustain differences of the fresh
    FluidSynth), from that beat on the new prompt's; the result is deterministic."""
    first, then = prompt('chill_techno', energy=0.6, bpm=120.0), \
        prompt('jazz', energy=0.5, bpm=100.0, prompt_id=2)
    at_s = 3.3
    _, after, plain, stream = forked(backend, first, then, at_s)
    grid = FORK_GRID_BEATS * 60.0 / 120.0 * SR
    landing = stream.landing - int(at_s * SR)
    assert 0 <= landing < grid and stream.landing % grid == pytest.approx(0, abs=2)
    assert np.abs(after[:landing] - plain[:landing]).max() < 0.15
    assert np.abs(after[landing:] - plain[landing:]).max() > 0.3
    _, again, _, _ = forked(backend, first, then, at_s)
    np.testing.assert_array_equal(after, again)
    assert stream.style == 'jazz' and stream.prompt_id == 2


def test_a_fork_to_unchanged_music_plays_on_almost_as_before(backend):
    first = prompt('lofi_hiphop', energy=0.5, bpm=90.0)
    then = prompt('lofi_hiphop', energy=0.5, bpm=90.0, prompt_id=2)
    _, after, plain, _ = forked(backend, first, then, 3.7)
    # the residue of notes restarted and reverb refilled by the fork's preroll: small
    assert np.sqrt(np.mean((after - plain) ** 2)) < 0.2 * np.sqrt(np.mean(plain ** 2))


def test_a_fork_beyond_its_history_or_after_close_is_refused(backend):
    with backend.open_stream(prompt()) as stream:
        for _ in range(20):
            stream.next_fragment()
        assert stream.fork(prompt(prompt_id=2), 0) is None      # 10 s back: forgotten
        bad = prompt(prompt_id=3)
        object.__setattr__(bad, 'target_bpm', float('nan'))
        with pytest.raises(SynthConfigError, match='target_bpm'):
            stream.fork(bad, stream.emitted)
        stream.close()
        assert stream.fork(prompt(prompt_id=4), stream.emitted) is None


def test_retarget_refuses_a_bad_tempo_and_a_closed_stream(backend):
    with backend.open_stream(prompt()) as stream:
        bad = prompt(prompt_id=2)
        object.__setattr__(bad, 'target_bpm', float('nan'))   # past PromptSpec's own check
        with pytest.raises(SynthConfigError, match='target_bpm'):
            stream.retarget(bad)
        stream.close()
        assert stream.retarget(prompt(prompt_id=2)) is False


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
        assert stream.next_fragment().shape == (10240, 1)   # a first fragment (FIRST_FRAGMENT_S)


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
    (dict(soundfont='/nonexistent/GM.sf2'), 'SoundFont'),
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


def test_soft_clip():
    x = np.linspace(-4.0, 4.0, 8001)
    y = soft_clip(x)
    assert np.abs(y).max() < 1.0
    np.testing.assert_array_equal(y[np.abs(x) <= 0.8], x[np.abs(x) <= 0.8])
    assert np.all(np.diff(y) >= 0)                     # monotonic: no folding distortion
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
