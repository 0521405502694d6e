"""The MUSE wire protocol between the cloud bridge (client) and the music server.

Plain Python + numpy: no rclpy, no torch, no websockets, so the server, the bridge node and the
tests share one codec. PROTOCOL.md (next to this package) is the readable specification; this
module is its executable form.

* Text frames carry JSON control messages, one object per frame with a ``type`` field.
* Binary frames carry audio: a fixed 44-byte little-endian header, then interleaved samples.
* Every frame is size-bounded, and every decode failure raises a :class:`ProtocolError`
  subclass carrying the :class:`ErrorCode` the server answers with.
* Ordering is checkable from ``(prompt_id, seq)`` alone: within a session both only grow.
"""

from __future__ import annotations

import enum
import json
import math
import re
import struct
from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar

import numpy as np

PROTOCOL_VERSION = 1
AUDIO_HEADER_VERSION = 1
AUDIO_MAGIC = b'MUSA'

# Control frames are small; the bound keeps a hostile client from making the server parse
# megabytes of JSON. Audio frames are bounded by what the welcome announces.
MAX_CONTROL_BYTES = 32 * 1024
DEFAULT_MAX_AUDIO_FRAME_BYTES = 1024 * 1024
MAX_AUDIO_FRAME_BYTES = 16 * 1024 * 1024

MAX_PROMPT_TEXT_CHARS = 4000
MAX_NAME_CHARS = 128     # style, activity, client name, backend name
MAX_TOKEN_CHARS = 512
# Control messages are flat objects; deeper JSON is refused before it is parsed (the parser
# recurses, and a few thousand levels exhaust Python's stack).
MAX_JSON_DEPTH = 16
UINT32_MAX = 2**32 - 1
# first_seq leaves 2**31 frames of room (years of audio), so no seq of a session overflows.
MAX_FIRST_SEQ = 2**31 - 1


class ErrorCode(enum.IntEnum):
    """Error codes of ``error`` messages. Fatal errors close the connection with the same
    number as the WebSocket close code (application range 4000-4999)."""

    MALFORMED = 4000              # not JSON, nested too deep, not an object, corrupt audio header
    UNKNOWN_TYPE = 4001           # 'type' missing or not a message this side accepts
    INVALID_FIELD = 4002          # a field is missing, of the wrong type or out of range
    FRAME_TOO_LARGE = 4003        # a frame exceeds the protocol's size bound
    UNEXPECTED_BINARY = 4004      # clients send text frames only
    STALE_PROMPT = 4005           # prompt_id not greater than the session's last prompt_id
    HELLO_REQUIRED = 4006         # the first message of a session must be 'hello'
    UNAUTHORIZED = 4010           # wrong or missing token
    UNSUPPORTED_VERSION = 4011    # the server does not speak the client's protocol version
    UNSUPPORTED_ENCODING = 4012   # sample encoding not offered by the server
    HELLO_TIMEOUT = 4013          # no hello within the server's handshake timeout
    SERVER_BUSY = 4020            # max_sessions or a connection limit reached; retry later
    RATE_LIMITED = 4022           # too many messages (non-fatal) or failed hellos (fatal)
    SHUTTING_DOWN = 4021          # the server is stopping; no new prompts are accepted
    SERVER_OVERLOADED = 4023      # one more stream would not be served in real time; retry later
    BACKEND_ERROR = 4030          # the backend failed to open or continue a stream
    INTERNAL_ERROR = 4031         # a server bug; the session ends


# Whether the server closes the session after answering with this code.
FATAL_CODES = frozenset({
    ErrorCode.HELLO_REQUIRED, ErrorCode.UNAUTHORIZED, ErrorCode.UNSUPPORTED_VERSION,
    ErrorCode.UNSUPPORTED_ENCODING, ErrorCode.HELLO_TIMEOUT, ErrorCode.SERVER_BUSY,
    ErrorCode.SERVER_OVERLOADED, ErrorCode.INTERNAL_ERROR})


# Full scale of 16-bit PCM: float x in [-1, 1] is the integer round(x * PCM_S16_SCALE), so
# +1.0 and -1.0 map to +-32767 (symmetric; -32768 is never written). The player decodes and the
# session WAV is written with this same constant.
PCM_S16_SCALE = 32767.0


class Encoding(enum.IntEnum):
    """Sample encodings; the values equal muse_msgs/AudioFragment's ENCODING_* constants."""

    PCM_S16LE = 0
    PCM_F32LE = 1

    @property
    def wire_name(self) -> str:
        return self.name.lower()

    @property
    def sample_bytes(self) -> int:
        return 2 if self is Encoding.PCM_S16LE else 4

    @classmethod
    def from_wire_name(cls, name: str) -> 'Encoding':
        for encoding in cls:
            if encoding.wire_name == name:
                return encoding
        raise InvalidField('encoding', f'one of {[e.wire_name for e in cls]}', name)


class Flags(enum.IntFlag):
    FIRST = 1   # starts a stream: not sample-continuous with the fragment before it
    LAST = 2    # last fragment of its prompt: the next audio belongs to a newer prompt
    CONTINUES = 4  # first fragment of a prompt that retargeted the running stream: continues
                   # the previous prompt's LAST fragment sample-for-sample (never with FIRST)
    REPLACES = 8   # with CONTINUES, to a client that said hello with `replace: true`: the
                   # frame starts `AudioFrame.replaces` samples before the end of the previous
                   # prompt's audio and replaces that not-yet-played audio (a forked stream)


MAX_REPLACES = 2**24 - 1   # the 24-bit header field (bytes 9-11)


# ---------------------------------------------------------------- errors


class ProtocolError(Exception):
    """A frame violates the protocol. ``code`` is what the receiving side answers with."""

    code: ErrorCode = ErrorCode.MALFORMED

    def __init__(self, message: str, code: ErrorCode | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code


class MalformedFrame(ProtocolError):
    code = ErrorCode.MALFORMED


class FrameTooLarge(ProtocolError):
    code = ErrorCode.FRAME_TOO_LARGE


class UnknownMessageType(ProtocolError):
    code = ErrorCode.UNKNOWN_TYPE


class InvalidField(ProtocolError):
    """A field is missing, mistyped or out of range; names the field and what was expected."""

    code = ErrorCode.INVALID_FIELD

    def __init__(self, field_name: str, expected: str, got=None, *, missing: bool = False):
        self.field = field_name
        if missing:
            message = f"field '{field_name}' is missing; expected {expected}"
        else:
            shown = repr(got)
            if len(shown) > 60:
                shown = shown[:57] + '...'
            message = f"field '{field_name}' is {shown}; expected {expected}"
        super().__init__(message)


class UnsupportedVersion(ProtocolError):
    code = ErrorCode.UNSUPPORTED_VERSION


# ---------------------------------------------------------------- control messages

_NOT_GIVEN = object()


def _check_int(name, value, low=0, high=UINT32_MAX):
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidField(name, f'an integer in [{low}, {high}]', value)
    return value


def _check_number(name, value, low=-math.inf, high=math.inf, allow_null=False):
    """A finite number in [low, high]; with ``allow_null``, None or NaN mean unknown (NaN)."""
    if allow_null and (value is None or (isinstance(value, float) and math.isnan(value))):
        return float('nan')
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        what = f'a finite number in [{low}, {high}]' + (' or null' if allow_null else '')
        raise InvalidField(name, what, value)
    return float(value)


def _check_str(name, value, max_chars, allow_empty=True):
    if not isinstance(value, str) or len(value) > max_chars or (not allow_empty and not value):
        what = f'a {"" if allow_empty else "non-empty "}string of at most {max_chars} characters'
        raise InvalidField(name, what, value)
    try:  # JSON can spell a lone surrogate ("\ud800"), which no UTF-8 encoder accepts later
        value.encode('utf-8')
    except UnicodeEncodeError:
        raise InvalidField(name, 'a string of Unicode characters (no lone surrogates)',
                           value.encode('utf-8', 'backslashreplace').decode()) from None
    return value


def _check_bool(name, value):
    if not isinstance(value, bool):
        raise InvalidField(name, 'true or false', value)
    return value


def _field(validator, default=_NOT_GIVEN):
    """A message field: ``validator(name, value) -> value``; no default means required."""
    metadata = {'validate': validator, 'required': default is _NOT_GIVEN}
    if default is _NOT_GIVEN:
        return field(metadata=metadata)
    return field(default=default, metadata=metadata)


class ControlMessage:
    """Base of the JSON control messages; subclasses are frozen dataclasses whose fields are
    validated on construction, so an invalid message cannot be built, sent or received."""

    type: ClassVar[str]

    def __post_init__(self):
        for f in fields(self):
            object.__setattr__(self, f.name, f.metadata['validate'](f.name, getattr(self, f.name)))

    def to_json(self) -> str:
        body = {'type': self.type}
        for key, value in asdict(self).items():
            body[key] = None if isinstance(value, float) and math.isnan(value) else value
        text = json.dumps(body, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
        if len(text.encode()) > MAX_CONTROL_BYTES:
            raise FrameTooLarge(f"'{self.type}' message of {len(text.encode())} bytes exceeds "
                                f'{MAX_CONTROL_BYTES} bytes')
        return text

    @classmethod
    def from_dict(cls, body: dict):
        values = {}
        for f in fields(cls):
            if f.name in body:
                values[f.name] = body[f.name]
            elif f.metadata['required']:
                raise InvalidField(f.name, f"a value (required in '{cls.type}')", missing=True)
        return cls(**values)


# client -> server

@dataclass(frozen=True)
class Hello(ControlMessage):
    type: ClassVar[str] = 'hello'
    protocol: int = _field(lambda n, v: _check_int(n, v, 0, 2**16))
    token: str = _field(lambda n, v: _check_str(n, v, MAX_TOKEN_CHARS), '')
    client: str = _field(lambda n, v: _check_str(n, v, MAX_NAME_CHARS), '')
    # checked against what the server offers by the server (UNSUPPORTED_ENCODING)
    encoding: str = _field(lambda n, v: _check_str(n, v, MAX_NAME_CHARS),
                           Encoding.PCM_S16LE.wire_name)
    # The client splices REPLACES frames (a continuation that starts inside the audio already
    # sent). Old clients do not send it and are never sent one.
    replace: bool = _field(_check_bool, False)

    @classmethod
    def from_dict(cls, body: dict):
        # The version decides how the rest is read, so it is checked before any other field.
        version = body.get('protocol')
        if version is None:
            raise InvalidField('protocol', f'the protocol version ({PROTOCOL_VERSION})', missing=True)
        if version != PROTOCOL_VERSION or isinstance(version, bool):
            raise UnsupportedVersion(
                f'protocol version {version!r} is not supported; this side speaks {PROTOCOL_VERSION}')
        return super().from_dict(body)


@dataclass(frozen=True)
class Prompt(ControlMessage):
    """Switch the music to this prompt (fields as muse_msgs/MusicPrompt)."""

    type: ClassVar[str] = 'prompt'
    prompt_id: int = _field(_check_int)
    text: str = _field(lambda n, v: _check_str(n, v, MAX_PROMPT_TEXT_CHARS))
    style: str = _field(lambda n, v: _check_str(n, v, MAX_NAME_CHARS), '')
    activity: str = _field(lambda n, v: _check_str(n, v, MAX_NAME_CHARS), '')
    energy: float = _field(lambda n, v: _check_number(n, v, 0.0, 1.0), 0.5)
    target_bpm: float = _field(lambda n, v: _check_number(n, v, 20.0, 400.0), 100.0)
    heart_rate_bpm: float = _field(lambda n, v: _check_number(n, v, 0.0, 400.0, allow_null=True),
                                   float('nan'))
    stamp: float = _field(lambda n, v: _check_number(n, v, 0.0), 0.0)   # MusicPrompt stamp [s]
    # seq of the first fragment (resume after reconnect)
    first_seq: int = _field(lambda n, v: _check_int(n, v, 0, MAX_FIRST_SEQ), 0)


@dataclass(frozen=True)
class Stop(ControlMessage):
    """Stop generating; the session stays open for the next prompt."""

    type: ClassVar[str] = 'stop'


# server -> client

@dataclass(frozen=True)
class Welcome(ControlMessage):
    type: ClassVar[str] = 'welcome'
    protocol: int = _field(lambda n, v: _check_int(n, v, 0, 2**16))
    session_id: str = _field(lambda n, v: _check_str(n, v, MAX_NAME_CHARS, allow_empty=False))
    backend: str = _field(lambda n, v: _check_str(n, v, MAX_NAME_CHARS))
    sample_rate: int = _field(lambda n, v: _check_int(n, v, 1, 768000))
    channels: int = _field(lambda n, v: _check_int(n, v, 1, 255))
    encoding: str = _field(lambda n, v: Encoding.from_wire_name(v).wire_name)
    max_frame_bytes: int = _field(lambda n, v: _check_int(n, v, 64, MAX_AUDIO_FRAME_BYTES))
    fragment_s: float = _field(lambda n, v: _check_number(n, v, 0.0), 0.0)
    max_ahead_s: float = _field(lambda n, v: _check_number(n, v, 0.0), 0.0)
    server: str = _field(lambda n, v: _check_str(n, v, MAX_NAME_CHARS), '')


@dataclass(frozen=True)
class Stopped(ControlMessage):
    """Answer to 'stop': generation ended after (prompt_id, last_seq); -1 = nothing was sent."""

    type: ClassVar[str] = 'stopped'
    prompt_id: int = _field(lambda n, v: _check_int(n, v, -1), -1)
    last_seq: int = _field(lambda n, v: _check_int(n, v, -1), -1)


@dataclass(frozen=True)
class Shutdown(ControlMessage):
    """The server is stopping: the connection closes (1001) within grace_s."""

    type: ClassVar[str] = 'shutdown'
    grace_s: float = _field(lambda n, v: _check_number(n, v, 0.0), 0.0)


@dataclass(frozen=True)
class Error(ControlMessage):
    type: ClassVar[str] = 'error'
    code: int = _field(lambda n, v: _check_int(n, v, 1000, 4999))
    message: str = _field(lambda n, v: _check_str(n, v, 4 * MAX_NAME_CHARS), '')
    fatal: bool = _field(_check_bool, False)
    prompt_id: int = _field(lambda n, v: _check_int(n, v, -1), -1)  # the prompt concerned, -1 none

    @classmethod
    def make(cls, code: ErrorCode, message: str, prompt_id: int = -1,
             fatal: bool | None = None) -> 'Error':
        """An error reply; ``fatal`` defaults to whether ``code`` is in FATAL_CODES."""
        limit = 4 * MAX_NAME_CHARS
        message = message if len(message) <= limit else message[:limit - 3] + '...'
        return cls(code=int(code), message=message,
                   fatal=code in FATAL_CODES if fatal is None else fatal, prompt_id=prompt_id)

    @property
    def code_name(self) -> str:
        try:
            return ErrorCode(self.code).name
        except ValueError:
            return str(self.code)


CLIENT_MESSAGES = {m.type: m for m in (Hello, Prompt, Stop)}
SERVER_MESSAGES = {m.type: m for m in (Welcome, Stopped, Shutdown, Error)}


def decode_control(data, accepted: dict[str, type], max_bytes: int = MAX_CONTROL_BYTES):
    """Parse one text frame into the message class ``accepted[type]``.

    ``data`` is ``str`` or UTF-8 ``bytes``. Raises :class:`FrameTooLarge`,
    :class:`MalformedFrame`, :class:`UnknownMessageType` or :class:`InvalidField`.
    """
    raw = data.encode('utf-8', 'surrogatepass') if isinstance(data, str) else bytes(data)
    if len(raw) > max_bytes:
        raise FrameTooLarge(f'control frame of {len(raw)} bytes exceeds {max_bytes} bytes')
    depth = json_depth(raw)
    if depth > MAX_JSON_DEPTH:
        raise MalformedFrame(f'control frame nests {depth} levels deep; at most {MAX_JSON_DEPTH} '
                             'are accepted')
    try:
        body = json.loads(raw.decode('utf-8'), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedFrame(f'control frame is not UTF-8 JSON: {exc}') from None
    if not isinstance(body, dict):
        raise MalformedFrame(f'control frame must be a JSON object, got {type(body).__name__}')
    kind = body.get('type')
    # a list or object 'type' is unhashable: the dict lookup alone would raise TypeError
    if not isinstance(kind, str) or kind not in accepted:
        raise UnknownMessageType(
            f'unknown message type {kind!r}; expected one of {sorted(accepted)}')
    return accepted[kind].from_dict(body)


_JSON_STRING_OR_BRACKET = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def json_depth(raw: bytes) -> int:
    """How deep the arrays and objects of JSON text ``raw`` nest (brackets inside strings do
    not count), found without parsing. Cheap for the flat messages of this protocol: with few
    brackets in all, their count is returned (an upper bound, and within the limit)."""
    brackets = raw.count(b'[') + raw.count(b'{')
    if brackets <= MAX_JSON_DEPTH:
        return brackets
    depth = deepest = 0
    for match in _JSON_STRING_OR_BRACKET.finditer(raw):
        token = match.group()
        if token in (b'[', b'{'):
            depth += 1
            deepest = max(deepest, depth)
        elif token in (b']', b'}'):
            depth -= 1
    return deepest


def _reject_constant(name):
    raise ValueError(f'{name} is not valid JSON')


# ---------------------------------------------------------------- audio frames

# magic, header version, header size, flags, encoding, channels, reserved,
# sample_rate, prompt_id, seq, n_samples (per channel), generation start/end [ns, server clock]
_AUDIO_HEADER = struct.Struct('<4sBBBBBBHIIIIqq')
AUDIO_HEADER_BYTES = _AUDIO_HEADER.size


@dataclass(frozen=True)
class AudioFrame:
    """One binary audio frame: header fields plus the raw interleaved sample bytes."""

    prompt_id: int
    seq: int
    sample_rate: int
    channels: int
    encoding: Encoding
    flags: Flags
    payload: bytes
    generation_started_ns: int = 0
    generation_finished_ns: int = 0
    replaces: int = 0   # with REPLACES: samples (per channel) of the previous prompt's audio,
                        # counted back from its end, that this frame's audio replaces

    @property
    def is_first(self) -> bool:
        return bool(self.flags & Flags.FIRST)

    @property
    def is_last(self) -> bool:
        return bool(self.flags & Flags.LAST)

    @property
    def continues(self) -> bool:
        return bool(self.flags & Flags.CONTINUES)

    @property
    def replacing(self) -> bool:
        return bool(self.flags & Flags.REPLACES)

    @property
    def n_samples(self) -> int:
        return len(self.payload) // (self.channels * self.encoding.sample_bytes)

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.sample_rate

    @property
    def order_key(self) -> tuple[int, int]:
        return self.prompt_id, self.seq

    def samples(self) -> np.ndarray:
        """The samples as float32 ``(n_samples, channels)`` in [-1, 1]."""
        if self.encoding is Encoding.PCM_S16LE:
            values = np.frombuffer(self.payload, dtype='<i2').astype(np.float32) / PCM_S16_SCALE
        else:
            values = np.frombuffer(self.payload, dtype='<f4').astype(np.float32)
        return values.reshape(-1, self.channels)


def encode_samples(samples: np.ndarray, encoding: Encoding) -> bytes:
    """float ``(n, channels)`` in [-1, 1] -> interleaved little-endian bytes."""
    clipped = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    if encoding is Encoding.PCM_S16LE:
        return np.round(clipped * PCM_S16_SCALE).astype('<i2').tobytes()
    return clipped.astype('<f4').tobytes()


def encode_audio_frame(frame: AudioFrame, max_bytes: int = MAX_AUDIO_FRAME_BYTES) -> bytes:
    """Header + payload; raises :class:`FrameTooLarge` or :class:`InvalidField`."""
    _check_int('prompt_id', frame.prompt_id)
    _check_int('seq', frame.seq)
    _check_int('sample_rate', frame.sample_rate, 1, UINT32_MAX)
    _check_int('channels', frame.channels, 1, 255)
    encoding = Encoding(frame.encoding)   # may be a plain int, which frame.n_samples cannot take
    n_samples, extra = divmod(len(frame.payload), frame.channels * encoding.sample_bytes)
    if extra:
        raise InvalidField('payload', f'a whole number of {frame.channels}-channel '
                           f'{encoding.wire_name} samples', f'{len(frame.payload)} bytes')
    _check_int('replaces', frame.replaces, 0, MAX_REPLACES)
    if frame.replaces and not frame.flags & Flags.REPLACES:
        raise InvalidField('replaces', '0 unless flags has REPLACES', frame.replaces)
    total = AUDIO_HEADER_BYTES + len(frame.payload)
    if total > max_bytes:
        raise FrameTooLarge(f'audio frame of {total} bytes exceeds {max_bytes} bytes')
    header = _AUDIO_HEADER.pack(
        AUDIO_MAGIC, AUDIO_HEADER_VERSION, AUDIO_HEADER_BYTES, int(frame.flags),
        int(encoding), frame.channels, frame.replaces & 0xFF, frame.replaces >> 8,
        frame.sample_rate, frame.prompt_id,
        frame.seq, n_samples, frame.generation_started_ns, frame.generation_finished_ns)
    return header + bytes(frame.payload)


def decode_audio_frame(data, max_bytes: int = MAX_AUDIO_FRAME_BYTES) -> AudioFrame:
    """Parse one binary frame. Raises :class:`FrameTooLarge` or :class:`MalformedFrame`."""
    view = memoryview(data)
    if len(view) > max_bytes:
        raise FrameTooLarge(f'audio frame of {len(view)} bytes exceeds {max_bytes} bytes')
    if len(view) < AUDIO_HEADER_BYTES:
        raise MalformedFrame(f'audio frame of {len(view)} bytes is shorter than its '
                             f'{AUDIO_HEADER_BYTES}-byte header')
    (magic, version, header_size, flags, encoding, channels, replaces_low, replaces_high,
     sample_rate, prompt_id, seq, n_samples, started_ns, finished_ns) = \
        _AUDIO_HEADER.unpack_from(view)
    if magic != AUDIO_MAGIC:
        raise MalformedFrame(f'audio frame magic is {bytes(magic)!r}; expected {AUDIO_MAGIC!r}')
    if version != AUDIO_HEADER_VERSION:
        raise MalformedFrame(f'audio header version {version}; expected {AUDIO_HEADER_VERSION}')
    if header_size != AUDIO_HEADER_BYTES:
        raise MalformedFrame(f'audio header size {header_size}; expected {AUDIO_HEADER_BYTES}')
    try:
        encoding = Encoding(encoding)
    except ValueError:
        raise MalformedFrame(f'audio encoding {encoding}; expected one of '
                             f'{[int(e) for e in Encoding]}') from None
    if channels == 0 or sample_rate == 0:
        raise MalformedFrame(f'audio frame with {channels} channels at {sample_rate} Hz')
    flags = Flags(flags & (Flags.FIRST | Flags.LAST | Flags.CONTINUES | Flags.REPLACES))
    if flags & Flags.REPLACES and not flags & Flags.CONTINUES:
        flags &= ~Flags.REPLACES   # meaningless without CONTINUES: ignored like a reserved bit
    payload = view[AUDIO_HEADER_BYTES:]
    expected = n_samples * channels * encoding.sample_bytes
    if len(payload) != expected:
        raise MalformedFrame(f'audio payload is {len(payload)} bytes; the header announces '
                             f'{n_samples} x {channels} {encoding.wire_name} samples = {expected}')
    return AudioFrame(prompt_id=prompt_id, seq=seq, sample_rate=sample_rate, channels=channels,
                      encoding=encoding, flags=flags, payload=bytes(payload),
                      generation_started_ns=started_ns, generation_finished_ns=finished_ns,
                      replaces=replaces_low | replaces_high << 8 if flags & Flags.REPLACES else 0)


def max_samples_per_frame(max_frame_bytes: int, channels: int, encoding: Encoding) -> int:
    """How many samples (per channel) fit in one audio frame of at most ``max_frame_bytes``."""
    per_sample = channels * Encoding(encoding).sample_bytes
    count = (max_frame_bytes - AUDIO_HEADER_BYTES) // per_sample
    if count < 1:
        raise InvalidField('max_frame_bytes', f'room for at least one sample after the '
                           f'{AUDIO_HEADER_BYTES}-byte header', max_frame_bytes)
    return count
