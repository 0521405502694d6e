"""SessionData.to_wall: data-time stamps onto the wall clock the session's audio plays in."""

import numpy as np

from muse_bringup.session_data import SessionData


def test_without_clock_pairs_stamps_are_already_wall_time():
    np.testing.assert_allclose(SessionData().to_wall([1.0, 5.5]), [1.0, 5.5])


def test_a_replay_at_rate_4_maps_data_seconds_to_quarter_wall_seconds():
    data = SessionData()
    # data time 100 s at wall 1000 s, replayed 4x faster than real time
    data.clock_pairs = [(100.0 + 4.0 * k, 1000.0 + k) for k in range(0, 60, 2)][::-1]
    np.testing.assert_allclose(data.to_wall([100.0, 140.0, 150.0]), [1000.0, 1010.0, 1012.5])
    # after the data ended (music playing out) and before it began: the same rate
    np.testing.assert_allclose(data.to_wall([100.0 + 4.0 * 58 + 8.0]), [1000.0 + 58 + 2.0])
    np.testing.assert_allclose(data.to_wall([96.0]), [999.0])
