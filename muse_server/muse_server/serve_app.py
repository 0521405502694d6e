"""The music server on Ray Serve: the same wire protocol and backends, served by as many
replicas as the cluster has GPUs for, behind Serve's HTTP/WebSocket proxy.

Each replica is one :class:`~muse_server.server.MusicServer` (its own backend, its own
sessions) fed by Serve's proxy instead of its own listening socket; a session lives on the
replica that accepted it. A replica admits ``capacity`` sessions and refuses more with the
protocol's ``SERVER_BUSY``; Serve routes at most ``max_ongoing_requests = capacity +
REFUSAL_SLOTS`` connections to it, so a refusal reaches the client as that coded error (the
bridge backs off and lands elsewhere) instead of queueing in the proxy. Autoscaling counts
sessions (ongoing requests), not CPU.

    serve run muse_server/config/serve.yaml      # on a cluster: serve deploy serve.yaml
    muse_serve --local                           # one machine, one command

No ROS here: nothing imports rclpy.
"""

import argparse
import asyncio
import copy
import logging
import signal
import sys
import time
from pathlib import Path

import ray
import yaml
from fastapi import FastAPI, WebSocket
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from muse_protocol import protocol
from muse_protocol.tokens import TOKEN_ENV, resolve_token
from muse_server.asgi_websocket import AsgiWebSocket
from muse_server.backends.base import create_backend
from muse_server.server import HEALTH_PATH, MusicServer, ServerConfig

logger = logging.getLogger('muse_music_server')

DEPLOYMENT_NAME = 'MusicReplica'
APP_NAME = 'muse'
# Connections Serve may route to a full replica beyond its sessions, so that it can answer
# them SERVER_BUSY (they last one handshake) rather than the proxy queueing them.
REFUSAL_SLOTS = 2
_SERVER_DEFAULTS = ServerConfig()


class ServeOptions(BaseModel):
    """The application's ``args`` in the Serve config file (one set for every replica)."""

    model_config = ConfigDict(extra='forbid')

    backend: str = Field('synth', description='synth, musicgen or module:attribute')
    backend_options: dict = Field(default_factory=dict,
                                  description='keyword options of the backend (model, device, ...)')
    capacity: int = Field(_SERVER_DEFAULTS.max_sessions, ge=1,
                          description='sessions per replica; more are refused SERVER_BUSY')
    require_token: bool = Field(True, description=f'refuse to start a replica without ${TOKEN_ENV}')
    fragment_s: float = _SERVER_DEFAULTS.fragment_s
    max_ahead_s: float = _SERVER_DEFAULTS.max_ahead_s
    context_s: float = _SERVER_DEFAULTS.context_s
    max_frame_bytes: int = _SERVER_DEFAULTS.max_frame_bytes
    hello_timeout_s: float = _SERVER_DEFAULTS.hello_timeout_s
    shutdown_grace_s: float = _SERVER_DEFAULTS.shutdown_grace_s


def max_ongoing_requests(capacity: int) -> int:
    return capacity + REFUSAL_SLOTS


def _check_deployment(options: ServeOptions, deployment_config):
    """Serve settings that would defeat session admission are refused with the reason."""
    ongoing = deployment_config.max_ongoing_requests
    if ongoing <= options.capacity:
        raise ValueError(
            f'max_ongoing_requests is {ongoing} but capacity is {options.capacity}; expected '
            f'more than capacity (leave it unset: it is capacity + {REFUSAL_SLOTS}), else '
            'sessions beyond capacity wait in the proxy instead of being refused SERVER_BUSY')
    autoscaling = deployment_config.autoscaling_config
    if autoscaling is not None and autoscaling.get_target_ongoing_requests() > options.capacity:
        raise ValueError(
            f'autoscaling_config.target_ongoing_requests is '
            f'{autoscaling.get_target_ongoing_requests():g}; expected at most capacity '
            f'({options.capacity} sessions per replica)')


ingress = FastAPI(title='muse_music_server', docs_url=None, redoc_url=None, openapi_url=None)


@serve.deployment(name=DEPLOYMENT_NAME, max_ongoing_requests=max_ongoing_requests(
    _SERVER_DEFAULTS.max_sessions), graceful_shutdown_timeout_s=30.0)
@serve.ingress(ingress)
class MusicReplica:
    """One replica: a MusicServer whose connections come from Serve's proxy."""

    def __init__(self, options: dict):
        logging.basicConfig(level=logging.INFO,
                            format='%(asctime)s %(levelname)s %(name)s: %(message)s')
        opts = ServeOptions(**options)
        context = serve.get_replica_context()
        _check_deployment(opts, context._deployment_config)
        # The replica's Ray actor name: it says which replica a welcome came from.
        self.replica = context.replica_id.to_full_id_str()
        token = resolve_token(None, None)  # $MUSE_SERVER_TOKEN of this replica's node
        if token is None and opts.require_token:
            raise ValueError(f'{TOKEN_ENV} is not set on this node and require_token is true: '
                             f'export {TOKEN_ENV} before `ray start` on every node (never put '
                             'it in the config file), or set require_token: false')
        config = ServerConfig(
            token=token, max_sessions=opts.capacity, max_ahead_s=opts.max_ahead_s,
            fragment_s=opts.fragment_s, context_s=opts.context_s,
            max_frame_bytes=opts.max_frame_bytes, hello_timeout_s=opts.hello_timeout_s,
            shutdown_grace_s=opts.shutdown_grace_s,
            server_name=f'muse_music_server@{self.replica}')
        backend = create_backend(opts.backend, **{'fragment_s': opts.fragment_s,
                                                  **opts.backend_options})
        self.server = MusicServer(backend, config)
        logger.info('replica %s: backend %s, %d sessions, auth %s', self.replica, backend.name,
                    opts.capacity, 'on' if token else 'OFF')

    @ingress.get(HEALTH_PATH)
    def healthz(self):
        """The health of the replica that answered (one of them)."""
        return JSONResponse({**self.server.health(), 'replica': self.replica},
                            status_code=503 if self.server.stopping else 200)

    @ingress.websocket('/')
    async def session(self, websocket: WebSocket):
        await websocket.accept()
        await self.server.handle_connection(AsgiWebSocket(websocket))

    async def __del__(self):
        """Serve stops the replica (scale-down, redeploy, shutdown) after waiting up to
        graceful_shutdown_timeout_s for its requests, i.e. sessions, to end. Sessions still
        open get the protocol's shutdown notice and a 1001 close here, unless that budget is
        spent and the replica is killed first; either way their clients reconnect to another
        replica."""
        await self.server.shutdown('replica stopping')
        await asyncio.gather(*(s.ws.close(1001, 'replica stopping')
                               for s in list(self.server.sessions.values())),
                             return_exceptions=True)


def live_replicas(app_name: str = APP_NAME) -> set[str]:
    """Actor names of the application's live replicas (what welcomes and /healthz name), from
    a Ray driver connected to the cluster."""
    prefix = f'SERVE_REPLICA::{app_name}#{DEPLOYMENT_NAME}#'
    return {a['name'] for a in ray.util.list_named_actors(all_namespaces=True)
            if a['namespace'] == 'serve' and a['name'].startswith(prefix)}


def running_replicas(app_name: str = APP_NAME) -> int:
    """Replicas Serve's controller counts as running (it may not yet know of a dead one)."""
    status = serve.status().applications.get(app_name)
    if status is None or DEPLOYMENT_NAME not in status.deployments:
        return 0
    return status.deployments[DEPLOYMENT_NAME].replica_states.get('RUNNING', 0)


def make_app(args: dict, deployment_options: dict | None = None):
    """The Serve application for ``args`` (:class:`ServeOptions`), with Serve deployment
    options (num_replicas, autoscaling_config, ray_actor_options, ...) on top."""
    opts = ServeOptions(**args)
    settings = {'max_ongoing_requests': max_ongoing_requests(opts.capacity),
                **(deployment_options or {})}
    return MusicReplica.options(**settings).bind(opts.model_dump())


def build_app(args: dict):
    """The application builder named by the config file's ``import_path``."""
    return make_app(args)


# ---------------------------------------------------------------- one command, one machine


def default_config_path() -> Path:
    """The installed serve.yaml (share/muse_server/config), else the source tree's."""
    here = Path(__file__)
    for candidate in (here.parents[4] / 'share' / 'muse_server' / 'config' / 'serve.yaml',
                      here.parents[1] / 'config' / 'serve.yaml'):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError('no serve.yaml found beside the package; give --config')


def load_config(path: Path) -> tuple[dict, dict, dict]:
    """-> (http_options, application args, deployment options) of the config file's
    muse application."""
    with open(path) as stream:
        config = yaml.safe_load(stream)
    apps = [a for a in config.get('applications', []) if a.get('name') == APP_NAME]
    if len(apps) != 1:
        raise ValueError(f'{path}: expected one application named {APP_NAME!r}, found '
                         f'{[a.get("name") for a in config.get("applications", [])]}')
    app = apps[0]
    deployments = {d.get('name'): d for d in app.get('deployments', [])}
    unknown = set(deployments) - {DEPLOYMENT_NAME}
    if unknown:
        raise ValueError(f'{path}: unknown deployment(s) {sorted(unknown)}; expected '
                         f'{DEPLOYMENT_NAME!r}')
    options = copy.deepcopy(deployments.get(DEPLOYMENT_NAME, {}))
    options.pop('name', None)
    return dict(config.get('http_options', {})), dict(app.get('args', {})), options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='muse_serve', description='Run the music server application of a Serve config '
        'file on a local Ray instance (on a cluster use `serve deploy CONFIG`).',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--config', type=Path, default=None,
                        help='Serve config file (default: the installed serve.yaml)')
    parser.add_argument('--local', action='store_true',
                        help='start a Ray instance here instead of joining one (address=auto)')
    parser.add_argument('--num-cpus', type=int, default=None, help='--local: CPUs Ray may use')
    parser.add_argument('--host', default=None, help='proxy address (default: the file\'s)')
    parser.add_argument('--port', type=int, default=None, help='proxy port (default: the file\'s)')
    parser.add_argument('--backend', default=None,
                        help='another backend than the file\'s (drops the file\'s backend_options)')
    parser.add_argument('--replicas', type=int, default=None,
                        help='fixed number of replicas (overrides the file\'s autoscaling)')
    parser.add_argument('--capacity', type=int, default=None, help='sessions per replica')
    parser.add_argument('--no-auth', action='store_true', help='replicas accept anyone '
                        f'(else ${TOKEN_ENV} must be set)')
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    try:
        http_options, app_args, deployment = load_config(args.config or default_config_path())
        if args.host is not None:
            http_options['host'] = args.host
        if args.port is not None:
            http_options['port'] = args.port
        if args.backend is not None and args.backend != app_args.get('backend'):
            app_args['backend'] = args.backend  # the file's options were for its backend
            app_args['backend_options'] = {}
        if args.capacity is not None:
            app_args['capacity'] = args.capacity
        if args.no_auth:
            app_args['require_token'] = False
        if args.replicas is not None:
            deployment.pop('autoscaling_config', None)
            deployment['num_replicas'] = args.replicas
        if app_args.get('require_token', True) and resolve_token(None, None) is None:
            raise ValueError(f'${TOKEN_ENV} is not set (give --no-auth to accept anyone)')
        ray.init(address=None if args.local else 'auto', num_cpus=args.num_cpus,
                 include_dashboard=False)
    except (ValueError, FileNotFoundError, ConnectionError) as exc:
        logger.error('%s', exc)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)  # stops like Ctrl-C: Serve, then Ray
    try:
        actor_options = deployment.setdefault('ray_actor_options', {})
        if actor_options.get('num_gpus', 0) > ray.cluster_resources().get('GPU', 0):
            logger.warning('this Ray instance has no GPU for num_gpus=%s: replicas run without one',
                           actor_options['num_gpus'])
            actor_options['num_gpus'] = 0
        serve.start(http_options=http_options)
        serve.run(make_app(app_args, deployment), name=APP_NAME, route_prefix='/')
        logger.info('serving on ws://%s:%s/ (Ctrl-C stops)', http_options.get('host', '127.0.0.1'),
                    http_options.get('port', 8000))
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        logger.info('stopping')
    except (ValueError, RuntimeError) as exc:
        logger.error('%s', exc)
        return 2
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == '__main__':
    sys.exit(main())
