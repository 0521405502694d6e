"""PCM sample formats and rate/channel conversion for fragments (no ROS).

The wire format is interleaved little-endian PCM, s16le or f32le (``AudioFragment.ENCODING_*``),
written by ``muse_protocol.protocol.encode_samples``. Inside the player everything is
float32 shaped ``(frames, channels)`` in [-1, 1].
"""

import numpy as np
from muse_protocol.protocol import PCM_S16_SCALE

# Same values as muse_msgs/AudioFragment ENCODING_* (checked by a test), kept here so the
# plain modules need no ROS message import.
ENCODING_PCM_S16LE = 0
ENCODING_PCM_F32LE = 1
ENCODINGS = {ENCODING_PCM_S16LE: np.dtype('<i2'), ENCODING_PCM_F32LE: np.dtype('<f4')}
ENCODING_NAMES = {ENCODING_PCM_S16LE: 's16le', ENCODING_PCM_F32LE: 'f32le'}

MAX_CHANNELS = 64
MAX_SAMPLE_RATE = 768_000


class PcmFormatError(ValueError):
    """A PCM buffer or its description is not usable (names the field and what was expected)."""


def check_format(sample_rate, channels, encoding):
    """Raise PcmFormatError unless the three describe PCM the player can decode."""
    _check_encoding(encoding)
    _check_channels(channels)
    if not 1 <= int(sample_rate) <= MAX_SAMPLE_RATE:
        raise PcmFormatError(f'sample_rate is {sample_rate} Hz; expected 1..{MAX_SAMPLE_RATE}')


def _check_encoding(encoding):
    if encoding not in ENCODINGS:
        raise PcmFormatError(
            f'encoding {encoding!r} is unknown; expected one of '
            + ', '.join(f'{code} ({name})' for code, name in ENCODING_NAMES.items()))


def _check_channels(channels):
    if not 1 <= int(channels) <= MAX_CHANNELS:
        raise PcmFormatError(f'channels is {channels}; expected 1..{MAX_CHANNELS}')


def decode(data, encoding, channels):
    """Interleaved PCM bytes (any buffer) -> float32 array ``(frames, channels)``."""
    _check_encoding(encoding)
    _check_channels(channels)
    dtype = ENCODINGS[encoding]
    raw = memoryview(data).cast('B')
    frame_bytes = dtype.itemsize * channels
    if len(raw) % frame_bytes:
        raise PcmFormatError(
            f'data is {len(raw)} bytes, not a whole number of {ENCODING_NAMES[encoding]} frames '
            f'of {channels} channel(s) ({frame_bytes} bytes each)')
    samples = np.frombuffer(raw, dtype=dtype).reshape(-1, channels)
    if encoding == ENCODING_PCM_S16LE:
        return from_s16(samples)
    audio = samples.astype(np.float32)
    if not np.isfinite(audio).all():
        raise PcmFormatError('data holds non-finite f32le samples (NaN or inf); expected finite '
                             'floats in [-1, 1]')
    return audio


def check_channel_mapping(have, want):
    """Raise PcmFormatError unless :func:`convert_channels` can map ``have`` onto ``want``."""
    if not (have == want or have == 1 or want == 1):
        raise PcmFormatError(
            f'cannot map {have} channels onto {want}; expected mono input, mono output or '
            'equal channel counts')


def convert_channels(audio, channels):
    """Mono is spread to every channel; several channels are averaged down to mono."""
    have = audio.shape[1]
    check_channel_mapping(have, channels)
    if have == channels:
        return audio
    if have == 1:
        return np.repeat(audio, channels, axis=1)
    return audio.mean(axis=1, keepdims=True, dtype=np.float32)


class StreamResampler:
    """Resamples one continuous stream chunk by chunk (soxr keeps the filter state between
    chunks, so fragment edges stay seamless; resampling each fragment alone would dip there)."""

    def __init__(self, source_rate, target_rate, channels):
        self.source_rate = int(source_rate)
        self.target_rate = int(target_rate)
        self.channels = int(channels)
        self._stream = None
        if self.source_rate != self.target_rate:
            import soxr
            self._stream = soxr.ResampleStream(self.source_rate, self.target_rate, self.channels,
                                               dtype='float32', quality='HQ')

    @property
    def passthrough(self):
        return self._stream is None

    def process(self, audio, last=False):
        """Resample the next chunk; ``last`` flushes the filter's delay line."""
        if audio.shape[1] != self.channels:
            raise PcmFormatError(f'chunk has {audio.shape[1]} channels; this stream has '
                                 f'{self.channels}')
        if self._stream is None:
            return audio
        out = self._stream.resample_chunk(np.ascontiguousarray(audio, dtype=np.float32),
                                          last=last)
        return out.reshape(-1, self.channels)

    def flush(self):
        """Whatever the filter still holds (only needed when the stream ends)."""
        return self.process(np.zeros((0, self.channels), np.float32), last=True)


def to_s16(audio):
    """float samples -> int16 at the wire's full scale (``PCM_S16_SCALE``), clipped to +-1."""
    return np.round(np.clip(audio, -1.0, 1.0) * PCM_S16_SCALE).astype('<i2')


def from_s16(samples):
    """int16 samples -> float32 at the wire's full scale: the inverse of :func:`to_s16`."""
    return np.asarray(samples).astype(np.float32) / np.float32(PCM_S16_SCALE)


def read_wav(path):
    """A 16-bit WAV written by MUSE as float32 ``(frames, channels)`` and its sample rate, at the
    same full scale it was written with (libsndfile's float reading divides by 32768)."""
    import soundfile
    samples, rate = soundfile.read(str(path), dtype='int16', always_2d=True)
    return from_s16(samples), rate
