"""The session WAV: valid from the first byte, and still readable after a SIGKILL with at
most one flush period missing."""

import datetime
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile

from muse_player.pcm import read_wav, to_s16
from muse_player.wav_recorder import CrashSafeWavWriter, RecorderError, resolve_record_path

RATE = 16000


def pattern(first, count, channels=1):
    """A sawtooth that identifies each frame's position (period 4000 frames)."""
    n = np.arange(first, first + count)
    ramp = ((n % 4000) / 4000.0 - 0.5).astype(np.float32)
    return np.repeat(ramp[:, None], channels, axis=1) * np.linspace(1, 0.5, channels)


def test_a_closed_recording_reads_back_what_was_written(tmp_path):
    path = tmp_path / 'session.wav'
    writer = CrashSafeWavWriter(path, RATE, 2, flush_period_s=0.1)
    for first in range(0, 10_000, 160):
        writer.write(pattern(first, 160, 2))
    writer.close()
    samples, rate = soundfile.read(path, dtype='int16', always_2d=True)
    assert rate == RATE and samples.shape == (10_080, 2)
    # Bit for bit the wire's 16-bit samples of the same floats.
    np.testing.assert_array_equal(samples, to_s16(pattern(0, 10_080, 2)))
    assert writer.seconds == pytest.approx(10_080 / RATE)


def test_the_file_is_a_valid_empty_wav_before_any_audio(tmp_path):
    path = tmp_path / 'empty.wav'
    writer = CrashSafeWavWriter(path, RATE, 1)
    audio, rate = soundfile.read(path, dtype='float32')
    assert rate == RATE and len(audio) == 0
    writer.close()


def test_out_of_range_samples_are_clipped_and_counted(tmp_path):
    writer = CrashSafeWavWriter(tmp_path / 'loud.wav', RATE, 1)
    writer.write(np.array([[1.5], [-2.0], [0.5]], np.float32))
    writer.close()
    samples, _ = soundfile.read(tmp_path / 'loud.wav', dtype='int16')
    np.testing.assert_array_equal(samples, [32767, -32767, 16384])   # round(0.5 * 32767)
    audio, _ = read_wav(tmp_path / 'loud.wav')
    np.testing.assert_allclose(audio[:, 0], [1.0, -1.0, 16384 / 32767])
    assert writer.frames_clipped == 2


CHILD = textwrap.dedent('''
    import sys
    import numpy as np
    from muse_player.wav_recorder import CrashSafeWavWriter
    sys.path.insert(0, sys.argv[3])
    from test_wav_recorder import pattern
    writer = CrashSafeWavWriter(sys.argv[1], {rate}, 1, flush_period_s=float(sys.argv[2]))
    total = 0
    while True:
        writer.write(pattern(total, 160))
        total += 160
        print(total, writer.frames_written, flush=True)
        sys.stdin.readline()  # the parent decides when the next block comes
''')


def test_a_recording_survives_sigkill_with_at_most_one_flush_period_missing(tmp_path):
    path = tmp_path / 'killed.wav'
    flush_s = 0.25
    child = subprocess.Popen(
        [sys.executable, '-c', CHILD.format(rate=RATE), str(path), str(flush_s),
         os.path.dirname(__file__)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while True:
            line = child.stdout.readline()
            assert line, f'the writer died early: {child.stderr.read()}'
            handed, on_disk = map(int, line.split())
            if handed >= 1.3 * RATE:  # stop between two flushes
                break
            child.stdin.write('\n')
            child.stdin.flush()
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
        for stream in (child.stdin, child.stdout, child.stderr):
            stream.close()
    audio, rate = read_wav(path)
    audio = audio[:, 0]
    assert rate == RATE
    assert len(audio) == on_disk                      # the header counts what was flushed
    assert 0 < handed - len(audio) <= flush_s * RATE  # at most one period lost
    assert np.abs(audio - pattern(0, len(audio))[:, 0]).max() <= 0.5 / 32767 + 1e-7


def test_record_paths_are_expanded_and_never_overwrite(tmp_path):
    when = datetime.datetime(2026, 1, 2, 3, 4, 5)
    template = str(tmp_path / 'rec' / 'session_{stamp}.wav')
    first = resolve_record_path(template, when)
    assert first == tmp_path / 'rec' / 'session_20260102-030405.wav'
    CrashSafeWavWriter(first, RATE, 1).close()
    second = resolve_record_path(template, when)
    assert second == tmp_path / 'rec' / 'session_20260102-030405_1.wav'
    assert os.path.getsize(first) == 44  # the earlier recording is untouched
    with pytest.raises(RecorderError, match='record_path is empty'):
        resolve_record_path('  ')


def test_writing_to_an_existing_file_or_a_bad_shape_is_refused(tmp_path):
    path = tmp_path / 'taken.wav'
    path.write_bytes(b'earlier session')
    with pytest.raises(RecorderError, match='cannot create recording'):
        CrashSafeWavWriter(path, RATE, 1)
    assert path.read_bytes() == b'earlier session'
    writer = CrashSafeWavWriter(tmp_path / 'ok.wav', RATE, 2)
    with pytest.raises(RecorderError, match=r'expected \(frames, 2\)'):
        writer.write(np.zeros((10, 1), np.float32))
    writer.close()
    with pytest.raises(RecorderError, match='is closed'):
        writer.write(np.zeros((10, 2), np.float32))
