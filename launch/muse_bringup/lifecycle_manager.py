"""``muse_lifecycle_manager``: brings the MUSE graph up in order and down in reverse.

Like Nav2's nav2_lifecycle_manager, a thin client of the standard lifecycle services
(``<node>/change_state``, ``<node>/get_state``): it waits for the nodes' services, configures
and activates them in ``node_names`` order (:mod:`muse_bringup.lifecycle_plan`), and, when the
node named ``end_with`` deactivates itself (the replay does at the end of its data; seen on its
``transition_event`` topic) or on Ctrl-C, waits ``tail_s`` and brings everything down in
reverse order. The launch file runs it as a node; the runner uses :class:`LifecycleManager`
in its own process. No node sleeps or polls for its peers.
"""

import signal
import sys
import threading
import time

import rclpy
from lifecycle_msgs.msg import TransitionEvent
from muse_common import params
from muse_common.lifecycle import LifecycleClient
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions

from muse_bringup import lifecycle_plan
from muse_bringup.session import GRAPH_NODES, RESPAWNED_NODES


# Endpoints every node has, configured or not (not the ones configure makes).
_STANDARD_TOPICS = ('/rosout', '/parameter_events', '/transition_event', '/diagnostics')


class LifecycleError(RuntimeError):
    """A managed node did not come up (or could not be reached); the message names it."""


class LifecycleManager:
    """Moves the nodes ``names`` (in namespace ``namespace``) through their lifecycle, using
    ``node`` (spun by an executor in another thread) for the service calls."""

    def __init__(self, node, namespace, names, transition_timeout_s=60.0, log=None):
        self.names = list(names)
        prefix = '/' + namespace.strip('/') if namespace.strip('/') else ''
        self._paths = {name: f'{prefix}/{name}' for name in self.names}
        self._clients = {name: LifecycleClient(node, path, transition_timeout_s)
                         for name, path in self._paths.items()}
        self.states = {name: 'unknown' for name in self.names}
        self._node = node
        self._log = log or (lambda text: node.get_logger().info(text))
        self._probes = {}

    def wait_for_services(self, timeout_s, alive=lambda: None):
        """Wait until every node offers its lifecycle services. ``alive()`` may raise to stop
        early (a node process that died)."""
        deadline = time.monotonic() + timeout_s
        waiting = list(self.names)
        while waiting:
            alive()
            if self._clients[waiting[0]].wait_for_service(0.2):
                waiting.pop(0)
            elif time.monotonic() > deadline:
                raise LifecycleError(f'no lifecycle services from {waiting} within '
                                     f'{timeout_s:.0f} s')

    def _run(self, steps, strict):
        for name, transition in steps:
            try:
                done = self._clients[name].change_state(transition)
            except Exception as exc:  # noqa: BLE001 - a dead node answers nothing
                done, why = False, f'{exc}'
            else:
                why = 'the node refused it (see its log)'
            if done:
                self.states[name] = lifecycle_plan.state_after(transition)
                self._log(f'{name}: {transition} -> {self.states[name]}')
            elif strict:
                raise LifecycleError(f'{name} did not {transition}: {why}')
            else:
                self._log(f'{name}: {transition} failed ({why}); going on')

    def startup(self, discovery_timeout_s=30.0):
        """Configure every node, wait until the endpoints they made are discovered, then
        activate every node, in order."""
        steps = lifecycle_plan.bringup_steps(self.names)
        configure = [step for step in steps if step[1] == 'configure']
        self._run(configure, strict=True)
        self.wait_for_endpoints(discovery_timeout_s)
        self._run([step for step in steps if step[1] != 'configure'], strict=True)

    def wait_for_endpoints(self, timeout_s):
        """Wait until this node's graph shows every managed node's data topics (made in
        configure; discovery is asynchronous): a condition, not a fixed delay. Gives up after
        ``timeout_s`` and says which nodes it did not see."""
        deadline = time.monotonic() + timeout_s
        while True:
            missing = [name for name in self.names if not self._data_endpoints(name)]
            if not missing:
                return
            if time.monotonic() > deadline:
                self._log(f'endpoints of {missing} not discovered in {timeout_s:g} s; going on')
                return
            time.sleep(0.05)

    def _data_endpoints(self, name):
        path = self._paths[name]
        node_name, namespace = path.rsplit('/', 1)[1], path.rsplit('/', 1)[0] or '/'
        try:
            endpoints = (self._node.get_publisher_names_and_types_by_node(node_name, namespace)
                         + self._node.get_subscriber_names_and_types_by_node(node_name, namespace))
        except Exception:  # noqa: BLE001 - the node is not in the graph yet
            return []
        return [topic for topic, _ in endpoints if not topic.endswith(_STANDARD_TOPICS)]

    def shutdown(self):
        """Deactivate, clean up and shut down every node that is up, in reverse order; a node
        that cannot be reached is skipped."""
        for name, client in self._clients.items():
            try:
                self.states[name] = client.get_state()
            except Exception:  # noqa: BLE001 - gone: nothing to bring down
                self.states[name] = 'unknown'
        self._run(lifecycle_plan.teardown_steps(self.names, self.states), strict=False)

    def revive(self, names, probe_timeout_s=2.0):
        """Configure and activate those of ``names`` that answer and are unconfigured: a node
        process started again after a crash (respawn). Returns the names brought up; a node
        that does not answer within ``probe_timeout_s`` (still dead, or not up yet, or only a
        stale discovery entry of the dead one) is left for the next call."""
        revived = []
        for name in names:
            probe = self._probes.get(name)
            if probe is None:
                probe = self._probes[name] = LifecycleClient(self._node, self._paths[name],
                                                             probe_timeout_s)
            try:
                if not probe.wait_for_service(0.0) or \
                        probe.get_state() != lifecycle_plan.UNCONFIGURED:
                    continue
            except Exception:  # noqa: BLE001 - no answer yet: try again on the next call
                continue
            self._run(lifecycle_plan.bringup_steps([name]), strict=True)
            revived.append(name)
        return revived

    def watch_end(self, name):
        """An Event set when node ``name`` goes from active to inactive (on its own, at the end
        of its work, or by anyone's request)."""
        ended = threading.Event()

        def on_transition(event):
            # Events name the transition states too: active -> deactivating -> inactive.
            if event.start_state.label == 'deactivating' and event.goal_state.label == 'inactive':
                ended.set()

        self._node.create_subscription(TransitionEvent, f'{self._paths[name]}/transition_event',
                                       on_transition, 10)
        return ended


class ManagerNode:
    """The ``muse_lifecycle_manager`` executable: parameters, then startup, watch, shutdown."""

    def __init__(self):
        self.node = rclpy.create_node('lifecycle_manager')
        names = params.declare(self.node, 'node_names', [name for _, name in GRAPH_NODES],
                               'Managed nodes in start order (brought down in reverse).',
                               read_only=True)
        self.end_with = params.declare(
            self.node, 'end_with', 'sensor_replay', 'When this node deactivates itself, bring '
            'the graph down and exit (empty: only on Ctrl-C).', read_only=True)
        self.tail_s = params.declare(self.node, 'tail_s', 3.0, 'Keep the graph up this long '
                                     'after end_with deactivated [s].', read_only=True,
                                     min_value=0.0, max_value=3600.0)
        self.startup_timeout_s = params.declare(
            self.node, 'startup_timeout_s', 120.0, 'How long to wait for the nodes\' lifecycle '
            'services [s].', read_only=True, min_value=1.0, max_value=3600.0)
        namespace = self.node.get_namespace()
        self.manager = LifecycleManager(self.node, namespace, names)

    def run(self):
        ended = self.manager.watch_end(self.end_with) if self.end_with else threading.Event()
        log = self.node.get_logger()
        try:
            self.manager.wait_for_services(self.startup_timeout_s)
            self.manager.startup()
            log.info('graph active')
            while not ended.wait(0.5):
                # launch respawns a crashed RESPAWNED_NODES process unconfigured: bring it up.
                self.manager.revive([n for n in RESPAWNED_NODES if n in self.manager.names])
            log.info(f'{self.end_with} finished; bringing the graph down in {self.tail_s:g} s')
            time.sleep(self.tail_s)
            return 0
        except LifecycleError as exc:
            log.error(str(exc))
            return 1
        except KeyboardInterrupt:
            log.info('Ctrl-C: bringing the graph down')
            return 0
        finally:
            self.manager.shutdown()


def main(args=None):
    # Ctrl-C must not shut the ROS context down before the graph is brought down: handle
    # SIGINT/SIGTERM as KeyboardInterrupt in the main thread instead.
    rclpy.init(args=args if args is not None else sys.argv,
               signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    manager = ManagerNode()
    executor = SingleThreadedExecutor()
    executor.add_node(manager.node)
    spinner = threading.Thread(target=_spin, args=(executor,), daemon=True)
    spinner.start()
    try:
        return manager.run()
    finally:
        executor.shutdown()
        spinner.join(timeout=5.0)
        manager.node.destroy_node()
        rclpy.try_shutdown()


def _spin(executor):
    try:
        executor.spin()
    except ExternalShutdownException:
        pass


if __name__ == '__main__':
    sys.exit(main())
