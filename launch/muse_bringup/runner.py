"""``muse_run``: start the whole MUSE graph where ``ros2 launch`` is absent.

Starts the same nodes as ``muse.launch.py`` (each its own process, with the same parameter
file), optionally a local music server; brings the managed nodes up in order with the
lifecycle manager (:class:`muse_bringup.lifecycle_manager.LifecycleManager`); when the replay
deactivates itself at the end of its data (or on Ctrl-C) it plays on for ``--tail-s``, brings
the graph down in reverse order, stops the processes, writes the session report from the
closed bag, and leaves the session folder: the stitched WAV, the recorded bag, the timeline
PNG and metrics.json.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from muse_common.domain import DOMAIN_ENV, DomainError, claim_domain

from muse_bringup import graph
from muse_bringup.session import (GRAPH_NODES, MAX_RESPAWNS, RESPAWN_DELAY_S, RESPAWNED_NODES,
                                  SERVER_EXECUTABLE, STOP_TIMEOUT_S, new_session_dir)

# How long a restarted node may take to offer its lifecycle services and come up [s].
RESPAWN_BRINGUP_S = 120.0
# The demo replays 12 minutes of a synthetic subject (all eight activities) in 3 minutes.
DEMO_RATE = 4.0
COLOURS = ('\033[36m', '\033[32m', '\033[35m', '\033[33m', '\033[34m', '\033[96m', '\033[92m')
RESET = '\033[0m'


def package_share(package):
    from ament_index_python.packages import get_package_share_directory
    return Path(get_package_share_directory(package))


class ManagedProcess:
    """A child process whose output is prefixed on the console and kept in a log file."""

    def __init__(self, name, argv, log_path, colour, quiet=False, env=None, pass_fds=()):
        self.name = name
        self.pass_fds = tuple(pass_fds)
        self.log_path = log_path
        self.argv = [str(a) for a in argv]
        self.env = env
        self.respawns = 0
        self.crashed_at = None     # monotonic time a crash was seen, until the respawn
        self.respawned_at = None   # monotonic time of a respawn, until the node is active
        self.stop_s = None         # how long the last stop() took
        self._quiet = quiet
        self._colour = colour if sys.stdout.isatty() else ''
        self._reset = RESET if self._colour else ''
        self._start('wb')

    def _start(self, log_mode):
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True, env={**os.environ, **(self.env or {})},
            pass_fds=self.pass_fds)
        self._pump = threading.Thread(target=self._forward_output, args=(log_mode,), daemon=True)
        self._pump.start()

    def respawn(self):
        """Start the same command again, its output appended to the same log."""
        self._pump.join(timeout=5)
        self.respawns += 1
        self.crashed_at = None
        self.respawned_at = time.monotonic()
        self._start('ab')

    def _forward_output(self, log_mode):
        with open(self.log_path, log_mode) as log:
            for line in iter(self.proc.stdout.readline, b''):
                log.write(line)
                log.flush()
                if not self._quiet:
                    text = line.decode(errors='replace').rstrip()
                    print(f'{self._colour}[{self.name}]{self._reset} {text}', flush=True)

    def running(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGINT, timeout=15.0):
        """Ask the process to stop, escalating to SIGTERM and SIGKILL; returns the exit code
        (and keeps in ``stop_s`` how long it took)."""
        began = time.monotonic()
        for signal_to_send, wait_s in ((sig, timeout), (signal.SIGTERM, 5.0),
                                       (signal.SIGKILL, 5.0)):
            if not self.running():
                break
            try:
                os.killpg(self.proc.pid, signal_to_send)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                print(f'[muse_run] {self.name} did not stop on {signal.Signals(signal_to_send).name}',
                      flush=True)
        self.proc.wait()
        self.stop_s = time.monotonic() - began
        self._pump.join(timeout=5)
        return self.proc.returncode


def wait_for_health(url, timeout_s, server):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not server.running():
            raise RuntimeError(f'the music server exited early (log: {server.log_path})')
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                if response.status == 200:
                    return json.loads(response.read() or b'{}')
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f'the music server did not become healthy at {url} in {timeout_s:.0f} s')


class GraphClient:
    """The runner's own ROS context and node, spun in a thread, for the lifecycle manager.
    Its signal handlers are off: Ctrl-C must reach the runner, not shut this context down
    before the graph has been brought down."""

    def __init__(self, namespace, names):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        from muse_bringup.lifecycle_manager import LifecycleManager
        self._rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context, args=[], signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node('muse_run', context=self.context)
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._spinner = threading.Thread(target=self._executor.spin, daemon=True)
        self._spinner.start()
        self.manager = LifecycleManager(
            self.node, namespace, names,
            log=lambda text: print(f'[muse_run] lifecycle: {text}', flush=True))

    def close(self):
        self._executor.shutdown()
        self._spinner.join(timeout=5)
        self.node.destroy_node()
        self._rclpy.try_shutdown(context=self.context)


def check_running(processes):
    """Raise RuntimeError naming the first process that exited."""
    for proc in processes:
        if not proc.running():
            raise RuntimeError(f'{proc.name} exited with code {proc.proc.returncode}; see '
                               f'{proc.log_path}')


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog='muse_run', description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--subject', help='PPG-DaLiA subject .pkl or a rosbag2 folder from '
                        'muse_dalia_to_bag; default: generate a synthetic subject')
    parser.add_argument('--synthetic-minutes', type=float, default=12.0,
                        help='length of the generated synthetic subject [min] (default 12)')
    parser.add_argument('--seed', type=int, default=7, help='seed of the synthetic subject')
    parser.add_argument('--rate', type=float, default=None,
                        help=f'replay speed (1.0 = real time; default 1.0, --demo {DEMO_RATE:g})')
    parser.add_argument('--duration-s', type=float, default=0.0,
                        help='replay only this much data [s] (0 = all)')
    parser.add_argument('--start-offset-s', type=float, default=0.0,
                        help='skip this much data at the start [s]')
    parser.add_argument('--server-url', default='',
                        help='ws:// URL of a running music server; default: start a local one')
    parser.add_argument('--token-file', default='',
                        help='file holding the server token on one line, mode 0600 (default: '
                        f'${graph.TOKEN_ENV}, or random for a local server); the token itself '
                        'is never a command-line argument')
    parser.add_argument('--domain-id', type=int, default=None,
                        help=f'ROS domain of this session\'s graph (default: ${DOMAIN_ENV} when '
                        'set, else a free one, held for the session)')
    parser.add_argument('--use-sim-time', action=argparse.BooleanOptionalAction, default=True,
                        help='run every node on the replay\'s /clock, so that every dwell and '
                        'hold is data time whatever the rate (default: on)')
    parser.add_argument('--backend', choices=graph.BACKENDS, default='synth',
                        help='backend of the local server (default synth)')
    parser.add_argument('--retarget', action='store_true',
                        help='local server: at a prompt change steer the running music even '
                             'where it cannot fork it (a transition heard after the audio '
                             'already sent, ~1-2.5 s) instead of crossfading to a new stream')
    parser.add_argument('--fork', action=argparse.BooleanOptionalAction, default=True,
                        help='local server: at a prompt change fork the running synth music '
                             'just ahead of the listener (the change heard within a beat, '
                             'no new piece; default: on)')
    parser.add_argument('--model', default='facebook/musicgen-small',
                        help='MusicGen hub id or local path for --backend musicgen')
    parser.add_argument('--style', default='chill_techno', help='style preset')
    parser.add_argument('--sink', choices=graph.SINKS, default='auto',
                        help='audio output: auto (speakers if present, else null), sounddevice, null')
    parser.add_argument('--output-dir', default='out', help='where session folders go (default out/)')
    parser.add_argument('--params-file', default=None,
                        help='parameter YAML (default: muse_bringup share/config/muse.yaml)')
    parser.add_argument('--log-level', default='info', choices=('debug', 'info', 'warn', 'error'))
    parser.add_argument('--tail-s', type=float, default=3.0,
                        help='keep playing this long after the replay ends [s]')
    parser.add_argument('--quiet', action='store_true', help='keep node output in the logs only')
    parser.add_argument('--demo', action='store_true',
                        help='the README demo: a synthetic subject replayed at '
                        f'{DEMO_RATE:g}x through a local synth server')
    args = parser.parse_args(argv)
    if args.rate is None:
        args.rate = DEMO_RATE if args.demo else 1.0
    return args


def prepare_subject(args, session):
    if args.subject:
        return Path(args.subject).expanduser().resolve()   # checked before the session began
    print(f'[muse_run] generating a synthetic PPG-DaLiA subject ({args.synthetic_minutes:g} min, '
          f'seed {args.seed})', flush=True)
    return graph.synthetic_subject(session, args.synthetic_minutes, args.seed)


def claim_session_domain(args):
    """This session's ROS domain, held until the runner exits; children inherit it."""
    lease = claim_domain(args.domain_id)
    os.environ.update(lease.env())
    how = 'free, held for this session' if lease.chosen else 'as given'
    print(f'[muse_run] ROS domain {lease.domain_id} ({how})', flush=True)
    if lease.shared_with:
        print(f'[muse_run] warning: ROS domain {lease.domain_id} is also held by another MUSE '
              f'session ({lease.shared_with}); the two graphs will hear each other',
              file=sys.stderr, flush=True)
    return lease


def run(args):
    if args.subject:  # a missing or unreadable subject fails before any session folder exists
        graph.check_subject(Path(args.subject).expanduser(), args.start_offset_s,
                            args.duration_s)
    token = graph.session_token(args.token_file)
    lease = claim_session_domain(args)
    session = new_session_dir(args.output_dir)
    session.logs.mkdir()
    subject = prepare_subject(args, session)
    options = graph.GraphOptions(
        subject=str(subject), session=session, rate=args.rate, duration_s=args.duration_s,
        start_offset_s=args.start_offset_s, server_url=args.server_url, backend=args.backend,
        model=args.model, retarget=args.retarget, fork=args.fork, style=args.style, sink=args.sink,
        log_level=args.log_level, token=token, use_sim_time=args.use_sim_time)
    options.validate()
    try:
        return run_graph(args, options, session, lease)
    finally:
        lease.release()


def run_graph(args, options, session, lease):
    params_file = Path(args.params_file) if args.params_file else \
        package_share('muse_bringup') / 'config' / 'muse.yaml'

    print(f'[muse_run] session folder: {session.root}', flush=True)
    processes = []
    colours = iter(COLOURS * 2)
    started = time.monotonic()
    interrupted = False
    error = None
    client = None
    try:
        server_url = options.server_url
        if not server_url:
            port = graph.free_port()
            server_args, server_env, server_url = graph.local_server(options, port)
            server = ManagedProcess(
                'music_server', [graph.executable(*SERVER_EXECUTABLE), *server_args],
                session.logs / 'music_server.log', next(colours), args.quiet, env=server_env)
            processes.append(server)
            health = wait_for_health(f'http://127.0.0.1:{port}/healthz', 120.0, server)
            print(f'[muse_run] local {options.backend} server ready at {server_url}: {health}',
                  flush=True)
        overrides = graph.node_parameters(options, server_url)
        nodes = []
        for package, name in GRAPH_NODES:
            argv = [graph.executable(package, name), *graph.ros_args(
                options.namespace, params_file, overrides[name], options.log_level)]
            nodes.append(ManagedProcess(
                name, argv, session.logs / f'{name}.log', next(colours), args.quiet,
                env=graph.secret_env(options) if name == 'cloud_bridge' else None,
                pass_fds=lease.fds))
        processes += nodes
        client = GraphClient(options.namespace, [name for _, name in GRAPH_NODES])
        ended = client.manager.watch_end('sensor_replay')
        client.manager.wait_for_services(120.0, alive=lambda: check_running(nodes))
        client.manager.startup()
        print('[muse_run] graph active; Ctrl-C stops it', flush=True)
        replay = next(p for p in nodes if p.name == 'sensor_replay')
        while not ended.wait(0.2):
            supervise(processes, client.manager)
            if not replay.running():
                raise RuntimeError(f'sensor_replay failed with code {replay.proc.returncode}; '
                                   f'see {replay.log_path}')
        print(f'[muse_run] replay finished; playing on for {args.tail_s:g} s', flush=True)
        tail_end = time.monotonic() + args.tail_s
        while time.monotonic() < tail_end:
            supervise(processes, client.manager)
            time.sleep(0.2)
    except KeyboardInterrupt:
        interrupted = True
        print('\n[muse_run] Ctrl-C: stopping the graph', flush=True)
    except (RuntimeError, FileNotFoundError) as exc:
        error = exc
    finally:
        if client is not None:
            client.manager.shutdown()
            client.close()
        codes = {}
        for proc in reversed(processes):
            codes[proc.name] = proc.stop(timeout=STOP_TIMEOUT_S.get(proc.name, 15.0))
        write_report(session)
    failed = {name: code for name, code in codes.items() if code not in (0, -signal.SIGINT)}
    summarise(session, time.monotonic() - started, failed, processes)
    if error is not None:
        print(f'[muse_run] error: {error}', file=sys.stderr, flush=True)
        return 1
    return 1 if failed and not interrupted else 0


def write_report(session):
    """The session report (timeline.png, metrics.json) from the closed bag and the WAV."""
    if not session.bag.exists():
        return
    from muse_bringup.report import write_report as report
    print('[muse_run] writing the session report', flush=True)
    try:
        report(session)     # summarise() prints its summary lines
    except Exception as exc:  # noqa: BLE001 - the bag and the WAV are safe; say why
        print(f'[muse_run] session report failed: {exc!r}', file=sys.stderr, flush=True)


def supervise(processes, manager):
    """Respawn a crashed node that may be (RESPAWNED_NODES) after RESPAWN_DELAY_S and bring it
    up again with the lifecycle manager; any other exit (the replay's is the caller's), one
    crash too many, or a restarted node that does not come up ends the session."""
    now = time.monotonic()
    for proc in processes:
        if proc.running() or proc.name == 'sensor_replay':
            continue
        code = proc.proc.returncode
        if proc.name not in RESPAWNED_NODES or proc.respawns >= MAX_RESPAWNS:
            raise RuntimeError(f'{proc.name} exited with code {code}; see {proc.log_path}')
        if proc.crashed_at is None:
            proc.crashed_at = now
            print(f'[muse_run] {proc.name} exited with code {code}; restarting it in '
                  f'{RESPAWN_DELAY_S:g} s ({proc.respawns + 1}/{MAX_RESPAWNS})', flush=True)
        elif now - proc.crashed_at >= RESPAWN_DELAY_S:
            proc.respawn()
            print(f'[muse_run] {proc.name} restarted (pid {proc.proc.pid})', flush=True)
    pending = {p.name: p for p in processes if p.respawned_at is not None and p.running()}
    for name in manager.revive(list(pending)):
        pending.pop(name).respawned_at = None
        print(f'[muse_run] {name} is active again', flush=True)
    for proc in pending.values():
        if now - proc.respawned_at > RESPAWN_BRINGUP_S:
            raise RuntimeError(f'{proc.name} was restarted but did not come up within '
                               f'{RESPAWN_BRINGUP_S:g} s; see {proc.log_path}')


def summarise(session, wall_s, failed, processes=()):
    print(f'[muse_run] session finished in {wall_s:.1f} s', flush=True)
    stops = ', '.join(f'{p.name} {p.stop_s:.2f} s' for p in processes if p.stop_s is not None)
    if stops:
        print(f'[muse_run] stop times after SIGINT: {stops}', flush=True)
    respawned = ', '.join(f'{p.name} x{p.respawns}' for p in processes if p.respawns)
    if respawned:
        print(f'[muse_run] restarted after a crash: {respawned}', flush=True)
    segments = sorted(session.root.glob(f'{session.wav.stem}_*{session.wav.suffix}'))
    if segments:
        print(f'[muse_run]   more audio (after a player restart): '
              f'{", ".join(str(s) for s in segments)}', flush=True)
    for label, path in (('audio', session.wav), ('timeline', session.timeline_png),
                        ('metrics', session.metrics_json), ('bag', session.bag),
                        ('logs', session.logs)):
        print(f'[muse_run]   {label:9s} {path}{"" if path.exists() else "  (missing)"}', flush=True)
    if session.metrics_json.exists():
        metrics = json.loads(session.metrics_json.read_text())
        for line in metrics.get('summary', []):
            print(f'[muse_run]   {line}', flush=True)
    for name, code in failed.items():
        print(f'[muse_run] {name} exited with code {code}', flush=True)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except (RuntimeError, ValueError, FileNotFoundError, DomainError) as exc:
        print(f'[muse_run] error: {exc}', file=sys.stderr, flush=True)
        return 1


if __name__ == '__main__':
    sys.exit(main())
