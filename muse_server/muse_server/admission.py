"""Who may open a session: limits on connections that have not authenticated yet, per address
and in all, and a lockout of addresses that keep failing the handshake. Only authenticated
sessions count against the server's max_sessions, so idle sockets cannot lock clients out.
"""

from __future__ import annotations

import collections
import contextlib
import time
from dataclasses import dataclass

from muse_protocol.protocol import ErrorCode

MAX_TRACKED_ADDRESSES = 4096  # addresses with recent failed hellos remembered at most


@dataclass(frozen=True)
class AdmissionLimits:
    max_pending: int = 16              # connections before their hello, in all
    max_pending_per_address: int = 4   # ... from one address
    max_failed_hellos: int = 10        # failed handshakes of an address within the window
    failed_hello_window_s: float = 60.0  # ... lock it out until they age out of the window


class ConnectionGate:
    """Counts connections in their handshake and failed handshakes, by remote address."""

    def __init__(self, limits: AdmissionLimits = AdmissionLimits(), clock=time.monotonic):
        self.limits = limits
        self._clock = clock
        self._pending = collections.Counter()
        self._failures: dict[str, collections.deque] = {}
        self.refused = collections.Counter()  # by ErrorCode name, for /healthz

    @property
    def pending(self) -> int:
        return sum(self._pending.values())

    def refusal(self, address: str):
        """-> None if a connection from ``address`` may start its handshake, else the
        (code, message) it is refused with."""
        failures = self._recent_failures(address)
        if len(failures) >= self.limits.max_failed_hellos:
            retry_s = failures[0] + self.limits.failed_hello_window_s - self._clock()
            return self._refuse(ErrorCode.RATE_LIMITED,
                                f'{len(failures)} failed hellos from this address; retry in '
                                f'{max(retry_s, 0.0):.0f} s')
        if self._pending[address] >= self.limits.max_pending_per_address:
            return self._refuse(ErrorCode.SERVER_BUSY,
                                f'{self._pending[address]} connections from this address are '
                                'already in their handshake; retry later')
        if self.pending >= self.limits.max_pending:
            return self._refuse(ErrorCode.SERVER_BUSY,
                                f'{self.pending} connections are already in their handshake; '
                                'retry later')
        return None

    @contextlib.contextmanager
    def handshaking(self, address: str):
        """Count a connection from ``address`` as pending while in this block."""
        self._pending[address] += 1
        try:
            yield
        finally:
            self._pending[address] -= 1
            if not self._pending[address]:
                del self._pending[address]

    def failed(self, address: str):
        """Record a failed handshake (bad token, malformed or missing hello) of ``address``."""
        self._recent_failures(address)  # ages out old ones
        if address not in self._failures and len(self._failures) >= MAX_TRACKED_ADDRESSES:
            self._failures.pop(next(iter(self._failures)))  # the longest-tracked address
        self._failures.setdefault(address, collections.deque()).append(self._clock())

    def _recent_failures(self, address: str):
        failures = self._failures.get(address)
        if failures is None:
            return ()
        cutoff = self._clock() - self.limits.failed_hello_window_s
        while failures and failures[0] < cutoff:
            failures.popleft()
        if not failures:  # forget quiet addresses, so the table stays small
            del self._failures[address]
        return failures

    def _refuse(self, code: ErrorCode, message: str):
        self.refused[code.name] += 1
        return code, message
