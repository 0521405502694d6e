"""The connection gate alone, on a fake clock: pre-auth caps per address and in all, and the
lockout of an address with too many failed hellos until they age out."""

from muse_protocol.protocol import ErrorCode
from muse_server.admission import AdmissionLimits, ConnectionGate


def test_pending_connections_are_capped_per_address_and_in_all():
    gate = ConnectionGate(AdmissionLimits(max_pending=3, max_pending_per_address=2))
    with gate.handshaking('a'), gate.handshaking('a'):
        assert gate.refusal('a')[0] is ErrorCode.SERVER_BUSY
        assert gate.refusal('b') is None
        with gate.handshaking('b'):
            assert gate.refusal('c')[0] is ErrorCode.SERVER_BUSY  # 3 in all
        assert gate.pending == 2
    assert gate.pending == 0 and gate.refusal('a') is None
    assert gate.refused['SERVER_BUSY'] == 2


def test_failed_hellos_lock_an_address_out_until_they_age_out():
    now = [0.0]
    gate = ConnectionGate(AdmissionLimits(max_failed_hellos=3, failed_hello_window_s=60.0),
                          clock=lambda: now[0])
    for second in range(3):
        assert gate.refusal('a') is None
        now[0] = float(second)
        gate.failed('a')
    code, message = gate.refusal('a')
    assert code is ErrorCode.RATE_LIMITED and 'retry in 58 s' in message  # the first failure at 0 s, now 2 s
    assert gate.refusal('b') is None  # other addresses are not affected
    now[0] = 60.5  # the first failure is older than the window
    assert gate.refusal('a') is None
    now[0] = 1000.0
    assert gate.refusal('a') is None and not gate._failures  # quiet addresses are forgotten
