"""The wire protocol codec: round trips, limits, and a typed, coded error for every bad frame."""

import dataclasses
import json
import math
import struct

import numpy as np
import pytest

from muse_protocol import protocol
from muse_protocol.protocol import (CLIENT_MESSAGES, SERVER_MESSAGES, AudioFrame, Encoding,
                                        ErrorCode, Flags)


def _frame(samples, encoding=Encoding.PCM_S16LE, flags=Flags(0), prompt_id=3, seq=7,
           sample_rate=32000):
    return AudioFrame(prompt_id=prompt_id, seq=seq, sample_rate=sample_rate,
                      channels=samples.shape[1], encoding=encoding, flags=flags,
                      payload=protocol.encode_samples(samples, encoding),
                      generation_started_ns=1_700_000_000_123_456_789,
                      generation_finished_ns=1_700_000_000_223_456_789)


def _tone(n=1000, channels=2):
    t = np.arange(n) / 32000.0
    return np.stack([0.8 * np.sin(2 * np.pi * 440 * t * (c + 1)) for c in range(channels)],
                    axis=1).astype(np.float32)


# ---------------------------------------------------------------- control messages


@pytest.mark.parametrize('message', [
    protocol.Hello(protocol=1, token='secret', client='bridge', encoding='pcm_f32le'),
    protocol.Prompt(prompt_id=4, text='calm lofi beat', style='lofi_hiphop', activity='sitting',
                    energy=0.25, target_bpm=82.0, heart_rate_bpm=71.0, stamp=12.5, first_seq=9),
    protocol.Stop(),
])
def test_client_messages_round_trip(message):
    assert protocol.decode_control(message.to_json(), CLIENT_MESSAGES) == message


@pytest.mark.parametrize('message', [
    protocol.Welcome(protocol=1, session_id='abc', backend='synth', sample_rate=32000, channels=1,
                     encoding='pcm_s16le', max_frame_bytes=65536, fragment_s=0.5, max_ahead_s=2.0),
    protocol.Stopped(prompt_id=2, last_seq=10),
    protocol.Shutdown(grace_s=1.0),
    protocol.Error.make(ErrorCode.STALE_PROMPT, 'old', prompt_id=3),
])
def test_server_messages_round_trip(message):
    assert protocol.decode_control(message.to_json(), SERVER_MESSAGES) == message


def test_unknown_heart_rate_is_null_on_the_wire_and_nan_in_python():
    prompt = protocol.Prompt(prompt_id=1, text='x')
    body = json.loads(prompt.to_json())
    assert body['heart_rate_bpm'] is None
    assert math.isnan(protocol.decode_control(prompt.to_json(), CLIENT_MESSAGES).heart_rate_bpm)


def test_decoded_defaults_fill_optional_fields():
    prompt = protocol.decode_control('{"type":"prompt","prompt_id":2,"text":"t","extra":1}',
                                     CLIENT_MESSAGES)
    assert (prompt.energy, prompt.target_bpm, prompt.first_seq, prompt.style) == (0.5, 100.0, 0, '')


@pytest.mark.parametrize('raw, error, code', [
    ('{"type": "prompt"', protocol.MalformedFrame, ErrorCode.MALFORMED),
    (b'\xff\xfe{}', protocol.MalformedFrame, ErrorCode.MALFORMED),
    ('[1, 2]', protocol.MalformedFrame, ErrorCode.MALFORMED),
    ('{"type":"prompt","prompt_id":1,"text":"a","energy":NaN}', protocol.MalformedFrame,
     ErrorCode.MALFORMED),
    ('{"text": "no type"}', protocol.UnknownMessageType, ErrorCode.UNKNOWN_TYPE),
    ('{"type": "welcome", "protocol": 1}', protocol.UnknownMessageType, ErrorCode.UNKNOWN_TYPE),
    ('{"type": ["prompt"]}', protocol.UnknownMessageType, ErrorCode.UNKNOWN_TYPE),
    ('{"type": {"prompt": 1}}', protocol.UnknownMessageType, ErrorCode.UNKNOWN_TYPE),
    ('{"type": "prompt", "text": "a"}', protocol.InvalidField, ErrorCode.INVALID_FIELD),
    ('{"type": "prompt", "prompt_id": -1, "text": "a"}', protocol.InvalidField,
     ErrorCode.INVALID_FIELD),
    ('{"type": "prompt", "prompt_id": 4294967296, "text": "a"}', protocol.InvalidField,
     ErrorCode.INVALID_FIELD),
    ('{"type": "prompt", "prompt_id": true, "text": "a"}', protocol.InvalidField,
     ErrorCode.INVALID_FIELD),
    ('{"type": "prompt", "prompt_id": 1.5, "text": "a"}', protocol.InvalidField,
     ErrorCode.INVALID_FIELD),
    ('{"type": "prompt", "prompt_id": 1, "text": 5}', protocol.InvalidField,
     ErrorCode.INVALID_FIELD),
    ('{"type": "prompt", "prompt_id": 1, "text": "a", "energy": 1.5}', protocol.InvalidField,
     ErrorCode.INVALID_FIELD),
    ('{"type": "prompt", "prompt_id": 1, "text": "a", "target_bpm": "fast"}',
     protocol.InvalidField, ErrorCode.INVALID_FIELD),
    ('{"type": "ping"}', protocol.UnknownMessageType, ErrorCode.UNKNOWN_TYPE),  # WebSocket pings
    ('{"type": "prompt", "text": "a"}', protocol.InvalidField, ErrorCode.INVALID_FIELD),
    ('{"type": "hello", "protocol": 2}', protocol.UnsupportedVersion,
     ErrorCode.UNSUPPORTED_VERSION),
    ('{"type": "hello", "token": "t"}', protocol.InvalidField, ErrorCode.INVALID_FIELD),
])
def test_bad_control_frames_raise_typed_coded_errors(raw, error, code):
    with pytest.raises(error) as caught:
        protocol.decode_control(raw, CLIENT_MESSAGES)
    assert caught.value.code is code
    assert isinstance(caught.value, protocol.ProtocolError)


def test_invalid_field_names_the_field_and_what_was_expected():
    with pytest.raises(protocol.InvalidField) as caught:
        protocol.decode_control('{"type":"prompt","prompt_id":1,"text":"a","energy":3}',
                                CLIENT_MESSAGES)
    assert caught.value.field == 'energy'
    assert "'energy'" in str(caught.value) and '[0.0, 1.0]' in str(caught.value)


def test_version_is_checked_before_other_fields():
    # a future client's hello may look different; it must learn about the version first
    with pytest.raises(protocol.UnsupportedVersion):
        protocol.decode_control('{"type":"hello","protocol":7,"token":42}', CLIENT_MESSAGES)


def test_oversized_control_frame_is_rejected_before_parsing():
    raw = json.dumps({'type': 'prompt', 'prompt_id': 1, 'text': 'x' * protocol.MAX_CONTROL_BYTES})
    with pytest.raises(protocol.FrameTooLarge) as caught:
        protocol.decode_control(raw, CLIENT_MESSAGES)
    assert caught.value.code is ErrorCode.FRAME_TOO_LARGE


@pytest.mark.parametrize('depth', [protocol.MAX_JSON_DEPTH + 1, 5000])
def test_deep_json_is_malformed_before_it_is_parsed(depth):
    raw = '{"type": "prompt", "prompt_id": 1, "text": "a", "x": ' + '[' * depth + ']' * depth + '}'
    with pytest.raises(protocol.MalformedFrame, match='nests'):
        protocol.decode_control(raw, CLIENT_MESSAGES)


def test_brackets_inside_strings_do_not_count_as_nesting():
    text = '[{' * 1000 + '\\"' + ']}' * 5
    prompt = protocol.Prompt(prompt_id=1, text=text)
    assert protocol.decode_control(prompt.to_json(), CLIENT_MESSAGES).text == text


@pytest.mark.parametrize('field', ['token', 'client', 'encoding'])
def test_a_lone_surrogate_is_an_invalid_field_not_an_encoding_crash(field):
    raw = '{"type": "hello", "protocol": 1, "%s": "ok\\ud800"}' % field  # JSON's escape
    with pytest.raises(protocol.InvalidField, match=field):
        protocol.decode_control(raw, CLIENT_MESSAGES)


def test_first_seq_leaves_room_for_the_session_to_go_on():
    assert protocol.Prompt(prompt_id=1, text='a', first_seq=protocol.MAX_FIRST_SEQ).first_seq
    with pytest.raises(protocol.InvalidField, match='first_seq'):
        protocol.Prompt(prompt_id=1, text='a', first_seq=protocol.UINT32_MAX)


def test_messages_cannot_be_built_invalid():
    with pytest.raises(protocol.InvalidField):
        protocol.Prompt(prompt_id=1, text='x' * (protocol.MAX_PROMPT_TEXT_CHARS + 1))
    with pytest.raises(protocol.InvalidField):
        protocol.Prompt(prompt_id=1, text='a', target_bpm=float('inf'))
    with pytest.raises(protocol.InvalidField):
        protocol.Prompt(prompt_id=-3, text='a')


@pytest.mark.parametrize('char', ['\U0001f3b5', '\x01', '"'])
def test_longest_prompt_fits_a_control_frame_whatever_its_characters(char):
    # 4-byte UTF-8, or JSON escapes of up to 6 bytes per character
    prompt = protocol.Prompt(prompt_id=1, text=char * protocol.MAX_PROMPT_TEXT_CHARS,
                             style='s' * protocol.MAX_NAME_CHARS,
                             activity='a' * protocol.MAX_NAME_CHARS, heart_rate_bpm=61.0)
    assert protocol.decode_control(prompt.to_json(), CLIENT_MESSAGES) == prompt


def test_error_fatality_follows_the_code_unless_overridden():
    assert protocol.Error.make(ErrorCode.UNAUTHORIZED, 'x').fatal
    assert not protocol.Error.make(ErrorCode.MALFORMED, 'x').fatal
    assert protocol.Error.make(ErrorCode.MALFORMED, 'x', fatal=True).fatal
    long = protocol.Error.make(ErrorCode.INTERNAL_ERROR, 'y' * 10_000)
    assert len(long.message) <= 4 * protocol.MAX_NAME_CHARS
    assert long.code_name == 'INTERNAL_ERROR'


def test_fatal_codes_are_websocket_application_close_codes():
    for code in ErrorCode:
        assert 4000 <= code <= 4999


# ---------------------------------------------------------------- audio frames


@pytest.mark.parametrize('encoding, tolerance', [(Encoding.PCM_S16LE, 1 / 32767),
                                                 (Encoding.PCM_F32LE, 0.0)])
def test_audio_frame_round_trip(encoding, tolerance):
    samples = _tone(1000, channels=2)
    frame = _frame(samples, encoding, Flags.FIRST | Flags.LAST)
    data = protocol.encode_audio_frame(frame)
    assert len(data) == protocol.AUDIO_HEADER_BYTES + 1000 * 2 * encoding.sample_bytes
    decoded = protocol.decode_audio_frame(data)
    assert decoded == frame
    assert decoded.is_first and decoded.is_last
    assert decoded.n_samples == 1000 and decoded.duration_s == pytest.approx(1000 / 32000)
    assert decoded.order_key == (3, 7)
    np.testing.assert_allclose(decoded.samples(), samples, atol=tolerance + 1e-7)


def test_audio_header_layout_is_little_endian_and_documented():
    data = protocol.encode_audio_frame(_frame(_tone(10, 1), flags=Flags.LAST, prompt_id=0x01020304,
                                              seq=5))
    assert data[:4] == b'MUSA'
    assert data[4] == 1 and data[5] == 44 and data[6] == int(Flags.LAST) and data[7] == 0
    assert data[8] == 1
    assert struct.unpack_from('<IIII', data, 12) == (32000, 0x01020304, 5, 10)
    assert struct.unpack_from('<qq', data, 28) == (1_700_000_000_123_456_789,
                                                   1_700_000_000_223_456_789)


def test_samples_are_clipped_to_full_scale():
    loud = np.array([[2.0], [-3.0], [0.5]], np.float32)
    decoded = protocol.decode_audio_frame(protocol.encode_audio_frame(_frame(loud))).samples()
    assert decoded[:, 0].tolist() == pytest.approx([1.0, -1.0, 0.5], abs=1e-4)


def test_unknown_flag_bits_are_ignored():
    data = bytearray(protocol.encode_audio_frame(_frame(_tone(4, 1))))
    data[6] = 0x80 | int(Flags.FIRST)
    assert protocol.decode_audio_frame(bytes(data)).flags == Flags.FIRST


def _corrupt(offset, value, fmt='B'):
    data = bytearray(protocol.encode_audio_frame(_frame(_tone(100, 1))))
    struct.pack_into('<' + fmt, data, offset, value)
    return bytes(data)


@pytest.mark.parametrize('data, message', [
    (b'MUSA\x01', 'shorter than its 44-byte header'),
    (b'XXXX' + bytes(40), 'magic'),
    (_corrupt(4, 2), 'header version'),
    (_corrupt(5, 40), 'header size'),
    (_corrupt(7, 9), 'encoding'),
    (_corrupt(8, 0), 'channels'),
    (_corrupt(24, 101, 'I'), 'payload'),
    (protocol.encode_audio_frame(_frame(_tone(100, 1)))[:-1], 'payload'),
])
def test_corrupt_audio_frames_raise_malformed(data, message):
    with pytest.raises(protocol.MalformedFrame, match=message) as caught:
        protocol.decode_audio_frame(data)
    assert caught.value.code is ErrorCode.MALFORMED


def test_audio_frame_size_is_bounded_both_ways():
    frame = _frame(_tone(1000, 1))
    size = len(protocol.encode_audio_frame(frame))
    with pytest.raises(protocol.FrameTooLarge):
        protocol.encode_audio_frame(frame, max_bytes=size - 1)
    with pytest.raises(protocol.FrameTooLarge):
        protocol.decode_audio_frame(protocol.encode_audio_frame(frame), max_bytes=size - 1)


def test_payload_must_hold_whole_samples():
    frame = AudioFrame(prompt_id=1, seq=0, sample_rate=8000, channels=2,
                       encoding=Encoding.PCM_S16LE, flags=Flags(0), payload=b'\x00' * 6)
    with pytest.raises(protocol.InvalidField, match='payload'):
        protocol.encode_audio_frame(frame)


def test_max_samples_per_frame():
    assert protocol.max_samples_per_frame(44 + 8 * 4, 2, Encoding.PCM_F32LE) == 4
    with pytest.raises(protocol.InvalidField):
        protocol.max_samples_per_frame(45, 1, Encoding.PCM_F32LE)


def test_encodings_match_the_audio_fragment_message():
    from muse_msgs.msg import AudioFragment
    assert Encoding.PCM_S16LE == AudioFragment.ENCODING_PCM_S16LE
    assert Encoding.PCM_F32LE == AudioFragment.ENCODING_PCM_F32LE
    assert Encoding.from_wire_name('pcm_f32le') is Encoding.PCM_F32LE
    with pytest.raises(protocol.InvalidField):
        Encoding.from_wire_name('mp3')


def test_a_replacing_frame_carries_its_24_bit_offset_in_the_old_reserved_bytes():
    flags = Flags.CONTINUES | Flags.REPLACES
    frame = dataclasses.replace(_frame(_tone(10, 1), flags=flags), replaces=0x123456)
    data = protocol.encode_audio_frame(frame)
    assert len(data) == protocol.AUDIO_HEADER_BYTES + 20      # the header did not grow
    assert data[9] == 0x56 and struct.unpack_from('<H', data, 10) == (0x1234,)
    decoded = protocol.decode_audio_frame(data)
    assert decoded == frame and decoded.replacing and decoded.replaces == 0x123456
    # an old decoder's view: the bytes were reserved, the flag bit unknown (both ignored)
    plain = protocol.decode_audio_frame(protocol.encode_audio_frame(_frame(_tone(10, 1))))
    assert plain.replaces == 0 and not plain.replacing


def test_replaces_is_checked_and_meaningless_without_its_flags():
    with pytest.raises(protocol.InvalidField, match='replaces'):
        protocol.encode_audio_frame(dataclasses.replace(
            _frame(_tone(4, 1), flags=Flags.CONTINUES), replaces=5))
    with pytest.raises(protocol.InvalidField, match='replaces'):
        protocol.encode_audio_frame(dataclasses.replace(
            _frame(_tone(4, 1), flags=Flags.CONTINUES | Flags.REPLACES),
            replaces=protocol.MAX_REPLACES + 1))
    data = bytearray(protocol.encode_audio_frame(_frame(_tone(4, 1))))
    data[6], data[9] = int(Flags.REPLACES), 7          # REPLACES without CONTINUES
    decoded = protocol.decode_audio_frame(bytes(data))
    assert decoded.flags == Flags(0) and decoded.replaces == 0


def test_hello_replace_is_optional_so_old_clients_get_no_replacing_frames():
    old = protocol.decode_control(json.dumps({'type': 'hello', 'protocol': 1}),
                                  protocol.CLIENT_MESSAGES)
    assert old.replace is False
    new = protocol.decode_control(
        protocol.Hello(protocol=1, replace=True).to_json(), protocol.CLIENT_MESSAGES)
    assert new.replace is True
    with pytest.raises(protocol.InvalidField, match='replace'):
        protocol.decode_control(json.dumps({'type': 'hello', 'protocol': 1, 'replace': 1}),
                                protocol.CLIENT_MESSAGES)
