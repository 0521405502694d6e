"""Admission by real-time capacity: the step-time model, the count of real-time streams, the
server's coded refusal and its /healthz report, and the musicgen backend's own measurements."""

import asyncio
import json

import pytest
from server_test_backends import SineBackend
from server_test_support import TOKEN, http_get, serving

from muse_protocol.client import MusicClient, ServerError
from muse_protocol.protocol import ErrorCode
from muse_server.capacity import (BackendLoad, Capacity, PlayStepsGovernor, realtime_streams,
                                  step_time_model)


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, timeout=60))


def test_step_time_model_fits_batch_sizes_and_is_pessimistic_from_one_size():
    model = step_time_model([(1, 0.010), (1, 0.012), (4, 0.016), (8, 0.024)])
    # medians (1, 0.011), (4, 0.016), (8, 0.024): least squares a + b n
    assert model(1) == pytest.approx(0.01065, abs=3e-4)
    assert model(8) == pytest.approx(0.0237, abs=5e-4)
    one_size = step_time_model([(2, 0.010), (2, 0.014), (2, 0.012)])
    assert one_size(1) == one_size(2) == pytest.approx(0.012)
    assert one_size(6) == pytest.approx(0.036)          # grows in proportion beyond what was seen
    assert step_time_model([]) is None


def test_realtime_streams_is_the_largest_count_within_the_step_budget():
    # 50 steps/s at 1.25x: a step may take at most 16 ms
    assert realtime_streams(lambda n: 0.004 + 0.002 * n, 50.0, 1.25) == 6
    assert realtime_streams(lambda n: 0.020 * n, 50.0, 1.25) == 0
    assert realtime_streams(lambda n: 0.001, 50.0, 1.0, most=100) == 100


class MeasuredSine(SineBackend):
    """A sine backend that says it carries ``carried`` real-time streams."""

    def __init__(self, carried):
        super().__init__()
        self.carried = carried

    def load(self):
        return BackendLoad(streams=0, realtime_streams=self.carried, step_rate_hz=60.0,
                           steps_per_second_needed=50.0, margin=1.2, detail='test figures')


def test_a_session_beyond_real_time_capacity_is_refused_with_the_reason():
    async def scenario():
        async with serving(MeasuredSine(carried=1), max_sessions=4) as server:
            async with MusicClient(server.url, token=TOKEN):
                with pytest.raises(ServerError) as refused:
                    await MusicClient(server.url, token=TOKEN).connect()
                status, _, body = await asyncio.to_thread(
                    http_get, f'http://127.0.0.1:{server.port}/healthz')
        return refused.value, status, json.loads(body)

    refused, status, health = run(scenario())
    assert refused.code == ErrorCode.SERVER_OVERLOADED and refused.fatal
    assert '1 real-time stream' in str(refused) and 'test figures' in str(refused)
    assert status == 200 and health['rejected_overloaded'] == 1
    assert health['capacity']['realtime_streams'] == 1
    assert health['capacity']['steps_per_second_needed'] == 50.0


def test_backends_that_do_not_measure_themselves_are_admitted():
    capacity = Capacity(SineBackend())
    assert capacity.refusal(sessions=100) is None and capacity.snapshot() is None
    assert Capacity(MeasuredSine(carried=None)).refusal(sessions=100) is None


def test_play_steps_governor_grows_when_slow_shrinks_when_fast_and_holds_between():
    governor = PlayStepsGovernor(base=25, most=100, frame_rate=50.0, window=3)
    assert [governor.observe(25, 0.6) for _ in range(3)] == [None, None, 50]  # 0.83x real time
    assert governor.observe(25, 0.6) is None        # a fragment of the old size does not count
    assert [governor.observe(50, 1.2) for _ in range(3)] == [None, None, 100]
    assert [governor.observe(100, 2.5) for _ in range(3)] == [None, None, None]  # at most
    assert [governor.observe(100, 1.0) for _ in range(3)] == [None, None, None]  # 2x: hold
    # 4x: the sliding median passes 2.4 at the second such fragment; then the size halves
    # and the third, of the old size, does not count
    assert [governor.observe(100, 0.5) for _ in range(3)] == [None, 50, None]
    assert [governor.observe(50, 0.2) for _ in range(3)] == [None, None, 25]
    assert [governor.observe(25, 0.01) for _ in range(3)] == [None, None, None]  # at base
    assert governor.changes == 4 and governor.fragment_rtf == 50.0
    with pytest.raises(ValueError, match='base'):
        PlayStepsGovernor(base=10, most=5, frame_rate=50.0)
