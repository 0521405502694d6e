"""Decoding s16le / f32le, channel mapping and stream resampling."""

import struct

import numpy as np
import pytest

from muse_protocol.protocol import Encoding, encode_samples
from muse_player import pcm
from player_signals import dominant_freq, max_step


def test_s16le_decodes_to_floats_in_unit_range_interleaved_by_frame():
    raw = struct.pack('<4h', 16384, -32767, 32767, 0)  # two stereo frames
    audio = pcm.decode(raw, pcm.ENCODING_PCM_S16LE, channels=2)
    assert audio.dtype == np.float32 and audio.shape == (2, 2)
    np.testing.assert_allclose(audio, [[16384 / 32767, -1.0], [1.0, 0.0]])


@pytest.mark.parametrize('encoding', [Encoding.PCM_S16LE, Encoding.PCM_F32LE])
def test_decode_inverts_the_wire_encoder_of_the_bridge(encoding):
    rng = np.random.default_rng(0)
    audio = rng.uniform(-1, 1, size=(1000, 2)).astype(np.float32)
    decoded = pcm.decode(encode_samples(audio, encoding), int(encoding), 2)
    if encoding is Encoding.PCM_F32LE:
        np.testing.assert_array_equal(decoded, audio)
    else:  # rounding to the nearest of 32767 steps per unit: half a step at most
        assert np.abs(decoded - audio).max() <= 0.5 / 32767 + 1e-7


def test_decode_accepts_the_array_type_ros_messages_carry():
    import array
    raw = array.array('B', struct.pack('<2f', 0.25, -0.5))
    np.testing.assert_array_equal(pcm.decode(raw, pcm.ENCODING_PCM_F32LE, 1)[:, 0],
                                  [0.25, -0.5])


def test_encoding_constants_match_the_message_and_the_wire_protocol():
    from muse_msgs.msg import AudioFragment
    assert pcm.ENCODING_PCM_S16LE == AudioFragment.ENCODING_PCM_S16LE == Encoding.PCM_S16LE
    assert pcm.ENCODING_PCM_F32LE == AudioFragment.ENCODING_PCM_F32LE == Encoding.PCM_F32LE


@pytest.mark.parametrize('data, encoding, channels, words', [
    (b'\x00' * 6, pcm.ENCODING_PCM_S16LE, 2, ['6 bytes', '2 channel', '4 bytes each']),
    (b'\x00' * 4, 7, 1, ['encoding 7', 's16le', 'f32le']),
    (b'\x00' * 4, pcm.ENCODING_PCM_S16LE, 0, ['channels is 0']),
    (struct.pack('<f', float('nan')), pcm.ENCODING_PCM_F32LE, 1, ['non-finite']),
])
def test_bad_pcm_is_refused_with_a_message_naming_the_problem(data, encoding, channels, words):
    with pytest.raises(pcm.PcmFormatError) as caught:
        pcm.decode(data, encoding, channels)
    for word in words:
        assert word in str(caught.value)


def test_check_format_names_a_zero_sample_rate():
    with pytest.raises(pcm.PcmFormatError, match='sample_rate is 0 Hz'):
        pcm.check_format(0, 1, pcm.ENCODING_PCM_S16LE)


def test_channels_are_spread_from_mono_and_averaged_to_mono():
    mono = np.array([[0.5], [-0.25]], np.float32)
    np.testing.assert_array_equal(pcm.convert_channels(mono, 2), [[0.5, 0.5], [-0.25, -0.25]])
    stereo = np.array([[0.5, -0.5], [1.0, 0.0]], np.float32)
    np.testing.assert_array_equal(pcm.convert_channels(stereo, 1), [[0.0], [0.5]])
    with pytest.raises(pcm.PcmFormatError, match='cannot map 2 channels onto 3'):
        pcm.convert_channels(stereo, 3)


def _sine(freq, frames, rate):
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(frames) / rate)).astype(np.float32)[:, None]


def test_stream_resampling_keeps_pitch_length_and_is_seamless_across_fragments():
    source, target, freq = 48000, 32000, 1000.0
    signal = _sine(freq, 48000, source)
    chunked = pcm.StreamResampler(source, target, 1)
    pieces = [chunked.process(signal[i:i + 4800]) for i in range(0, len(signal), 4800)]
    out = np.concatenate(pieces + [chunked.flush()])[:, 0]
    assert abs(len(out) - 32000) <= 1
    assert dominant_freq(out[4000:12000], target) == pytest.approx(freq, abs=2.0)
    # Seamless: away from the stream's two ends no step exceeds the sine's own (+ 2 %).
    steps = np.abs(np.diff(out[500:-500]))
    assert steps.max() <= 1.02 * max_step(freq, target, 0.5)
    # The same chunks resampled one by one dip at every edge: the check above can fail.
    alone = np.concatenate([pcm.StreamResampler(source, target, 1).process(
        signal[i:i + 4800], last=True) for i in range(0, len(signal), 4800)])[:, 0]
    assert np.abs(np.diff(alone[500:-500])).max() > 1.02 * max_step(freq, target, 0.5)


def test_same_rate_passes_audio_through_untouched():
    resampler = pcm.StreamResampler(32000, 32000, 2)
    audio = np.ones((10, 2), np.float32)
    assert resampler.passthrough and resampler.process(audio) is audio
    with pytest.raises(pcm.PcmFormatError, match='3 channels'):
        resampler.process(np.ones((10, 3), np.float32))
