"""A hostile run against a server process over loopback (127.0.0.x only, bounded in
connections and time): authentication, malformed and oversized frames, deep JSON, messages out
of order, clients that never read, prompt floods, connection floods, slow handshakes, browser
origins. Every attack gets its coded answer (adversary.py says which), an honest listener
streams alongside without losing a frame, the server logs no traceback and keeps its memory.
The figures (and the honest listener's longest gap) are printed by bench/bench_adversarial.py.
"""

import time

import pytest

import adversary
from server_test_support import free_port, wait_for_health

RSS_GROWTH_LIMIT_KB = 64 * 1024


@pytest.fixture(scope='module')
def attacked(tmp_path_factory):
    """A server attacked once by every attack while an honest listener streams."""
    port = free_port()
    server = adversary.ServerProcess(port, tmp_path_factory.mktemp('adversarial') / 'server.log')
    try:
        wait_for_health(port, server)
        honest = adversary.HonestListener(port).start()
        wait_for_health(port, server)
        rss_before = adversary.rss_kb(server.proc.pid)
        outcomes = adversary.run_attacks(server)
        rss_after = adversary.rss_kb(server.proc.pid)
        honest.stop()
        for _ in range(150):  # the attackers' sessions end once their last frames are read
            if server.health()['sessions'] == 0:
                break
            time.sleep(0.1)
        final_health = server.health()
        exit_code = server.terminate()
        yield {'outcomes': outcomes, 'honest': honest, 'rss': (rss_before, rss_after),
               'health': final_health, 'exit_code': exit_code, 'log': server.output()}
    finally:
        server.terminate()


def test_every_attack_gets_its_coded_answer(attacked):
    outcomes = attacked['outcomes']
    table = '\n'.join(f'{"ok  " if o.ok else "FAIL"} {o.attack:45s} expected {o.expected:40s} '
                      f'observed {o.observed}' for o in outcomes)
    assert all(o.ok for o in outcomes), table


def test_an_honest_listener_streams_on_without_losing_a_frame(attacked):
    honest = attacked['honest']
    assert honest.problems == []
    assert honest.seqs_contiguous, [f.seq for _, f in honest.arrivals][:50]
    assert attacked['health']['sessions'] == 0  # the attackers' sessions all ended


def test_the_server_logged_no_traceback_and_kept_its_memory(attacked):
    log = attacked['log']
    assert 'Traceback' not in log and ' ERROR ' not in log, log[-4000:]
    assert adversary.TOKEN not in log  # nor a token
    before, after = attacked['rss']
    assert after - before < RSS_GROWTH_LIMIT_KB, (before, after)


def test_the_server_still_stops_cleanly_on_sigterm(attacked):
    assert attacked['exit_code'] == 0, attacked['log'][-4000:]
