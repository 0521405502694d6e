"""Shared pytest fixtures for every MUSE test: an isolated DDS domain, in-process ROS
subscribers that collect messages, and nodes started as separate processes."""

import contextlib
import importlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from muse_common.domain import claim_domain

REPO_ROOT = Path(__file__).resolve().parent

# pytest's importlib import mode names muse_prompt/test/test_x.py "muse_prompt.test.test_x"
# and, to do so, registers the source folder muse_prompt/ (no __init__.py) as a stand-in
# package that hides the installed one. Importing the real packages first prevents that.
for _package in ('muse_common', 'muse_protocol', 'muse_server', 'muse_sensors', 'muse_encoder',
                 'muse_prompt', 'muse_cloud_bridge', 'muse_player', 'muse_bringup'):
    with contextlib.suppress(ImportError):
        importlib.import_module(_package)

# One DDS domain per test session, free (no other MUSE session holds it) and held until pytest
# exits, so parallel runs on one host do not hear each other; discovery kept on this host. A
# ROS_DOMAIN_ID set by the user is used as given.
DOMAIN_LEASE = claim_domain()
os.environ.update(DOMAIN_LEASE.env())
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')


def wait_until(condition, timeout, what, process=None):
    """Call ``condition()`` until it returns something true and return that; else raise
    AssertionError naming ``what``, after ``timeout`` s or as soon as ``process`` (a
    NodeProcess) exits, with its output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and process.proc.poll() is not None:
            break
        time.sleep(0.05)
    said = f'; node said:\n{process.output()}' if process is not None else ''
    raise AssertionError(f'timed out waiting for {what}{said}')


@pytest.fixture(name='wait_until')
def wait_until_fixture():
    """The ``wait_until`` helper for tests (root conftest helpers are reached as fixtures)."""
    return wait_until


class TopicCollector:
    """Subscribes to topics in this process and keeps what arrives."""

    def __init__(self, node):
        self._node = node
        self._lock = threading.Lock()
        self._messages = {}

    def subscribe(self, msg_type, topic, qos=10):
        with self._lock:
            self._messages.setdefault(topic, [])

        def keep(msg, topic=topic):
            with self._lock:
                self._messages[topic].append(msg)

        self._node.create_subscription(msg_type, topic, keep, qos)

    def messages(self, topic):
        with self._lock:
            return list(self._messages.get(topic, []))

    def wait_for(self, topic, count, timeout=20.0):
        """Wait until `count` messages arrived on `topic`; return them (possibly fewer)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.messages(topic)
            if len(got) >= count:
                return got
            time.sleep(0.02)
        return self.messages(topic)


@pytest.fixture
def ros_node():
    """An rclpy node spun by a background executor for the duration of one test."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node(f'muse_test_{os.getpid()}', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        yield node
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        spinner.join(timeout=5)


@pytest.fixture
def lifecycle(ros_node):
    """``lifecycle(path, *transitions, process=None)`` waits for the managed node at ``path``
    (e.g. '/muse/sensor_replay') to offer its lifecycle services, performs ``transitions``
    ('configure', 'activate', ...) and returns its LifecycleClient (``get_state()``)."""
    from muse_common.lifecycle import LifecycleClient
    clients = {}

    def drive(path, *transitions, process=None, timeout=60.0):
        client = clients.get(path)
        if client is None:
            client = clients[path] = LifecycleClient(ros_node, path, timeout_s=timeout)
            wait_until(lambda: client.wait_for_service(0.2), timeout,
                       f'the lifecycle services of {path}', process)
        for transition in transitions:
            said = f'; node said:\n{process.output()}' if process is not None else ''
            assert client.change_state(transition), f'{path} refused {transition}{said}'
        return client

    return drive


@pytest.fixture
def collector(ros_node):
    return TopicCollector(ros_node)


class NodeProcess:
    """A command started as its own process, its output kept in a log file."""

    def __init__(self, args, log_path, env=None, cwd=None):
        self.args = [str(a) for a in args]
        self.log_path = Path(log_path)
        self._log = open(self.log_path, 'wb')
        self.proc = subprocess.Popen(
            self.args, stdout=self._log, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})}, cwd=cwd or REPO_ROOT, start_new_session=True)

    def output(self):
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors='replace')

    def wait(self, timeout):
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout=10.0):
        """SIGINT (Ctrl-C), then SIGKILL if it does not exit; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def spawn(tmp_path):
    """spawn([argv...]) starts a process; all are stopped at the end of the test."""
    started = []

    def start(args, name=None, env=None, cwd=None):
        name = name or Path(str(args[1] if args[0] == sys.executable else args[0])).name
        proc = NodeProcess(args, tmp_path / f'{name}-{len(started)}.log', env=env, cwd=cwd)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
