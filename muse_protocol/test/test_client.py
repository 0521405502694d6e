"""Client-side logic: backoff, ordering guard, statistics, token lookup, and the reconnecting link
against in-process servers that stop and come back."""

import asyncio
import random

import pytest
from websockets.asyncio.server import serve

from server_test_backends import SineBackend
from server_test_support import TOKEN, run, serving
from muse_protocol import protocol
from muse_protocol.client import ConnectionLost, MusicClient
from muse_protocol.link import (PLAYING_RECONNECT_MAX_S, ExponentialBackoff, LinkState,
                                OrderGuard, ReconnectingLink)
from muse_protocol.stats import RateMeter, RollingStats
from muse_protocol.tokens import resolve_token


# ---------------------------------------------------------------- plain logic


def test_backoff_doubles_up_to_the_cap_with_jitter_below_each_ceiling():
    backoff = ExponentialBackoff(0.5, 4.0, jitter=0.5, rng=random.Random(1))
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    delays = [backoff.next_delay() for _ in ceilings]
    for delay, ceiling in zip(delays, ceilings):
        assert 0.5 * ceiling <= delay <= ceiling
    assert len(set(delays)) == len(delays)  # jittered, not lockstep
    backoff.reset()
    assert backoff.next_delay() <= 0.5


def test_backoff_without_jitter_is_exact_and_survives_many_attempts():
    backoff = ExponentialBackoff(0.1, 10.0, jitter=0.0)
    assert [backoff.next_delay() for _ in range(4)] == pytest.approx([0.1, 0.2, 0.4, 0.8])
    for _ in range(5000):
        delay = backoff.next_delay()
    assert delay == 10.0


@pytest.mark.parametrize('low, high, jitter', [(0.0, 1.0, 0.5), (2.0, 1.0, 0.5), (0.1, 1.0, 1.5)])
def test_backoff_rejects_bad_settings(low, high, jitter):
    with pytest.raises(ValueError):
        ExponentialBackoff(low, high, jitter=jitter)


def test_order_guard_admits_only_strictly_increasing_keys():
    guard = OrderGuard()
    assert guard.next_seq(1) == 0
    admitted = [guard.admit(p, s) for p, s in [(1, 0), (1, 1), (1, 1), (1, 0), (2, 0), (1, 5),
                                               (2, 3), (2, 2), (3, 0)]]
    assert admitted == [True, True, False, False, True, False, True, False, True]
    assert guard.last == (3, 0) and guard.next_seq(3) == 1 and guard.next_seq(4) == 0


def test_rolling_stats_percentiles_over_the_last_window():
    stats = RollingStats(size=100)
    assert stats.percentile(50) != stats.percentile(50)  # NaN when empty
    for value in range(1000):
        stats.add(value)
    assert len(stats) == 100 and stats.last == 999
    assert stats.percentile(50) == pytest.approx(949.5)
    assert stats.percentile(95) == pytest.approx(994.05)


def test_rate_meter_counts_events_in_its_window():
    now = [0.0]
    meter = RateMeter(window_s=2.0, clock=lambda: now[0])
    for _ in range(10):
        meter.tick()
        now[0] += 0.1
    assert meter.rate() == pytest.approx(5.0)
    now[0] += 5.0
    assert meter.rate() == 0.0


def test_token_comes_from_the_value_then_the_file_then_the_environment(tmp_path):
    token_file = tmp_path / 'token'
    token_file.write_text('from-file\n')
    env = {'MUSE_SERVER_TOKEN': 'from-env'}
    assert resolve_token('given', str(token_file), env) == 'given'
    assert resolve_token('', str(token_file), env) == 'from-file'
    assert resolve_token('', '', env) == 'from-env'
    assert resolve_token(None, None, {}) is None
    with pytest.raises(ValueError, match='cannot read'):
        resolve_token('', str(tmp_path / 'missing'), env)
    (tmp_path / 'empty').write_text('  \n')
    with pytest.raises(ValueError, match='empty'):
        resolve_token('', str(tmp_path / 'empty'), env)


# ---------------------------------------------------------------- the reconnecting link


class _Recorder:
    def __init__(self):
        self.frames = []
        self.logs = []

    def frame(self, frame):
        self.frames.append(frame)

    def log(self, level, message):
        self.logs.append((level, message))

    async def wait(self, condition, timeout=20.0):
        for _ in range(int(timeout / 0.02)):
            if condition(self):
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f'timed out: {len(self.frames)} frames, logs {self.logs[-5:]}')

    def of(self, prompt_id):
        return [f for f in self.frames if f.prompt_id == prompt_id]


def _link(url, recorder, token=TOKEN):
    return ReconnectingLink(url, token, recorder.frame, reconnect_min_s=0.05, reconnect_max_s=0.2,
                            open_timeout_s=2.0, ping_period_s=0.1, log=recorder.log,
                            rng=random.Random(0))


def test_link_resumes_numbering_after_a_server_restart_and_keeps_order():
    async def scenario():
        recorder = _Recorder()
        first_server = serving(SineBackend())
        server = await first_server.__aenter__()
        port = server.port
        link = _link(server.url, recorder)
        runner = asyncio.create_task(link.run())
        link.set_prompt(protocol.Prompt(prompt_id=1, text='one'))  # before connecting
        await recorder.wait(lambda r: len(r.of(1)) >= 4)
        await recorder.wait(lambda r: len(link.rtt_s) >= 2)
        session_before = link.session_id
        await first_server.__aexit__(None, None, None)
        delivered = len(recorder.frames)
        last_seq = recorder.frames[-1].seq
        assert link.state is not LinkState.CONNECTED or link.session_id != session_before

        async with serving(SineBackend(), port=port):
            await recorder.wait(lambda r: len(r.frames) >= delivered + 3)
            resumed = recorder.frames[delivered]
            assert (resumed.prompt_id, resumed.seq, resumed.is_first) == (1, last_seq + 1, True)
            assert link.session_id not in ('', session_before)
            link.set_prompt(protocol.Prompt(prompt_id=2, text='two'))
            await recorder.wait(lambda r: len(r.of(2)) >= 2)
            snapshot = link.snapshot()
        keys = [(f.prompt_id, f.seq) for f in recorder.frames]
        assert keys == sorted(keys) and len(set(keys)) == len(keys)
        assert snapshot['connects'] == 2 and snapshot['state'] == 'connected'
        assert snapshot['first_fragment_ms_p50'] >= 0 and snapshot['rtt_ms_p50'] >= 0
        assert snapshot['dropped_out_of_order'] == 0
        assert any('lost the server' in message for _, message in recorder.logs)
        await link.close()
        await runner
        assert link.state is LinkState.CLOSED
    run(scenario())


def test_link_starts_a_new_session_when_prompt_ids_go_back():
    async def scenario():
        recorder = _Recorder()
        async with serving(SineBackend()) as server:
            link = _link(server.url, recorder)
            runner = asyncio.create_task(link.run())
            link.set_prompt(protocol.Prompt(prompt_id=7, text='seven'))
            await recorder.wait(lambda r: len(r.of(7)) >= 2)
            link.set_prompt(protocol.Prompt(prompt_id=7, text='seven again'))  # latched copy
            link.set_prompt(protocol.Prompt(prompt_id=1, text='a restarted prompt builder'))
            await recorder.wait(lambda r: len(r.of(1)) >= 2)
            await link.close()
            await runner
        assert recorder.of(1)[0].seq == 0 and recorder.of(1)[0].is_first
        assert link.counters['connects'] == 2
        assert any('went back' in message for _, message in recorder.logs)
    run(scenario())


def test_link_with_a_wrong_token_keeps_retrying_and_reports_why():
    async def scenario():
        recorder = _Recorder()
        async with serving(SineBackend()) as server:
            link = _link(server.url, recorder, token='wrong')
            runner = asyncio.create_task(link.run())
            await recorder.wait(lambda r: link.counters['connect_failures'] >= 3)
            assert link.state is not LinkState.CONNECTED
            assert 'UNAUTHORIZED' in link.last_error
            link.reconfigure(token=TOKEN)  # fixed at runtime: connects right away
            link.set_prompt(protocol.Prompt(prompt_id=1, text='one'))
            await recorder.wait(lambda r: len(r.of(1)) >= 1)
            await link.close()
            await runner
    run(scenario())


def test_link_follows_a_new_server_url():
    async def scenario():
        recorder = _Recorder()
        async with serving(SineBackend()) as first, serving(SineBackend()) as second:
            link = _link(first.url, recorder)
            runner = asyncio.create_task(link.run())
            link.set_prompt(protocol.Prompt(prompt_id=1, text='one'))
            await recorder.wait(lambda r: len(r.frames) >= 2)
            assert len(first.sessions) == 1
            link.reconfigure(url=second.url, reconnect_min_s=0.1, ping_period_s=0.5)
            count = len(recorder.frames)
            await recorder.wait(lambda r: len(r.frames) >= count + 3 and len(second.sessions) == 1)
            assert link.snapshot()['server_url'] == second.url
            await link.close()
            await runner
        keys = [(f.prompt_id, f.seq) for f in recorder.frames]
        assert keys == sorted(keys)
        with pytest.raises(ValueError):
            link.reconfigure(colour='blue')
    run(scenario())


def test_link_reports_an_unreachable_server():
    async def scenario():
        recorder = _Recorder()
        link = _link('ws://127.0.0.1:9', recorder)  # discard port: nobody listens
        runner = asyncio.create_task(link.run())
        await recorder.wait(lambda r: link.counters['connect_failures'] >= 2)
        snapshot = link.snapshot()
        assert snapshot['state'] in ('connecting', 'waiting to reconnect')
        assert snapshot['disconnected_for_s'] > 0 and 'cannot connect' in snapshot['last_error']
        await link.close()
        await runner
    run(scenario())


def test_client_ping_measures_a_round_trip_and_receive_times_out():
    async def scenario():
        async with serving(SineBackend()) as server:
            async with MusicClient(server.url, token=TOKEN) as client:
                rtts = [await client.ping() for _ in range(3)]
                assert all(0.0 <= rtt < 5.0 for rtt in rtts)
                with pytest.raises(TimeoutError):
                    await client.receive(timeout=0.2)
    run(scenario())


def test_a_reply_to_hello_with_an_unhashable_type_is_a_malformed_frame():
    async def answer(websocket):
        await websocket.recv()
        await websocket.send('{"type": []}')
        await websocket.wait_closed()

    async def scenario():
        async with serve(answer, '127.0.0.1', 0) as server:
            port = server.sockets[0].getsockname()[1]
            with pytest.raises(protocol.MalformedFrame, match='bad reply to hello'):
                client = MusicClient(f'ws://127.0.0.1:{port}', token=TOKEN, open_timeout=5.0)
                await client.connect()
    run(scenario())


def test_a_refused_websocket_handshake_is_a_lost_connection_the_link_retries():
    """A proxy in front of the servers (Ray Serve's) answers plain HTTP errors while no
    replica can take the connection."""
    async def unavailable(reader, writer):
        await reader.readuntil(b'\r\n\r\n')
        writer.write(b'HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n')
        await writer.drain()
        writer.close()

    async def scenario():
        proxy = await asyncio.start_server(unavailable, '127.0.0.1', 0)
        url = f'ws://127.0.0.1:{proxy.sockets[0].getsockname()[1]}'
        async with proxy:
            with pytest.raises(ConnectionLost, match='503'):
                await MusicClient(url, token=TOKEN).connect()
            recorder = _Recorder()
            link = _link(url, recorder)
            runner = asyncio.create_task(link.run())
            await recorder.wait(lambda r: link.counters['connect_failures'] >= 2)
            assert not runner.done() and '503' in link.last_error
            await link.close()
            await runner
    run(scenario())


def test_link_drops_a_frozen_server_and_comes_back_when_it_thaws(spawn):
    """A server that stops answering without closing the connection (a hung GPU box, a
    network partition) is detected by lost pings, not only by TCP."""
    import os
    import signal

    from server_test_support import free_port, server_command, server_env, wait_for_health

    port = free_port()
    server = spawn(server_command(port, 'server_test_backends:SineBackend'),
                   name='server', env=server_env())
    wait_for_health(port, server)

    async def scenario():
        recorder = _Recorder()
        link = _link(f'ws://127.0.0.1:{port}', recorder)
        runner = asyncio.create_task(link.run())
        link.set_prompt(protocol.Prompt(prompt_id=1, text='one'))
        await recorder.wait(lambda r: len(r.frames) >= 3)
        os.killpg(server.proc.pid, signal.SIGSTOP)
        try:
            await recorder.wait(lambda r: link.state is not LinkState.CONNECTED, timeout=30)
        finally:
            os.killpg(server.proc.pid, signal.SIGCONT)
        assert link.counters['ping_timeouts'] >= 1
        assert 'stopped answering pings' in ' '.join(m for _, m in recorder.logs)
        count = len(recorder.frames)
        await recorder.wait(lambda r: len(r.frames) >= count + 3 and link.counters['connects'] >= 2,
                            timeout=30)
        keys = [(f.prompt_id, f.seq) for f in recorder.frames]
        assert keys == sorted(keys) and len(set(keys)) == len(keys)
        await link.close()
        await runner

    run(scenario())


def test_a_consumer_that_falls_behind_is_not_taken_for_a_dead_server():
    # Pongs used to queue behind unread audio: a consumer busy for a while stopped the reader,
    # its pings timed out and the link dropped a healthy server. Frames split small so that
    # a few seconds of audio are hundreds of frames.
    async def scenario():
        limit = protocol.AUDIO_HEADER_BYTES + 2 * 64
        async with serving(SineBackend(), max_frame_bytes=limit) as server:
            async with MusicClient(server.url, token=TOKEN, keepalive_interval_s=0.2,
                                   keepalive_timeout_s=5.0) as client:
                await client.send_prompt(protocol.Prompt(prompt_id=1, text='one'))
                await client.receive(timeout=10)
                await asyncio.sleep(2.5)  # the consumer is busy: nothing is taken
                assert client.queue_depth > 256
                assert await client.ping(timeout=2.0) >= 0.0
                assert client.latency > 0.0  # keepalive pongs were read meanwhile
                seqs = [(await client.receive(timeout=10)).seq for _ in range(300)]
                assert seqs == list(range(1, 301))
    run(scenario())


def test_snapshot_reads_the_client_once_while_the_loop_clears_it():
    # snapshot() runs on the ROS executor while the loop thread sets _client to None: a
    # check-then-use read the attribute twice and could find None the second time.
    class Flipping(ReconnectingLink):
        reads = 0

        @property
        def _client(self):
            Flipping.reads += 1
            return None if Flipping.reads % 2 == 0 else MusicClient('ws://127.0.0.1:9')

        @_client.setter
        def _client(self, value):
            pass

    async def scenario():
        link = Flipping('ws://127.0.0.1:9', TOKEN, lambda frame: None)
        assert link.snapshot()['queue_depth'] == 0
    run(scenario())


def test_while_a_prompt_is_current_the_link_retries_at_least_every_second():
    # A 6 s outage cost 13.4 s of silence: the exponential backoff had grown meanwhile.
    async def scenario():
        link = ReconnectingLink('ws://127.0.0.1:9', TOKEN, lambda frame: None,
                                reconnect_min_s=0.5, reconnect_max_s=30.0, rng=random.Random(0))
        idle = [link.next_retry_delay() for _ in range(8)]
        assert max(idle) > PLAYING_RECONNECT_MAX_S  # nothing playing: back off further
        link.set_prompt(protocol.Prompt(prompt_id=1, text='one'))
        playing = [link.next_retry_delay() for _ in range(8)]
        assert max(playing) <= PLAYING_RECONNECT_MAX_S
    run(scenario())
