"""The local music server the runner and the launch file start: reachable with the session's
token (which may begin with '-', as secrets.token_urlsafe tokens sometimes do), and never
without it. The token travels in the environment, so `ps` does not show it."""

import asyncio

import pytest
from muse_bringup import graph
from muse_bringup.runner import ManagedProcess, wait_for_health
from muse_bringup.session import SERVER_EXECUTABLE, SessionPaths
from muse_protocol.client import MusicClient, ServerError


def test_local_server_accepts_the_session_token_only(tmp_path):
    options = graph.GraphOptions(subject='unused', session=SessionPaths(tmp_path),
                                 token='-starts-with-a-dash')
    port = graph.free_port()
    args, env, url = graph.local_server(options, port)
    assert options.token not in ' '.join(args)
    server = ManagedProcess('music_server', [graph.executable(*SERVER_EXECUTABLE), *args],
                            tmp_path / 'server.log', colour='', quiet=True, env=env)
    try:
        health = wait_for_health(f'http://127.0.0.1:{port}/healthz', 60.0, server)
        assert health['auth'] is True and health['backend'] == 'synth'

        async def hello(token):
            async with MusicClient(url, token=token) as client:
                return await client.connect()

        assert asyncio.run(hello(options.token)).sample_rate == 32000
        with pytest.raises(ServerError):
            asyncio.run(hello('wrong-token'))
    finally:
        assert server.stop() == 0, server.log_path.read_text()
