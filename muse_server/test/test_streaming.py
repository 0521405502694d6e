"""What a fork changes in the session's bookkeeping: the pacer and the audio tail forget the
audio a fork replaced (the listener never hears it)."""

import numpy as np

from muse_server.streaming import AudioTail, PlaybackPacer


def test_the_pacer_forgets_replaced_audio():
    now = [0.0]
    pacer = PlaybackPacer(2.0, clock=lambda: now[0])
    pacer.sent(1.5)
    now[0] = 0.5
    assert pacer.ahead_s() == 1.0
    pacer.replaced(0.75)
    assert pacer.ahead_s() == 0.25
    pacer.replaced(10.0)             # never below what was played
    assert pacer.ahead_s() == 0.0


def test_the_tail_drops_replaced_samples_across_chunks():
    tail = AudioTail(1.0, 10, 1)
    for start in (0, 4, 8):
        tail.append(np.arange(start, start + 4, dtype=np.float32)[:, None])
    tail.drop_last(6)
    np.testing.assert_array_equal(tail.get()[:, 0], np.arange(6))
    tail.append(np.arange(20, 26, dtype=np.float32)[:, None])
    np.testing.assert_array_equal(tail.get()[:, 0], list(range(2, 6)) + list(range(20, 26)))
