"""What the MUSE graph is started with: per-node parameter overrides and the server command.

The launch file (``muse.launch.py``) and the runner (``muse_run``) both build their processes
from these functions, so the two ways of starting MUSE cannot drift apart. Everything else
comes from the one parameter file, ``config/muse.yaml``.
"""

import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path

from muse_common.token_file import check_private
from muse_protocol.tokens import TOKEN_ENV, resolve_token

from muse_bringup.session import NAMESPACE, SessionPaths

BACKENDS = ('synth', 'musicgen')
SINKS = ('auto', 'sounddevice', 'null')


@dataclass
class GraphOptions:
    """Everything a user chooses when starting a session (launch arguments / runner flags)."""

    subject: str                      # PPG-DaLiA .pkl or rosbag2 folder to replay
    session: SessionPaths             # where outputs go
    rate: float = 1.0                 # replay speed, 1.0 = real time
    duration_s: float = 0.0           # replay only this much data (0 = all)
    start_offset_s: float = 0.0       # skip this much data at the start
    server_url: str = ''              # '' = start a local server
    # Travels only in the environment of the server and bridge processes (secret_env), never
    # as a parameter or an argument.
    token: str = field(default_factory=lambda: secrets.token_urlsafe(16), repr=False)
    token_file: str = ''              # the bridge reads the token here instead (mode 0600)
    use_sim_time: bool = True         # every node on the replay's /clock (data time)
    backend: str = 'synth'
    model: str = 'facebook/musicgen-small'
    retarget: bool = False            # local server steers streams at prompt changes
    fork: bool = True                 # ... by forking them where it can (--no-fork if not)
    style: str = 'chill_techno'
    sink: str = 'auto'
    log_level: str = 'info'
    namespace: str = NAMESPACE

    def validate(self):
        """Cheap checks of the choices; the subject's content is checked by check_subject,
        before the session folder is made."""
        if not Path(self.subject).exists():
            raise ValueError(f'subject {self.subject!r} does not exist (expected a PPG-DaLiA '
                             '.pkl file or a rosbag2 folder written by muse_dalia_to_bag)')
        if not self.rate > 0:
            raise ValueError(f'rate must be > 0, got {self.rate}')
        if self.backend not in BACKENDS:
            raise ValueError(f'backend {self.backend!r} is not one of {BACKENDS}')
        if self.sink not in SINKS:
            raise ValueError(f'sink {self.sink!r} is not one of {SINKS}')
        if self.server_url and not self.server_url.startswith(('ws://', 'wss://')):
            raise ValueError(f'server_url {self.server_url!r} must start with ws:// or wss://')


def session_token(token_file=''):
    """The token the server and the bridge share: the first line of ``token_file`` (which
    must be readable by its owner only), else ``$MUSE_SERVER_TOKEN`` (the bridge's and server's
    own rule), else a random one (good for a local server only)."""
    check_private(token_file)
    return resolve_token(None, token_file or None) or secrets.token_urlsafe(16)


def secret_env(options):
    """The environment that carries the token to the server and the bridge processes."""
    return {TOKEN_ENV: options.token}


def check_subject(subject, start_offset_s=0.0, duration_s=0.0):
    """Raise ValueError naming ``subject`` unless the replay can play it (before any session
    folder is made): an existing PPG-DaLiA pickle or muse_dalia_to_bag folder holding the
    asked span. The replay node applies the same rules (muse_sensors.replay)."""
    from muse_sensors import bag, dalia
    from muse_sensors.replay import replay_span
    path = Path(subject)
    if not str(subject) or not path.exists():
        raise ValueError(f'subject {str(subject)!r} does not exist (expected a PPG-DaLiA .pkl '
                         'file or a rosbag2 folder written by muse_dalia_to_bag)')
    try:
        if path.is_dir():
            span_s = bag.bag_info(path).span_s
        else:
            span_s = dalia.load_subject(path).duration_s
        replay_span(span_s, start_offset_s, duration_s, path)
    except (ValueError, OSError) as exc:   # DaliaFormatError, BagFormatError: ValueErrors
        said = str(exc)
        raise ValueError(said if str(path) in said else f'subject {path}: {said}') from None


def synthetic_subject(session, minutes, seed):
    """Generate the synthetic PPG-DaLiA subject (S1) replayed when the user names none."""
    from muse_sensors.synthetic import write_subject
    return write_subject(session.subject_dir, 1, minutes, seed)


def executable(package, name):
    """The installed executable, where ``ros2 run`` would find it (lib/<package>/<name>)."""
    from ament_index_python.packages import get_package_prefix
    path = Path(get_package_prefix(package)) / 'lib' / package / name
    if not path.exists():
        raise FileNotFoundError(f'{package}/{name} is not installed at {path}; run ./muse.sh setup')
    return path


def free_port(host='127.0.0.1'):
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def local_server(options, port):
    """A local music server: (argv after the executable, extra environment, the URL the
    bridge uses). The token travels in the environment, not on the command line."""
    args = ['--host', '127.0.0.1', '--port', str(port), '--backend', options.backend]
    if options.backend == 'musicgen':
        args += ['--model', options.model]
    if options.retarget:
        args.append('--retarget')
    if not options.fork:
        args.append('--no-fork')
    return args, secret_env(options), f'ws://127.0.0.1:{port}'


def node_parameters(options, server_url):
    """Per-node parameter overrides on top of config/muse.yaml."""
    session = options.session
    overrides = {
        'session_recorder': {
            'output_dir': str(session.root),
        },
        'audio_player': {
            'record_path': str(session.wav),
            'sink': options.sink,
        },
        'cloud_bridge': {
            'server_url': server_url,
            'token_file': options.token_file,
        },
        'prompt_builder': {
            'style': options.style,
        },
        'activity_encoder': {},
        'sensor_replay': {
            'source': str(options.subject),
            'rate': float(options.rate),
            'duration_s': float(options.duration_s),
            'start_offset_s': float(options.start_offset_s),
            # With use_sim_time the replay is the graph's clock (data time).
            'publish_clock': bool(options.use_sim_time),
        },
    }
    for values in overrides.values():
        values['use_sim_time'] = bool(options.use_sim_time)
    return overrides


def ros_args(namespace, params_file, overrides, log_level):
    """``--ros-args`` for one node: namespace, the YAML, then overrides, then log level."""
    args = ['--ros-args', '-r', f'__ns:=/{namespace.strip("/")}', '--params-file',
            str(params_file)]
    for name, value in overrides.items():
        args += ['-p', f'{name}:={_param_literal(value)}']
    return args + ['--log-level', log_level]


def _param_literal(value):
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, str):
        # Quote strings so that YAML does not turn e.g. "1.0" or "on" into another type.
        return "'" + value.replace("'", "''") + "'"
    return repr(value)
