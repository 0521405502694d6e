"""The music server in-process, on loopback, with real websockets clients: authentication,
ordered continuous streams, gap-free prompt switches, every error answered with its code while
other sessions go on, vanishing clients, session limits, flow control, health and shutdown."""

import asyncio
import json
import time

import numpy as np
import pytest
from websockets.asyncio.client import connect

from server_test_backends import SAMPLE_RATE, SineBackend
from server_test_support import (TOKEN, Received, closed, collect, frames_of, http_get, joined,
                                 message_of, run, serving, sine)
from muse_protocol import protocol
from muse_protocol.client import ConnectionLost, MusicClient, ServerError
from muse_protocol.protocol import ErrorCode

S16_STEP = 1.0 / 32767


def _prompt(prompt_id, **fields):
    return protocol.Prompt(prompt_id=prompt_id, text=f'prompt {prompt_id}', **fields)


def _assert_continuous_sine(frames, prompt_id, start=0, atol=1.5 * S16_STEP):
    audio = joined(frames)
    np.testing.assert_allclose(audio, sine(prompt_id, start, len(audio)), atol=atol)


async def _raw_hello(url, hello):
    """A bare websockets client: send ``hello`` (any frame), return (reply, close code)."""
    async with connect(url) as ws:
        await ws.send(hello)
        reply = await asyncio.wait_for(ws.recv(), 10)
        await asyncio.wait_for(ws.wait_closed(), 10)
        return protocol.decode_control(reply, protocol.SERVER_MESSAGES), ws.close_code


# ---------------------------------------------------------------- authentication, handshake


def test_good_token_is_welcomed_and_bad_or_missing_tokens_are_refused():
    async def scenario():
        backend = SineBackend()
        async with serving(backend) as server:
            async with MusicClient(server.url, token=TOKEN, client_name='t') as client:
                welcome = client.welcome
                assert (welcome.protocol, welcome.backend, welcome.sample_rate,
                        welcome.channels, welcome.encoding) == (1, 'sine', SAMPLE_RATE, 1,
                                                                'pcm_s16le')
                assert welcome.session_id in server.sessions
                assert await client.ping() >= 0.0
            for token in ('wrong', '', TOKEN + 'x'):
                with pytest.raises(ServerError) as refused:
                    await MusicClient(server.url, token=token).connect()
                assert refused.value.code == ErrorCode.UNAUTHORIZED and refused.value.fatal
            error, close_code = await _raw_hello(
                server.url, protocol.Hello(protocol=1, token='nope').to_json())
            assert error.code == ErrorCode.UNAUTHORIZED and close_code == ErrorCode.UNAUTHORIZED
    run(scenario())


def test_without_a_configured_token_any_client_is_accepted():
    async def scenario():
        async with serving(SineBackend(), token=None) as server:
            async with MusicClient(server.url, token='anything') as client:
                assert client.welcome.session_id
            assert server.health()['auth'] is False
    run(scenario())


@pytest.mark.parametrize('first_frame, code', [
    (json.dumps({'type': 'hello', 'protocol': 2, 'token': TOKEN}), ErrorCode.UNSUPPORTED_VERSION),
    (json.dumps({'type': 'hello', 'protocol': 1, 'token': TOKEN, 'encoding': 'mp3'}),
     ErrorCode.UNSUPPORTED_ENCODING),
    (json.dumps({'type': 'prompt', 'prompt_id': 1, 'text': 'a'}), ErrorCode.HELLO_REQUIRED),
    (json.dumps({'type': []}), ErrorCode.HELLO_REQUIRED),
    (b'\x00binary hello', ErrorCode.HELLO_REQUIRED),
    ('{not json', ErrorCode.MALFORMED),
    (json.dumps({'type': 'hello'}), ErrorCode.INVALID_FIELD),
])
def test_a_bad_first_frame_is_answered_with_its_code_and_closes_only_that_connection(first_frame,
                                                                                     code):
    async def scenario():
        async with serving(SineBackend()) as server:
            error, close_code = await _raw_hello(server.url, first_frame)
            assert (error.code, error.fatal, close_code) == (code, True, code)
            async with MusicClient(server.url, token=TOKEN) as client:  # the server goes on
                await client.send_prompt(_prompt(1))
                await collect(client, Received(), frames_of(1, 2))
    run(scenario())


def test_a_silent_connection_is_closed_after_the_hello_timeout():
    async def scenario():
        async with serving(SineBackend(), hello_timeout_s=0.3) as server:
            async with connect(server.url) as ws:
                error = protocol.decode_control(await asyncio.wait_for(ws.recv(), 10),
                                                protocol.SERVER_MESSAGES)
                await asyncio.wait_for(ws.wait_closed(), 10)
            assert error.code == ErrorCode.HELLO_TIMEOUT and ws.close_code == ErrorCode.HELLO_TIMEOUT
    run(scenario())


# ---------------------------------------------------------------- streaming


@pytest.mark.parametrize('encoding, atol', [(protocol.Encoding.PCM_S16LE, 1.5 * S16_STEP),
                                            (protocol.Encoding.PCM_F32LE, 1e-6)])
def test_fragments_arrive_in_order_and_continue_the_music(encoding, atol):
    async def scenario():
        async with serving(SineBackend()) as server:
            async with MusicClient(server.url, token=TOKEN, encoding=encoding) as client:
                assert client.welcome.encoding == encoding.wire_name
                await client.send_prompt(_prompt(1, stamp=12.5))
                received = await collect(client, Received(), frames_of(1, 10))
        frames = received.of_prompt(1)
        assert [f.seq for f in frames] == list(range(len(frames)))
        assert [f.is_first for f in frames] == [True] + [False] * (len(frames) - 1)
        assert not any(f.is_last for f in frames)
        assert all(f.encoding is encoding and f.sample_rate == SAMPLE_RATE for f in frames)
        assert all(0 < f.generation_started_ns <= f.generation_finished_ns for f in frames)
        _assert_continuous_sine(frames, 1, atol=atol)
    run(scenario())


def test_first_seq_resumes_the_numbering():
    async def scenario():
        async with serving(SineBackend()) as server:
            async with MusicClient(server.url, token=TOKEN) as client:
                await client.send_prompt(_prompt(3, first_seq=42))
                received = await collect(client, Received(), frames_of(3, 3))
        assert [(f.seq, f.is_first) for f in received.of_prompt(3)][:3] == [
            (42, True), (43, False), (44, False)]
    run(scenario())


def test_fragments_larger_than_max_frame_bytes_are_split_in_order():
    async def scenario():
        limit = protocol.AUDIO_HEADER_BYTES + 2 * 700  # 700 s16 samples; fragments are 2000
        async with serving(SineBackend(), max_frame_bytes=limit) as server:
            async with MusicClient(server.url, token=TOKEN) as client:
                assert client.welcome.max_frame_bytes == limit
                await client.send_prompt(_prompt(2))
                received = await collect(client, Received(), frames_of(2, 9))
        frames = received.of_prompt(2)
        assert [f.n_samples for f in frames[:3]] == [700, 700, 600]
        assert [f.seq for f in frames] == list(range(len(frames)))
        assert sum(f.is_first for f in frames) == 1 and frames[0].is_first
        _assert_continuous_sine(frames, 2)
    run(scenario())


def test_prompt_switch_has_no_gap_and_grows_out_of_the_sent_audio():
    async def scenario():
        # prompt 2 takes longer to open than the 2 s the listener has buffered: the old music
        # must keep flowing meanwhile
        backend = SineBackend(fragment_s=0.5, slow_prompts={2}, open_delay_s=2.5)
        async with serving(backend, fragment_s=0.5, max_ahead_s=2.0, context_s=0.6) as server:
            async with MusicClient(server.url, token=TOKEN) as client:
                received = Received()
                await client.send_prompt(_prompt(1))
                await collect(client, received, frames_of(1, 8))
                switch_sent = time.monotonic()
                await client.send_prompt(_prompt(2))
                await collect(client, received, frames_of(2, 6))
        frames = [f for _, f in received.frames]
        keys = [f.order_key for f in frames]
        assert keys == sorted(keys) and len(set(keys)) == len(keys)
        old, new = received.of_prompt(1), received.of_prompt(2)
        # the old stream went on while the new one was prepared ...
        assert any(t > switch_sent + 1.5 for t, f in received.frames if f.prompt_id == 1)
        # ... then ended on a LAST fragment immediately followed by the new FIRST
        boundary = len(old)
        assert frames[boundary - 1].is_last and frames[boundary].is_first
        assert frames[boundary].order_key == (2, 0)
        assert sum(f.is_last for f in frames) == 1
        assert [f.is_first for f in new] == [True] + [False] * (len(new) - 1)
        _assert_continuous_sine(old, 1)
        _assert_continuous_sine(new, 2)
        # a listener playing from the first arrival never runs dry (no silence at the switch)
        start, played = received.frames[0][0], 0.0
        for arrival, frame in received.frames:
            assert arrival <= start + played + 0.1, (
                f'fragment {frame.order_key} arrived {arrival - start - played:.3f} s after '
                'the listener ran out of audio')
            played += frame.duration_s
        # the new stream was opened with the tail of what had been sent
        context = backend.opened[1][1]
        assert backend.opened[1][0].prompt_id == 2 and context is not None
        assert len(context) == int(0.6 * SAMPLE_RATE)
        sent = joined(old)
        ends = np.cumsum([f.n_samples for f in old])
        assert any(np.allclose(context[:, 0], sent[end - len(context):end], atol=S16_STEP)
                   for end in ends if end >= len(context))
    run(scenario())


def test_a_backend_that_retargets_continues_its_stream_flagged_continues():
    """A prompt change the backend can steer its running stream to opens no new stream: the
    old prompt's held fragment goes out LAST, and the same stream's next fragment carries the
    new prompt_id flagged CONTINUES (not FIRST), sample-continuous with it."""
    async def scenario():
        backend = SineBackend(fragment_s=0.25, retargets=True)
        async with serving(backend, retarget=True) as server:
            async with MusicClient(server.url, token=TOKEN) as client:
                received = Received()
                await client.send_prompt(_prompt(1))
                await collect(client, received, frames_of(1, 6))
                await client.send_prompt(_prompt(2))
                await collect(client, received, frames_of(2, 4))
            latencies = list(server.stats['switch_latency_s'])   # prompt -> its first frame
        frames = [f for _, f in received.frames]
        old, new = received.of_prompt(1), received.of_prompt(2)
        assert len(backend.opened) == 1                       # no second stream
        boundary = len(old)
        assert frames[boundary - 1].is_last and frames[boundary].order_key == (2, 0)
        assert new[0].continues and not new[0].is_first
        assert not any(f.continues for f in old + new[1:])
        assert sum(f.is_first for f in frames) == 1 and sum(f.is_last for f in frames) == 1
        _assert_continuous_sine(old, 1)
        _assert_continuous_sine(new, 2, start=sum(f.n_samples for f in old))
        assert len(latencies) == 2   # the first prompt's start, then the retarget
    run(scenario())


@pytest.mark.parametrize('replace, retarget', [(True, False), (False, True), (False, False)])
def test_a_forking_backend_replaces_audio_sent_ahead_for_clients_that_splice_it(replace,
                                                                                retarget):
    """By default, with a client that said hello with ``replace: true``, the server forks the
    stream just ahead of the listener: the new prompt's first frame is CONTINUES|REPLACES, its
    ``replaces`` counts back from the old prompt's end to the fork point, and its audio is the
    stream re-rendered from there (the sine stays on the old timeline). An old client gets
    the plain continuation after the audio sent with --retarget, else a new stream."""
    async def scenario():
        backend = SineBackend(fragment_s=0.25, retargets='fork')
        async with serving(backend, retarget=retarget) as server:
            async with MusicClient(server.url, token=TOKEN, replace=replace) as client:
                received = Received()
                await client.send_prompt(_prompt(1))
                await collect(client, received, frames_of(1, 8))
                await client.send_prompt(_prompt(2))
                await collect(client, received, frames_of(2, 4))
        old, new = received.of_prompt(1), received.of_prompt(2)
        sent = sum(f.n_samples for f in old)
        assert backend.forks == [] or replace
        if not (replace or retarget):
            assert len(backend.opened) == 2 and new[0].is_first and not new[0].continues
            return
        assert len(backend.opened) == 1 and old[-1].is_last
        assert new[0].continues and not new[0].is_first
        if not replace:
            assert backend.forks == [] and not new[0].replacing and new[0].replaces == 0
            _assert_continuous_sine(new, 2, start=sent)
            return
        assert backend.forks == [sent - new[0].replaces]
        assert new[0].replacing and 0 < new[0].replaces <= sent
        assert not any(f.replacing for f in old + new[1:])
        _assert_continuous_sine(old, 1)
        _assert_continuous_sine(new, 2, start=sent - new[0].replaces)
    run(scenario())


def test_without_retarget_a_backend_that_could_steer_still_gets_a_new_stream():
    """Retargeting is opt-in (ServerConfig.retarget / --retarget): by default a prompt change
    opens a new stream the player crossfades in at once, whatever the backend could do."""
    async def scenario():
        backend = SineBackend(fragment_s=0.25, retargets=True)
        async with serving(backend) as server:
            async with MusicClient(server.url, token=TOKEN) as client:
                received = Received()
                await client.send_prompt(_prompt(1))
                await collect(client, received, frames_of(1, 4))
                await client.send_prompt(_prompt(2))
                await collect(client, received, frames_of(2, 2))
        new = received.of_prompt(2)
        assert len(backend.opened) == 2 and new[0].is_first and not new[0].continues
    run(scenario())


def test_a_newer_prompt_supersedes_one_still_being_prepared():
    async def scenario():
        backend = SineBackend(slow_prompts={2}, open_delay_s=0.5)
        async with serving(backend) as server:
            async with MusicClient(server.url, token=TOKEN) as client:
                received = Received()
                await client.send_prompt(_prompt(1))
                await collect(client, received, frames_of(1, 2))
                await client.send_prompt(_prompt(2))
                await asyncio.sleep(0.1)
                await client.send_prompt(_prompt(3))
                await collect(client, received, frames_of(3, 3))
        keys = received.keys
        assert keys == sorted(keys)
        assert received.of_prompt(2) == []
        assert received.of_prompt(1)[-1].is_last and received.of_prompt(3)[0].is_first
        assert not received.of_type(protocol.Error)
    run(scenario())


def test_a_stale_prompt_is_refused_and_the_music_goes_on():
    async def scenario():
        async with serving(SineBackend()) as server:
            async with MusicClient(server.url, token=TOKEN) as client:
                received = Received()
                await client.send_prompt(_prompt(5))
                await collect(client, received, frames_of(5, 2))
                for stale in (5, 4):
                    await client.send_prompt(_prompt(stale))
                await collect(client, received, lambda r: len(r.of_type(protocol.Error)) >= 2)
                count = len(received.of_prompt(5))
                await collect(client, received, frames_of(5, count + 2))
        errors = received.of_type(protocol.Error)
        assert [(e.code, e.prompt_id, e.fatal) for e in errors] == [
            (ErrorCode.STALE_PROMPT, 5, False), (ErrorCode.STALE_PROMPT, 4, False)]
        assert {f.prompt_id for _, f in received.frames} == {5}
    run(scenario())


def test_stop_ends_the_stream_until_the_next_prompt():
    async def scenario():
        async with serving(SineBackend()) as server:
            async with MusicClient(server.url, token=TOKEN) as client:
                received = Received()
                await client.send_prompt(_prompt(1))
                await collect(client, received, frames_of(1, 3))
                await client.stop()
                await collect(client, received, message_of(protocol.Stopped))
                stopped = received.of_type(protocol.Stopped)[0]
                frames_at_stop = len(received.frames)
                await client.send_prompt(_prompt(2))
                await collect(client, received, frames_of(2, 1))
        last = received.frames[frames_at_stop - 1][1]
        assert (stopped.prompt_id, stopped.last_seq) == last.order_key
        assert received.frames[frames_at_stop][1].order_key == (2, 0)
    run(scenario())


def test_pacing_keeps_the_server_at_most_max_ahead_of_real_time():
    async def scenario():
        async with serving(SineBackend(fragment_s=0.25), max_ahead_s=1.0) as server:
            async with MusicClient(server.url, token=TOKEN) as client:
                asked = time.monotonic()
                await client.send_prompt(_prompt(1))
                return asked, await collect(client, Received(), frames_of(1, 14))

    asked, received = run(scenario())
    total = 0.0
    for arrival, frame in received.frames:
        total += frame.duration_s
        # Nothing can be sent before it was asked for, nor received before it was sent, so
        # however late this client reads, what it has is bounded by max_ahead + elapsed time.
        assert total <= 1.0 + (arrival - asked) + 0.05, (frame.order_key, total, arrival - asked)
    assert total == 14 * 0.25  # so, by the last frame: 3.5 s of audio took >= 2.45 s


def test_a_client_that_stops_reading_is_not_buffered_without_bound():
    async def scenario():
        # no pacing to speak of: only back-pressure can stop this server
        backend = SineBackend(fragment_s=1.0)
        async with serving(backend, max_ahead_s=10_000.0, fragment_s=1.0) as server:
            async with connect(server.url, max_queue=4) as ws:
                await ws.send(protocol.Hello(protocol=1, token=TOKEN).to_json())
                await ws.recv()
                await ws.send(_prompt(1).to_json())
                counts = []
                for _ in range(6):
                    await asyncio.sleep(0.5)
                    counts.append(server.stats['fragments'])
            # the session ended with the connection; the server is idle and healthy
            assert server.health()['status'] == 'ok'
        assert counts[-1] == counts[-3], f'the server kept sending: {counts}'
        assert counts[-1] < 2000, f'{counts[-1]} fragments of 16 kB buffered for a stalled client'
    run(scenario())


# ---------------------------------------------------------------- errors and robustness


BAD_FRAMES = [
    ('{"type": "prompt", "prompt_id": ', ErrorCode.MALFORMED),
    ('["a list"]', ErrorCode.MALFORMED),
    (json.dumps({'type': 'dance'}), ErrorCode.UNKNOWN_TYPE),
    (json.dumps({'type': []}), ErrorCode.UNKNOWN_TYPE),
    (json.dumps({'type': 'hello', 'protocol': 1, 'token': TOKEN}), ErrorCode.UNKNOWN_TYPE),
    (json.dumps({'type': 'prompt', 'text': 'no id'}), ErrorCode.INVALID_FIELD),
    (json.dumps({'type': 'prompt', 'prompt_id': 9, 'text': 'x', 'energy': 7}),
     ErrorCode.INVALID_FIELD),
    (json.dumps({'type': 'ping', 'id': 1}), ErrorCode.UNKNOWN_TYPE),  # WebSocket pings instead
    (json.dumps({'type': 'prompt', 'prompt_id': 9, 'text': 'x' * 40_000}),
     ErrorCode.FRAME_TOO_LARGE),
    (b'\x01\x02binary from a client', ErrorCode.UNEXPECTED_BINARY),
]


def test_every_bad_frame_is_answered_with_its_code_and_nothing_else_stops():
    async def scenario():
        async with serving(SineBackend()) as server:
            async with MusicClient(server.url, token=TOKEN, client_name='listener') as listener, \
                    MusicClient(server.url, token=TOKEN, client_name='vandal') as vandal:
                heard = Received()
                await listener.send_prompt(_prompt(1))
                await collect(listener, heard, frames_of(1, 2))
                answers = Received()
                await vandal.send_prompt(_prompt(1))
                for index, (frame, code) in enumerate(BAD_FRAMES):
                    await vandal.send_raw(frame)
                    await collect(vandal, answers,
                                  lambda r, n=index + 1: len(r.of_type(protocol.Error)) >= n)
                    error = answers.of_type(protocol.Error)[-1]
                    assert (error.code, error.fatal) == (code, False), (frame[:40], error)
                # both sessions are still alive and streaming
                assert await vandal.ping() >= 0.0
                count = len(heard.of_prompt(1))
                await collect(listener, heard, frames_of(1, count + 3))
                count = len(answers.of_prompt(1))
                await collect(vandal, answers, frames_of(1, count + 2))
                assert heard.keys == sorted(heard.keys)
                assert answers.keys == sorted(answers.keys)
            assert server.health()['errors'] >= len(BAD_FRAMES)
    run(scenario())


def test_a_frame_beyond_the_websocket_limit_closes_only_that_connection():
    async def scenario():
        async with serving(SineBackend()) as server:
            async with MusicClient(server.url, token=TOKEN) as listener, \
                    MusicClient(server.url, token=TOKEN) as vandal:
                heard = Received()
                await listener.send_prompt(_prompt(1))
                await collect(listener, heard, frames_of(1, 2))
                await vandal.send_raw('x' * 200_000)
                lost = await closed(vandal)
                assert lost.code == 1009  # message too big
                count = len(heard.of_prompt(1))
                await collect(listener, heard, frames_of(1, count + 3))
    run(scenario())


def test_a_client_vanishing_mid_stream_frees_its_session_and_streams():
    async def scenario():
        backend = SineBackend()
        async with serving(backend) as server:
            client = MusicClient(server.url, token=TOKEN)
            await client.connect()
            await client.send_prompt(_prompt(1))
            await collect(client, Received(), frames_of(1, 3))
            client._ws.transport.abort()  # no close frame, like a crashed bridge
            for _ in range(200):
                if not server.sessions:
                    break
                await asyncio.sleep(0.05)
            assert not server.sessions
            for _ in range(100):
                if backend.closed_streams == len(backend.opened):
                    break
                await asyncio.sleep(0.05)
            assert backend.closed_streams == len(backend.opened) == 1
            async with MusicClient(server.url, token=TOKEN) as again:
                await again.send_prompt(_prompt(1))
                await collect(again, Received(), frames_of(1, 2))
    run(scenario())


def test_sessions_are_bounded_and_a_freed_slot_is_reusable():
    async def scenario():
        async with serving(SineBackend(), max_sessions=2) as server:
            first = MusicClient(server.url, token=TOKEN)
            second = MusicClient(server.url, token=TOKEN)
            await first.connect()
            await second.connect()
            with pytest.raises(ServerError) as busy:
                await MusicClient(server.url, token=TOKEN).connect()
            assert busy.value.code == ErrorCode.SERVER_BUSY and busy.value.fatal
            assert server.health()['rejected_busy'] == 1
            await first.close()
            for _ in range(100):
                if len(server.sessions) == 1:
                    break
                await asyncio.sleep(0.05)
            async with MusicClient(server.url, token=TOKEN) as third:
                await third.send_prompt(_prompt(1))
                await collect(third, Received(), frames_of(1, 1))
            await second.close()
    run(scenario())


def test_a_backend_failure_restarts_the_stream_marked_first_with_seq_continuing():
    async def scenario():
        backend = SineBackend(fail_prompt_after={1: 4})
        async with serving(backend) as server:
            async with MusicClient(server.url, token=TOKEN) as client:
                await client.send_prompt(_prompt(1))
                received = await collect(client, Received(), frames_of(1, 8))
        frames = received.of_prompt(1)
        assert [f.seq for f in frames] == list(range(len(frames)))
        assert [f.seq for f in frames if f.is_first] == [0, 4]
        assert len(backend.opened) == 2 and backend.opened[1][1] is not None  # with context
        _assert_continuous_sine(frames[:4], 1)
        _assert_continuous_sine(frames[4:], 1)  # the restarted sine starts over
        assert not received.of_type(protocol.Error)
    run(scenario())


def test_a_prompt_the_backend_cannot_start_is_reported_and_the_old_music_goes_on():
    async def scenario():
        backend = SineBackend(fail_open_prompts={2})
        async with serving(backend) as server:
            async with MusicClient(server.url, token=TOKEN) as client:
                received = Received()
                await client.send_prompt(_prompt(1))
                await collect(client, received, frames_of(1, 3))
                await client.send_prompt(_prompt(2))
                await collect(client, received, message_of(protocol.Error))
                count = len(received.of_prompt(1))
                await collect(client, received, frames_of(1, count + 3))
        error = received.of_type(protocol.Error)[0]
        assert (error.code, error.prompt_id, error.fatal) == (ErrorCode.BACKEND_ERROR, 2, False)
        frames = received.of_prompt(1)
        assert not any(f.is_last for f in frames)
        assert [f.seq for f in frames] == list(range(len(frames)))
        _assert_continuous_sine(frames, 1)
    run(scenario())


# ---------------------------------------------------------------- health and shutdown


def test_health_route_reports_json():
    async def scenario():
        async with serving(SineBackend(), max_sessions=3) as server:
            async with MusicClient(server.url, token=TOKEN) as client:
                await client.send_prompt(_prompt(1))
                await collect(client, Received(), frames_of(1, 2))
                status, headers, body = await asyncio.to_thread(
                    http_get, f'http://127.0.0.1:{server.port}/healthz')
        assert status == 200 and headers['Content-Type'] == 'application/json'
        health = json.loads(body)
        assert health['status'] == 'ok' and health['protocol'] == 1
        assert (health['backend'], health['sample_rate'], health['channels']) == ('sine', 8000, 1)
        assert (health['sessions'], health['max_sessions'], health['auth']) == (1, 3, True)
        assert health['fragments'] >= 2 and health['prompts'] == 1
        assert health['prompt_to_first_fragment_ms_p50'] >= 0
    run(scenario())


def test_shutdown_tells_sessions_refuses_prompts_then_closes_with_going_away():
    async def scenario():
        backend = SineBackend()
        server_cm = serving(backend, shutdown_grace_s=1.5)
        server = await server_cm.__aenter__()
        listener = MusicClient(server.url, token=TOKEN)
        await listener.connect()
        received = Received()
        await listener.send_prompt(_prompt(1))
        await collect(listener, received, frames_of(1, 2))
        stopping = asyncio.create_task(server.shutdown('test'))
        await collect(listener, received, message_of(protocol.Shutdown))
        assert server.stopping
        status, _, body = await asyncio.to_thread(
            http_get, f'http://127.0.0.1:{server.port}/healthz')
        assert status == 503 and json.loads(body)['status'] == 'stopping'
        with pytest.raises(ServerError) as refused:
            await MusicClient(server.url, token=TOKEN).connect()
        assert refused.value.code == ErrorCode.SHUTTING_DOWN
        await listener.send_prompt(_prompt(2))
        await collect(listener, received, message_of(protocol.Error))
        error = received.of_type(protocol.Error)[0]
        assert (error.code, error.prompt_id) == (ErrorCode.SHUTTING_DOWN, 2)
        lost = await closed(listener)
        assert lost.code == 1001
        await stopping
        await server_cm.__aexit__(None, None, None)
        assert received.of_prompt(2) == []
        assert backend.closed_streams == len(backend.opened)
        with pytest.raises(OSError):
            await MusicClient(server.url, token=TOKEN, open_timeout=2).connect()
    run(scenario())


def test_server_config_rejects_bad_values_by_name():
    from muse_server.server import ServerConfig
    with pytest.raises(ValueError, match='max_ahead_s'):
        ServerConfig(fragment_s=1.0, max_ahead_s=0.5)
    with pytest.raises(ValueError, match='max_sessions'):
        ServerConfig(max_sessions=0)
    with pytest.raises(ValueError, match='max_frame_bytes'):
        ServerConfig(max_frame_bytes=10)


def test_receive_after_close_keeps_raising_connection_lost():
    async def scenario():
        async with serving(SineBackend()) as server:
            client = MusicClient(server.url, token=TOKEN)
            await client.connect()
            await client.close()
            for _ in range(2):
                with pytest.raises(ConnectionLost):
                    await client.receive(timeout=5)
    run(scenario())


def test_a_backend_producing_invalid_audio_is_cut_off_with_backend_error():
    async def scenario():
        backend = SineBackend(nan_prompts={2})
        async with serving(backend) as server:
            async with MusicClient(server.url, token=TOKEN) as client:
                received = Received()
                await client.send_prompt(_prompt(2))
                await collect(client, received, message_of(protocol.Error))
                error = received.of_type(protocol.Error)[0]
                assert (error.code, error.prompt_id, error.fatal) == (
                    ErrorCode.BACKEND_ERROR, 2, False)
                assert received.frames == []  # nothing of the NaN audio went out
                assert backend.closed_streams == len(backend.opened) == 1  # not retried
                await client.send_prompt(_prompt(3))  # the session still serves
                await collect(client, received, frames_of(3, 2))
    run(scenario())


def test_a_bug_in_one_session_ends_it_with_internal_error_and_spares_the_others(monkeypatch):
    from muse_server import session as server_session

    async def scenario():
        async with serving(SineBackend()) as server:
            async with MusicClient(server.url, token=TOKEN) as healthy, \
                    MusicClient(server.url, token=TOKEN) as doomed:
                heard = Received()
                await healthy.send_prompt(_prompt(1))
                await collect(healthy, heard, frames_of(1, 2))
                original = server_session.Session._on_prompt

                async def broken(self, prompt):
                    if self.id == doomed.welcome.session_id:
                        raise RuntimeError('injected bug')
                    return await original(self, prompt)

                monkeypatch.setattr(server_session.Session, '_on_prompt', broken)
                await doomed.send_prompt(_prompt(1))
                answers = await collect(doomed, Received(), message_of(protocol.Error))
                error = answers.messages[-1][1]
                assert (error.code, error.fatal) == (ErrorCode.INTERNAL_ERROR, True)
                assert (await closed(doomed)).code == ErrorCode.INTERNAL_ERROR
                count = len(heard.of_prompt(1))
                await collect(healthy, heard, frames_of(1, count + 3))
                assert await healthy.ping() >= 0
    run(scenario())


def test_browser_origins_are_refused_unless_allowed():
    from websockets.exceptions import InvalidStatus

    async def scenario():
        async with serving(SineBackend(), allow_origins=('https://ok.example',)) as server:
            async with connect(server.url, origin='https://ok.example') as ws:
                await ws.send(protocol.Hello(protocol=1, token=TOKEN).to_json())
                welcome = protocol.decode_control(await ws.recv(), protocol.SERVER_MESSAGES)
                assert isinstance(welcome, protocol.Welcome)
            with pytest.raises(InvalidStatus) as refused:
                await connect(server.url, origin='https://evil.example')
            assert refused.value.response.status_code == 403
            async with MusicClient(server.url, token=TOKEN):  # no Origin: the bridge's case
                pass
    run(scenario())
