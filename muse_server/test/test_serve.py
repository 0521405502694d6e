"""The music server on Ray Serve: a local Ray instance (2 CPUs, no GPU, no dashboard) started
once for this module, two replicas of the synth backend behind Serve's proxy on a free
loopback port. Sessions stream through the proxy with the plain server's ordering, spread
over the replicas, survive a killed replica by reconnecting to the other one, and are refused
SERVER_BUSY when every replica is full.

Ray and Serve take 10-60 s to start on a busy 2-core machine; the tests after that take
seconds each (timings in the README's "Serving many listeners").
"""

import asyncio
import contextlib
import json
import os
import time

import pytest
import ray
from ray import serve

from server_test_support import TOKEN, Received, collect, frames_of, free_port, http_get, run
from muse_protocol import protocol
from muse_protocol.client import MusicClient, ServerError
from muse_protocol.link import ReconnectingLink
from muse_protocol.protocol import ErrorCode
from muse_server import serve_app

CAPACITY = 2
REPLICAS = 2


@pytest.fixture(scope='module')
def proxy_url():
    """ws:// URL of Serve's proxy in front of two synth replicas (token required)."""
    started = time.monotonic()
    port = free_port()
    # the replicas read the token from their environment, which local workers inherit
    os.environ['MUSE_SERVER_TOKEN'] = TOKEN
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    try:
        serve.start(http_options={'host': '127.0.0.1', 'port': port})
        app = serve_app.make_app(
            {'backend': 'synth', 'capacity': CAPACITY, 'fragment_s': 0.25, 'max_ahead_s': 1.0,
             'hello_timeout_s': 3.0, 'shutdown_grace_s': 0.2, 'backend_options': {'seed': 7}},
            # no CPU reserved: a replacement replica starts even while the others run
            {'num_replicas': REPLICAS, 'ray_actor_options': {'num_cpus': 0}})
        serve.run(app, name=serve_app.APP_NAME, route_prefix='/')
        print(f'\nRay + Serve + {REPLICAS} replicas up in {time.monotonic() - started:.1f} s')
        yield f'ws://127.0.0.1:{port}'
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()
        os.environ.pop('MUSE_SERVER_TOKEN', None)


@pytest.fixture
def url(proxy_url, wait_until):
    """The proxy, once all replicas run (a test before may have killed one: Serve's controller
    may still count a dead replica as running, so the live actors are checked too)."""
    wait_until(lambda: serve_app.running_replicas() == REPLICAS
               and len(serve_app.live_replicas()) == REPLICAS, 120, f'{REPLICAS} live replicas')
    return proxy_url


def _replica(welcome: protocol.Welcome) -> str:
    return welcome.server.partition('@')[2]


def _prompt(prompt_id):
    return protocol.Prompt(prompt_id=prompt_id, text=f'prompt {prompt_id}', style='ambient',
                           energy=0.4, target_bpm=90.0)


def _assert_ordered_and_contiguous(frames):
    """(prompt_id, seq) strictly increasing, each prompt numbered 0, 1, 2, ... and FIRST on
    its first frame only (as against a plain server)."""
    keys = [(f.prompt_id, f.seq) for f in frames]
    assert keys == sorted(set(keys))
    for prompt_id in {f.prompt_id for f in frames}:
        mine = [f for f in frames if f.prompt_id == prompt_id]
        assert [f.seq for f in mine] == list(range(len(mine)))
        assert [bool(f.flags & protocol.Flags.FIRST) for f in mine] == [True] + [False] * (
            len(mine) - 1)


async def _open_until(url, count, max_refusals=20):
    """Open ``count`` sessions, retrying SERVER_BUSY refusals as the bridge would."""
    clients, refusals = [], 0
    while len(clients) < count:
        client = MusicClient(url, token=TOKEN)
        try:
            await client.connect()
        except ServerError as exc:
            assert exc.code == ErrorCode.SERVER_BUSY, exc
            refusals += 1
            assert refusals <= max_refusals, f'{refusals} refusals with {len(clients)} open'
            await asyncio.sleep(0.05)
            continue
        clients.append(client)
    return clients, refusals


# ---------------------------------------------------------------- the tests


@pytest.mark.slow  # the module's Ray instance starts with the first of these
def test_a_session_streams_through_the_proxy_in_order_with_gap_free_switches(url):
    async def scenario():
        async with MusicClient(url, token=TOKEN, client_name='serve-test') as client:
            assert client.welcome.backend == 'synth'
            assert _replica(client.welcome).startswith('SERVE_REPLICA::muse#MusicReplica#')
            assert await client.ping() >= 0.0
            received = Received()
            await client.send_prompt(_prompt(1))
            await collect(client, received, frames_of(1, 6))
            await client.send_prompt(_prompt(2))
            await collect(client, received, frames_of(2, 4))
        frames = [f for _, f in received.frames]
        _assert_ordered_and_contiguous(frames)
        # the switch: prompt 1's last frame goes out marked LAST right before prompt 2's first
        switch = next(i for i, f in enumerate(frames) if f.prompt_id == 2)
        assert frames[switch - 1].prompt_id == 1 and frames[switch - 1].flags & protocol.Flags.LAST
        assert all(len(f.samples()) > 0 for f in frames)

        with pytest.raises(ServerError) as refused:
            await MusicClient(url, token='wrong').connect()
        assert refused.value.code == ErrorCode.UNAUTHORIZED and refused.value.fatal

    run(scenario())
    status, _, body = http_get(url.replace('ws://', 'http://') + '/healthz')
    health = json.loads(body)
    assert status == 200 and health['status'] == 'ok' and health['backend'] == 'synth'
    assert health['max_sessions'] == CAPACITY and health['replica'].startswith('SERVE_REPLICA::')


@pytest.mark.slow
def test_sessions_spread_over_the_replicas(url):
    async def scenario():
        clients, refusals = await _open_until(url, REPLICAS * CAPACITY)
        try:
            replicas = [_replica(c.welcome) for c in clients]
            print(f'\n{len(clients)} sessions after {refusals} SERVER_BUSY refusal(s): {replicas}')
            assert len(set(replicas)) == REPLICAS
            assert all(replicas.count(r) == CAPACITY for r in set(replicas))
            # every one of them streams
            for index, client in enumerate(clients):
                await client.send_prompt(_prompt(1))
                await collect(client, Received(), frames_of(1, 2))
        finally:
            await asyncio.gather(*(c.close() for c in clients))

    run(scenario())


@pytest.mark.slow
def test_a_new_session_is_refused_server_busy_when_every_replica_is_full(url):
    async def scenario():
        clients, _ = await _open_until(url, REPLICAS * CAPACITY)
        try:
            for _ in range(3):  # whichever replica the proxy picks, it is full
                with pytest.raises(ServerError) as refused:
                    await MusicClient(url, token=TOKEN).connect()
                assert refused.value.code == ErrorCode.SERVER_BUSY and refused.value.fatal
            # the sessions already open go on
            await clients[0].send_prompt(_prompt(1))
            await collect(clients[0], Received(), frames_of(1, 2))
        finally:
            await asyncio.gather(*(c.close() for c in clients))
        # a freed slot is taken again
        async with MusicClient(url, token=TOKEN) as client:
            assert client.welcome.session_id

    run(scenario())


@pytest.mark.slow
def test_a_killed_replica_s_session_resumes_on_the_other_replica_in_order(url, wait_until):
    async def scenario():
        arrivals = []  # (monotonic arrival, frame) as the bridge hands them on
        link = ReconnectingLink(url, TOKEN, lambda f: arrivals.append((time.monotonic(), f)),
                                client_name='serve-failover')
        runner = asyncio.create_task(link.run())
        try:
            link.set_prompt(_prompt(1))
            await _until(lambda: len(arrivals) >= 8, 30, 'frames from the first replica')
            first_replica = _replica(link.welcome)
            ray.kill(ray.get_actor(first_replica, namespace='serve'), no_restart=True)
            killed_at = time.monotonic()
            await _until(lambda: link.welcome is not None and link.state.value == 'connected'
                         and _replica(link.welcome) != first_replica, 60,
                         'a session on another replica')
            second_replica = _replica(link.welcome)
            resumed_from = len(arrivals)
            await _until(lambda: len(arrivals) >= resumed_from + 6, 30,
                         'frames from the second replica')
        finally:
            await link.close()
            await asyncio.gather(runner, return_exceptions=True)
        return arrivals, killed_at, first_replica, second_replica, link.counters

    arrivals, killed_at, first, second, counters = run(scenario())
    assert first != second
    frames = [f for _, f in arrivals]
    keys = [(f.prompt_id, f.seq) for f in frames]
    # nothing out of order, nothing missing: the resumed stream continues the seq numbering
    assert keys == sorted(set(keys)) and counters['dropped_out_of_order'] == 0
    assert [f.seq for f in frames] == list(range(len(frames)))
    restarts = [i for i, f in enumerate(frames) if f.flags & protocol.Flags.FIRST]
    assert restarts[0] == 0 and len(restarts) == 2, restarts  # the start and the resume
    # how long that took is measured by bench/bench_serve.py (no timed assertions here)
    print(f'\nfailover {first} -> {second}: last frame before the kill -> first after '
          f'{failover_gap_s(arrivals, killed_at) * 1e3:.0f} ms')


async def _until(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out waiting for {what}')
        await asyncio.sleep(0.02)


def failover_gap_s(arrivals, killed_at):
    """Arrival gap between the last frame before ``killed_at`` and the first after it."""
    before = [t for t, _ in arrivals if t <= killed_at]
    after = [t for t, _ in arrivals if t > killed_at]
    return after[0] - before[-1] if before and after else float('nan')



# ---------------------------------------------------------------- the config file (no Ray)


def test_the_shipped_config_file_is_a_valid_serve_config_of_this_application():
    import yaml
    from ray.serve.schema import ServeDeploySchema

    path = serve_app.default_config_path()
    with open(path) as stream:
        schema = ServeDeploySchema(**yaml.safe_load(stream))
    (application,) = schema.applications
    assert application.import_path == 'muse_server.serve_app:build_app'
    assert [d.name for d in application.deployments] == [serve_app.DEPLOYMENT_NAME]
    http_options, args, deployment = serve_app.load_config(path)
    options = serve_app.ServeOptions(**args)
    assert options.require_token and 'token' not in str(args).lower().replace('require_token', '')
    assert deployment['autoscaling_config']['target_ongoing_requests'] <= options.capacity
    assert deployment['ray_actor_options']['num_gpus'] > 0
    built = serve_app.build_app(args)  # what `serve run/deploy` calls
    ongoing = built._bound_deployment.max_ongoing_requests
    assert ongoing == options.capacity + serve_app.REFUSAL_SLOTS


class _DeploymentConfig:
    def __init__(self, max_ongoing_requests, target=None):
        self.max_ongoing_requests = max_ongoing_requests
        self.autoscaling_config = None
        if target is not None:
            from ray.serve.config import AutoscalingConfig
            self.autoscaling_config = AutoscalingConfig(target_ongoing_requests=target)


def test_settings_that_defeat_session_admission_are_refused_by_name():
    options = serve_app.ServeOptions(capacity=4)
    serve_app._check_deployment(options, _DeploymentConfig(6, target=3))
    with pytest.raises(ValueError, match='max_ongoing_requests is 4 but capacity is 4'):
        serve_app._check_deployment(options, _DeploymentConfig(4))
    with pytest.raises(ValueError, match='target_ongoing_requests is 5; expected at most'):
        serve_app._check_deployment(options, _DeploymentConfig(6, target=5))
    with pytest.raises(ValueError, match='capacity'):
        serve_app.ServeOptions(capacity=0)
    with pytest.raises(ValueError, match='tokn'):
        serve_app.ServeOptions(tokn='secret')  # a misspelt option is not silently ignored


def test_the_serve_application_imports_nothing_of_ros():
    import subprocess
    import sys
    code = ('import sys, muse_server.serve_app; '
            'print(sorted(m for m in sys.modules if m.split(".")[0] in '
            '("rclpy", "muse_common", "muse_msgs", "rosidl_runtime_py")))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == '[]', out.stdout


def test_the_launcher_refuses_to_start_without_a_token_unless_told(monkeypatch, caplog):
    monkeypatch.delenv('MUSE_SERVER_TOKEN', raising=False)
    monkeypatch.setattr(serve_app.ray, 'init', lambda *a, **k: pytest.fail('Ray was started'))
    assert serve_app.main(['--local', '--backend', 'synth']) == 2
    assert 'MUSE_SERVER_TOKEN is not set' in caplog.text
