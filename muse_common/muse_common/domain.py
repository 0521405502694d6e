"""One ROS domain per MUSE graph: a free ``ROS_DOMAIN_ID`` chosen and held for a session's life.

Two MUSE graphs on one DDS domain merge: the same node and topic names, so each hears the
other's sensors, prompts and audio. ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` only keeps
discovery on the host, it does not separate graphs on it. So every MUSE tool that starts a graph
(the runner, the tests, the launch test, the benchmarks) takes a domain of its own here: an
exclusive ``flock`` on ``<lock dir>/domain-<id>.lock`` that the kernel releases when the holder
exits, however it exits, so a crashed session never leaves a domain taken.

Plain module (no rclpy). The lock only coordinates MUSE tools: a foreign ROS program on the
same domain is not seen here, which is why the recorder, bridge and player also flag foreign
traffic (``muse_common.crosstalk``).
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

DOMAIN_ENV = 'ROS_DOMAIN_ID'
LOCK_DIR_ENV = 'MUSE_DOMAIN_LOCK_DIR'
# Domain ids whose DDS ports are valid on Linux for 120 participants each (RTPS port mapping:
# 7400 + 250 * id must stay below the ephemeral range); 0 is left to everything else.
FIRST_ID, LAST_ID = 1, 101


class DomainError(RuntimeError):
    """No domain could be claimed; the message says which and why."""


def lock_dir() -> Path:
    """Shared by every user of the host (sticky, world-writable, as /tmp), so that two users'
    graphs also take different domains."""
    path = Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / 'muse-ros-domains')
    if not path.exists():
        try:
            path.mkdir(parents=True)
            path.chmod(0o1777)
        except FileExistsError:
            pass
    return path


@dataclass
class DomainLease:
    """A claimed domain id; the lock is held until ``release()`` or the process exits."""

    domain_id: int
    chosen: bool            # True = picked free here; False = given by the user
    shared_with: str = ''   # given by the user but another MUSE session holds it: who

    _fd: int | None = None

    def env(self):
        return {DOMAIN_ENV: str(self.domain_id)}

    @property
    def fds(self):
        """Pass these to every process of the graph (``subprocess.Popen(pass_fds=...)``): the
        lock then lasts until the last of them exits, so nodes a killed runner left behind
        keep their domain from the next session."""
        return () if self._fd is None else (self._fd,)

    def release(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def _try_lock(domain_id):
    """The fd of the held lock on ``domain_id``, or None when another process holds it."""
    path = lock_dir() / f'domain-{domain_id}.lock'
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f'{os.getpid()}\n'.encode())
    return fd


def _holder(domain_id):
    try:
        pid = (lock_dir() / f'domain-{domain_id}.lock').read_text().strip()
    except OSError:
        return 'another process'
    return f'pid {pid}' if pid else 'another process'


def parse_domain_id(text, what=DOMAIN_ENV):
    try:
        value = int(str(text).strip())
    except ValueError:
        raise DomainError(f'{what} is {text!r}; expected a ROS domain id, an integer '
                          '0-232') from None
    if not 0 <= value <= 232:
        raise DomainError(f'{what} is {value}; expected a ROS domain id in 0-232')
    return value


def claim_domain(given=None, env=None) -> DomainLease:
    """The domain of one MUSE graph.

    ``given`` (``--domain-id``), else ``$ROS_DOMAIN_ID`` when set: the user's choice, used as
    is (its lock is taken when free; ``shared_with`` names the holder when it is not, and the
    caller should warn). Otherwise the lowest free id in FIRST_ID..LAST_ID, locked.
    """
    env = os.environ if env is None else env
    if given is None and env.get(DOMAIN_ENV, '').strip():
        given = parse_domain_id(env[DOMAIN_ENV])
    if given is not None:
        given = parse_domain_id(given, 'the domain id')
        fd = _try_lock(given)
        return DomainLease(given, chosen=False, _fd=fd,
                           shared_with='' if fd is not None else _holder(given))
    for domain_id in range(FIRST_ID, LAST_ID + 1):
        fd = _try_lock(domain_id)
        if fd is not None:
            return DomainLease(domain_id, chosen=True, _fd=fd)
    raise DomainError(f'every ROS domain {FIRST_ID}-{LAST_ID} is held by another MUSE session '
                      f'(locks in {lock_dir()}); set {DOMAIN_ENV} to share one on purpose')
