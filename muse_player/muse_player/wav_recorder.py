"""A 16-bit PCM WAV writer whose file stays readable if the process dies mid-session.

The header goes out before any audio; then every ``flush_period_s`` of audio the samples
are written, the RIFF and data sizes in the header are patched to match (the ``wave``
module does the patching on every ``writeframes``) and the file is flushed to the OS. A
SIGKILL therefore loses at most the last period: the page cache keeps what was flushed,
and the header never claims more data than was written before it.
"""

import datetime
import os
import wave
from pathlib import Path

import numpy as np

from muse_player.pcm import to_s16

MAX_WAV_BYTES = 0xFFFFFFFF - 36  # RIFF sizes are 32-bit


class RecorderError(OSError):
    """The recording cannot be written (names the path and the reason)."""


def resolve_record_path(template, now=None):
    """Expand ``~`` and ``{stamp}`` (local time, YYYYmmdd-HHMMSS) and never overwrite: an
    existing file gets a ``_1``, ``_2``, ... suffix instead, so no earlier session is lost."""
    if not str(template).strip():
        raise RecorderError('record_path is empty; expected a .wav path (may contain {stamp})')
    stamp = (now or datetime.datetime.now()).strftime('%Y%m%d-%H%M%S')
    path = Path(os.path.expanduser(str(template).replace('{stamp}', stamp)))
    candidate, index = path, 0
    while candidate.exists():
        index += 1
        candidate = path.with_name(f'{path.stem}_{index}{path.suffix}')
    return candidate


class CrashSafeWavWriter:
    """Appends float32 blocks ``(frames, channels)`` to a 16-bit WAV; see the module doc."""

    def __init__(self, path, sample_rate, channels, flush_period_s=0.5):
        if not flush_period_s > 0:
            raise RecorderError(f'flush_period_s is {flush_period_s!r}; expected seconds > 0')
        self.path = Path(path)
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self._flush_frames = max(1, round(flush_period_s * self.sample_rate))
        self._pending = []
        self._pending_frames = 0
        self.frames_written = 0  # frames on disk with a header that counts them
        self.frames_clipped = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, 'xb')
        except OSError as exc:
            raise RecorderError(f'cannot create recording {self.path}: {exc}') from exc
        self._wav = wave.open(self._file, 'wb')
        self._wav.setnchannels(self.channels)
        self._wav.setsampwidth(2)
        self._wav.setframerate(self.sample_rate)
        self._wav.writeframes(b'')  # the header, before any audio
        self._file.flush()

    @property
    def seconds(self):
        return (self.frames_written + self._pending_frames) / self.sample_rate

    def write(self, block):
        if self._wav is None:
            raise RecorderError(f'recording {self.path} is closed')
        block = np.asarray(block, dtype=np.float32)
        if block.ndim != 2 or block.shape[1] != self.channels:
            raise RecorderError(f'block of shape {block.shape} for {self.path}; expected '
                                f'(frames, {self.channels})')
        self.frames_clipped += int(np.count_nonzero(np.abs(block).max(axis=1) > 1.0))
        # The wire's full scale: a fragment played unmixed is recorded bit for bit.
        pcm = to_s16(block)
        self._pending.append(pcm.tobytes())
        self._pending_frames += len(pcm)
        if self._pending_frames >= self._flush_frames:
            self.flush()

    def flush(self):
        """Write what is pending, patch the header sizes, hand it all to the OS."""
        if self._wav is None or not self._pending:
            return
        data = b''.join(self._pending)
        if 44 + self.frames_written * 2 * self.channels + len(data) > MAX_WAV_BYTES:
            raise RecorderError(f'recording {self.path} reached the 4 GiB WAV limit')
        self._pending, frames, self._pending_frames = [], self._pending_frames, 0
        self._wav.writeframes(data)
        self._file.flush()
        self.frames_written += frames

    def close(self):
        if self._wav is None:
            return
        try:
            self.flush()
            self._wav.close()
        finally:
            self._wav = None
            self._file.close()
