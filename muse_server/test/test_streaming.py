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


def test_after_a_fork_behind_the_estimate_the_listener_lags_it_less():
    """The listener is 0.3 s behind the real-time estimate (its prebuffer); a fork 0.1 s after
    the listener replaces audio from 0.2 s before the estimate: the next send moves the
    estimate back there, and the listener is then 0.1 s behind it, not 0.3 s."""
    now = [0.0]
    pacer = PlaybackPacer(2.0, clock=lambda: now[0], listener_delay_s=0.3)
    pacer.sent(2.0)
    now[0] = 1.0
    assert abs(pacer.heard_s() - 0.7) < 1e-9
    pacer.replaced(2.0 - 0.8)          # forked at 0.8 s = heard + 0.1
    pacer.sent(0.5)
    assert abs(pacer.heard_s() - 0.7) < 1e-9    # what was heard did not change
    pacer.restart()
    pacer.sent(1.0)
    now[0] = 1.5
    assert abs(pacer.heard_s() - 0.2) < 1e-9    # a new stream: the player prebuffers again
